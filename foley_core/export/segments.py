"""Segments of a video for a text-video-to-audio model: where to cut, and the cutting (PyAV only).

A model reads a bounded window (HunyuanVideo-Foley 1-15 s, MMAudio 8 s, ThinkSound one fixed whole-second
length per batch). `plan_windows` splits a video into windows of `min_s`..`max_s` seconds, cutting at a
measured shot boundary when one falls near the even cut, else at a keyframe near it (so the cut can be a
stream copy), else evenly. `cut_segment` writes one window as a file: a stream copy when both ends fall on
keyframes (or the video's end), else decoded and re-encoded (H.264). Segment files hold video only: the
model makes the sound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from v2t_foley.foley_core.video.convert import FrameConverter, decode_in_threads

EPS = 1e-6


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def plan_windows(
    duration: float,
    max_s: float,
    min_s: float = 1.0,
    *,
    cuts: list[float] | None = None,
    keyframes: list[float] | None = None,
    snap_s: float | None = None,
) -> list[Window]:
    """Consecutive windows covering [0, duration], each at most `max_s` (and at least `min_s` whenever
    the video is that long). Boundaries snap to a shot cut within `snap_s` of the even boundary, else to
    a keyframe within it."""
    if duration <= max_s + EPS:
        return [Window(0.0, duration)]
    cuts = sorted(cuts or [])
    keyframes = sorted(keyframes or [])
    windows: list[Window] = []
    t = 0.0
    while duration - t > max_s + EPS:
        pieces = math.ceil((duration - t) / max_s - EPS)
        ideal = t + (duration - t) / pieces
        snap = snap_s if snap_s is not None else min(2.5, 0.25 * (duration - t) / pieces)
        lo, hi = t + min_s, min(t + max_s, duration - min_s)

        def near(
            points: list[float], lo: float = lo, hi: float = hi, ideal: float = ideal, snap: float = snap
        ):
            fitting = [p for p in points if lo - EPS <= p <= hi + EPS and abs(p - ideal) <= snap + EPS]
            return min(fitting, key=lambda p: abs(p - ideal)) if fitting else None

        boundary = near(cuts)
        if boundary is None:
            boundary = near(keyframes)
        if boundary is None:
            boundary = ideal
        # the rest must still split into windows no longer than max_s
        boundary = max(boundary, duration - max_s * (pieces - 1)) if pieces > 1 else boundary
        windows.append(Window(round(t, 6), round(boundary, 6)))
        t = boundary
    windows.append(Window(round(t, 6), round(duration, 6)))
    return windows


def fixed_windows(duration: float, length: float) -> list[Window]:
    """Windows of exactly `length` seconds covering [0, duration]; the last one ends at the video's end
    (overlapping the one before) so every window has the same length."""
    if length > duration + EPS:
        raise ValueError(f"window of {length} s is longer than the video ({duration} s)")
    count = math.ceil(duration / length - EPS)
    starts = [k * length for k in range(count - 1)] + [max(0.0, duration - length)]
    return [Window(round(s, 6), round(s + length, 6)) for s in starts]


def padded_window(start: float, end: float, duration: float, min_s: float, max_s: float) -> Window:
    """A cue's window, widened around its centre to `min_s` and cut to `max_s`, kept inside the video."""
    length = min(max(end - start, min_s), max_s, duration)
    centre = (start + end) / 2
    s = min(max(0.0, centre - length / 2), max(0.0, duration - length))
    if end - start > max_s:  # a long cue: its first max_s seconds
        s = start
    return Window(round(s, 6), round(min(duration, s + length), 6))


@dataclass(frozen=True)
class MediaInfo:
    duration: float  # end of the last frame
    rate: Fraction  # average frame rate
    keyframes: list[float]  # presentation times of keyframes, seconds from the first frame


def media_info(path: str | Path) -> MediaInfo:
    """Frame rate, duration and keyframe times from the packets (no decoding)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        base = stream.time_base
        pts, keys = [], []
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    if not pts:
        raise ValueError(f"{path}: no video packets")
    first = min(pts)
    duration = float((max(pts) - first) * base) + 1 / float(rate)
    return MediaInfo(duration, Fraction(rate), sorted(float((k - first) * base) for k in keys))


def cut_segment(
    src: str | Path,
    dst: str | Path,
    start: float,
    end: float,
    info: MediaInfo | None = None,
    *,
    at_least: bool = False,
) -> str:
    """Write the frames of [start, end) of `src` into `dst`; returns "copy" or "reencode".

    A re-encoded segment never lasts longer than the window (a model's maximum), or, with `at_least`,
    never shorter (a fixed length a model needs), when the window's length is no whole number of frames.
    """
    info = info or media_info(src)
    half = 0.5 / float(info.rate)
    starts_on_key = any(abs(k - start) <= half for k in info.keyframes)
    ends_on_key = end >= info.duration - half or any(abs(k - end) <= half for k in info.keyframes)
    if starts_on_key and ends_on_key:
        try:
            _copy(src, dst, start, end, half)
            return "copy"
        except (av.error.FFmpegError, ValueError):
            Path(dst).unlink(missing_ok=True)
    _reencode(src, dst, start, end, info.rate, half, at_least)
    return "reencode"


def _copy(src: str | Path, dst: str | Path, start: float, end: float, half: float) -> None:
    with av.open(str(src)) as source, av.open(str(dst), "w") as out:
        stream = source.streams.video[0]
        base = stream.time_base
        target = out.add_stream_from_template(stream)
        packets = [p for p in source.demux(stream) if p.pts is not None]
        first_pts = min(p.pts for p in packets)
        lo = first_pts + int((start - half) / base)
        hi = first_pts + int((end - half) / base)
        chosen = [p for p in packets if lo <= p.pts <= hi]
        if not chosen:
            raise ValueError("no packets in the window")
        offset = min(p.dts if p.dts is not None else p.pts for p in chosen)
        for packet in chosen:
            packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
            packet.stream = target
            out.mux(packet)


def _reencode(
    src: str | Path, dst: str | Path, start: float, end: float, rate: Fraction, half: float, at_least: bool
) -> None:
    with av.open(str(src)) as source, av.open(str(dst), "w") as out:
        stream = source.streams.video[0]
        decode_in_threads(stream)
        target = out.add_stream("libx264", rate=rate)
        target.pix_fmt = "yuv420p"
        target.options = {"threads": "1"}
        target.width = stream.codec_context.width // 2 * 2
        target.height = stream.codec_context.height // 2 * 2
        convert = FrameConverter("yuv420p", target.width, target.height)
        first: float | None = None
        index = 0
        frames = (end - start) * rate
        most = max(1, math.ceil(frames - 1e-6) if at_least else math.floor(frames + 1e-6))
        for frame in source.decode(stream):
            if frame.time is None:
                continue
            first = frame.time if first is None else first
            t = frame.time - first
            if t < start - half:
                continue
            if index >= most or (t >= end - half and not at_least):
                break
            image = convert.frame(frame)
            image.pts = index
            image.time_base = 1 / rate
            index += 1
            for packet in target.encode(image):
                out.mux(packet)
        for packet in target.encode():
            out.mux(packet)
    if index == 0:
        raise ValueError(f"no frames between {start} s and {end} s")


def decoded_seconds(path: str | Path) -> tuple[int, float]:
    """Frames that decode in `path`, and the seconds they last (frame count / frame rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        rate = stream.average_rate or stream.guessed_rate
    return frames, frames / float(rate)
