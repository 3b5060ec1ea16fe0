"""Read what a video is (duration, rate, size, audio) and the true time of every frame.

The frame table comes from demuxing every video packet (no decoding): presentation timestamps, sorted,
relative to the first frame. Every later timestamp the project reports is read from this table.
Probing also decides, once and clearly, why a file cannot be used (see errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from v2t_foley.foley_core.video.errors import (
    CorruptVideoError,
    NotAVideoError,
    NoVideoStreamError,
    ZeroDurationError,
)

# Leading bytes of containers FFmpeg reads; a file that starts like one of these but fails to open is
# a damaged video, not "not a video".
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "MP4/MOV"),
    (4, b"moov", "MP4/MOV"),
    (4, b"mdat", "MP4/MOV"),
    (4, b"free", "MP4/MOV"),
    (4, b"wide", "MP4/MOV"),
    (0, b"RIFF", "AVI"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"OggS", "Ogg"),
    (0, b"FLV", "FLV"),
    (0, b"\x00\x00\x01\xba", "MPEG-PS"),
    (0, b"\x47", "MPEG-TS"),
)
_IMAGE_FORMATS = ("image2", "_pipe")


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video found. Times are seconds from the first video frame."""

    duration: float  # end of the last frame: last frame time + one frame period
    fps: float  # average frame rate of the video stream
    frame_count: int  # frames in the stream (counted, not the header's claim)
    width: int  # coded width in pixels
    height: int  # coded height in pixels
    has_audio: bool  # the file has at least one audio stream
    codec: str  # video codec name, e.g. "h264"
    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    start_time: float  # presentation time of the first video frame in the file's own clock


def _container_kind(path: Path) -> str | None:
    with open(path, "rb") as handle:
        head = handle.read(16)
    for offset, magic, kind in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


def probe(path: str | Path, uri: str | None = None) -> tuple[VideoInfo, np.ndarray]:
    """Return the video's info and its frame table (seconds, ascending, first frame at 0).

    Raises a `VideoError` subclass naming `uri` (default: `path`) and the reason.
    """
    path = Path(path)
    uri = uri or str(path)
    try:
        container = av.open(str(path))
    except av.error.InvalidDataError:
        kind = _container_kind(path)
        if kind is None:
            raise NotAVideoError(uri, "FFmpeg does not recognise this file as a video") from None
        raise CorruptVideoError(
            uri, f"looks like {kind} but cannot be opened; the file is probably truncated"
        ) from None
    except av.error.EOFError:
        raise ZeroDurationError(
            uri, "the file ends before its first frame (an empty recording, or cut right after its header)"
        ) from None
    except av.error.FFmpegError as err:
        raise CorruptVideoError(uri, f"cannot be opened: {err}") from None
    with container:
        if any(marker in container.format.name for marker in _IMAGE_FORMATS):
            raise NotAVideoError(uri, f"is a still image ({container.format.name}), not a video")
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise NoVideoStreamError(uri, f"has no video stream (streams: {kinds})")
        stream = container.streams.video[0]
        declared = stream.frames
        pts: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size > 0:
                    pts.append(packet.pts)
        except av.error.FFmpegError as err:
            raise CorruptVideoError(uri, f"the video stream cannot be read: {err}") from None
        if not pts:
            raise ZeroDurationError(uri, "the video stream holds no frames")
        if declared and len(pts) < declared:
            raise CorruptVideoError(
                uri, f"truncated: the header declares {declared} frames, the file holds {len(pts)}"
            )
        _check_first_frame_decodes(container, stream, uri)
        ticks = np.unique(np.asarray(pts, dtype=np.int64))
        base = float(stream.time_base)
        times = (ticks - ticks[0]) * base
        fps = _frame_rate(stream, times)
        duration = float(times[-1] + 1.0 / fps)
        info = VideoInfo(
            duration=round(duration, 6),
            fps=fps,
            frame_count=len(times),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            has_audio=bool(container.streams.audio),
            codec=stream.codec_context.name,
            container=container.format.name,
            start_time=float(ticks[0] * base),
        )
    return info, times


def _frame_rate(stream: av.video.stream.VideoStream, times: np.ndarray) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if rate:
        return float(rate)
    if len(times) > 1:
        return float(1.0 / np.median(np.diff(times)))
    return 25.0  # a single frame with no declared rate: FFmpeg's own default


def _check_first_frame_decodes(container: av.container.InputContainer, stream, uri: str) -> None:
    container.seek(0)
    try:
        for _frame in container.decode(stream):
            return
    except av.error.FFmpegError as err:
        raise CorruptVideoError(uri, f"the first frame cannot be decoded: {err}") from None
    raise CorruptVideoError(uri, "no frame of the video stream can be decoded")
