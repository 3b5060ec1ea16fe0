"""Decoding with PyAV: frame k is always the k-th frame shown.

Frames far into a video are reached by seeking to the keyframe before them and decoding forward; every
decoded frame is placed by its presentation time in the frame table, so a seek that lands late (or a
file whose timestamps do not match the table) falls back to decoding from the start. Decoding time is
then bounded by the distance from a keyframe, not by the frame's position in a long video.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from v2t_foley.foley_core.video.convert import FrameConverter, decode_in_threads
from v2t_foley.foley_core.video.errors import CorruptVideoError
from v2t_foley.foley_core.video.probe import VideoInfo
from v2t_foley.foley_core.video.reader import FrameReader, scaled_size

SEEK_AFTER_S = 2.0  # frames this far past the start are reached by seeking


class PyAVReader(FrameReader):
    name = "pyav"

    def read(
        self,
        path: Path,
        uri: str,
        indices: Sequence[int],
        info: VideoInfo,
        *,
        max_side: int | None,
        frame_times: np.ndarray | None = None,
    ) -> np.ndarray:
        convert = FrameConverter("rgb24", *scaled_size(info.width, info.height, max_side))
        found: dict[int, np.ndarray] = {}
        try:
            with av.open(str(path)) as media:
                stream = media.streams.video[0]
                decode_in_threads(stream)
                first = min(indices)
                if frame_times is not None and float(frame_times[first]) > SEEK_AFTER_S:
                    found = _read_seeking(media, stream, indices, info, frame_times, convert)
                if not found:
                    media.seek(0)
                    found = _read_sequential(media, stream, indices, convert)
        except av.error.FFmpegError as err:
            raise CorruptVideoError(uri, f"decoding failed: {err}") from None
        missing = sorted(set(indices) - found.keys())
        if missing:
            raise CorruptVideoError(uri, f"frames {missing[:5]} could not be decoded (truncated stream?)")
        return np.stack([found[i] for i in indices])


def _read_sequential(media, stream, indices: Sequence[int], convert: FrameConverter) -> dict[int, np.ndarray]:
    wanted, last = set(indices), max(indices)
    found: dict[int, np.ndarray] = {}
    for position, frame in enumerate(media.decode(stream)):
        if position in wanted:
            found[position] = convert.array(frame)
        if position >= last:
            break
    return found


def _read_seeking(
    media, stream, indices: Sequence[int], info: VideoInfo, times: np.ndarray, convert: FrameConverter
) -> dict[int, np.ndarray]:
    """Seek to the keyframe before the first wanted frame and decode forward, placing frames by time.
    Empty when the frames cannot be placed with certainty (the caller decodes from the start)."""
    wanted, first, last = set(indices), min(indices), max(indices)
    half = 0.5 / max(info.fps, 1e-3)
    base = float(stream.time_base)
    target = float(times[first]) + info.start_time
    media.seek(int(target / base), stream=stream, backward=True, any_frame=False)
    found: dict[int, np.ndarray] = {}
    started = False
    for frame in media.decode(stream):
        if frame.pts is None:
            return {}
        t = frame.pts * base - info.start_time
        position = int(np.searchsorted(times, t - half))
        if position >= len(times) or abs(float(times[position]) - t) > half:
            return {}  # a frame the table does not know: do not guess
        if not started:
            if position > first:
                return {}  # the seek landed after the first wanted frame
            started = True
        if position in wanted:
            found[position] = convert.array(frame)
        if position >= last:
            break
    return found
