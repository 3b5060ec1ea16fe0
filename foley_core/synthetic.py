"""Videos with known content, made offline: for tests, `foley smoke`, the `--demo` run and benchmarks.

Two kinds:
- index videos: frame i shows the binary code of i as vertical black/white bands, so a decoded frame
  says which frame it is (`read_index`). Sampling tests use them to check seeks and timestamps.
- scene clips (`SceneSpec`): hard cuts, an object that appears, moves and stops, audio clicks, a
  speech-like span, at times given in the spec. The spec is the ground truth.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

INDEX_BITS = 10  # up to 1,024 frames


def encode_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
    audio_codec: str | None = None,
) -> Path:
    """Encode RGB uint8 frames (H, W, 3) and optional mono float audio in [-1, 1] into `path`.

    The container follows the suffix (.mp4, .mkv, .avi, .webm). Dimensions must be even for yuv420p.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {"threads": "1", **(options or {})}
        astream = None
        if audio is not None:
            default_audio = "pcm_s16le" if path.suffix in (".mkv", ".avi") else "aac"
            astream = container.add_stream(audio_codec or default_audio, rate=sample_rate)
            astream.layout = "mono"
        first = True
        for image in frames:
            if first:
                stream.height, stream.width = image.shape[:2]
                first = False
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None and audio is not None:
            _encode_audio(container, astream, audio, sample_rate)
    return path


def _encode_audio(container: av.container.OutputContainer, stream, audio: np.ndarray, rate: int) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    chunk = 1024
    for start in range(0, len(pcm), chunk):
        block = pcm[start : start + chunk].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def draw_index(index: int, width: int, height: int) -> np.ndarray:
    """A frame showing `index` as INDEX_BITS vertical bands, most significant bit on the left."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    band = width // INDEX_BITS
    for bit in range(INDEX_BITS):
        if index >> (INDEX_BITS - 1 - bit) & 1:
            image[:, bit * band : (bit + 1) * band] = 255
    return image


def read_index(image: np.ndarray) -> int:
    """The frame index drawn by `draw_index`, read back from a decoded (possibly resized) frame."""
    height, width = image.shape[:2]
    band = width / INDEX_BITS
    gray = image.mean(axis=2) if image.ndim == 3 else image
    value = 0
    for bit in range(INDEX_BITS):
        lo, hi = int((bit + 0.3) * band), int((bit + 0.7) * band)
        centre = gray[height // 4 : 3 * height // 4, lo : max(hi, lo + 1)]
        value = value << 1 | int(centre.mean() > 127)
    return value


def write_index_video(
    path: str | Path,
    n_frames: int,
    fps: float = 10.0,
    *,
    width: int = 160,
    height: int = 96,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
) -> Path:
    """A video whose frame i shows the number i (see `read_index`)."""
    frames = (draw_index(i, width, height) for i in range(n_frames))
    return encode_video(path, frames, fps, codec=codec, options=options)


@dataclass(frozen=True)
class SceneSpec:
    """A clip with known events. All times in seconds from the start of the video."""

    duration: float = 4.0  # length of the clip
    fps: float = 12.0  # frame rate of the video stream
    width: int = 160  # frame width in pixels (even)
    height: int = 96  # frame height in pixels (even)
    cuts: tuple[float, ...] = (2.0,)  # hard cuts: the background changes colour at these times
    motions: tuple[tuple[float, float], ...] = ((0.5, 1.5),)  # the object moves in these spans, else rests
    appear: float = 0.25  # the object appears at this time (no object before it)
    clicks: tuple[float, ...] = (1.5,)  # impact clicks in the audio track
    speech: tuple[tuple[float, float], ...] = ()  # speech-like spans in the audio track
    audio: bool = True  # write an audio track at all
    sample_rate: int = 48_000  # audio sample rate (the usual one for video)
    seed: int = 0  # noise seed for the audio floor
    palette: tuple[tuple[int, int, int], ...] = field(
        default=((30, 50, 160), (190, 90, 30), (30, 150, 60), (150, 30, 140))
    )  # background colour of each shot, cycled

    @property
    def n_frames(self) -> int:
        return round(self.duration * self.fps)

    def frame_of(self, t: float) -> int:
        """The first frame shown at or after time t."""
        return math.ceil(t * self.fps - 1e-9)


def scene_frames(spec: SceneSpec) -> Iterator[np.ndarray]:
    """The frames of `spec`: shot backgrounds, and a white square that moves only inside `motions`."""
    size = max(8, spec.height // 5)
    travel = spec.width - size - 8
    total_motion = sum(end - start for start, end in spec.motions) or 1.0
    for i in range(spec.n_frames):
        t = i / spec.fps
        shot = sum(t >= cut for cut in spec.cuts)
        image = np.empty((spec.height, spec.width, 3), dtype=np.uint8)
        image[:] = spec.palette[shot % len(spec.palette)]
        if t >= spec.appear:
            moved = sum(min(max(t - start, 0.0), end - start) for start, end in spec.motions)
            x = 4 + round(travel * moved / total_motion)
            y = spec.height // 2 - size // 2
            image[y : y + size, x : x + size] = 255
        yield image


def scene_audio(spec: SceneSpec) -> np.ndarray:
    """Mono audio for `spec`: a quiet noise floor, 5 ms clicks, and voiced 'syllables' for speech."""
    rate = spec.sample_rate
    n = round(spec.duration * rate)
    rng = np.random.default_rng(spec.seed)
    audio = rng.normal(0.0, 0.002, n)
    click = np.hanning(max(8, rate // 200)) * 0.9
    for t in spec.clicks:
        start = round(t * rate)
        end = min(n, start + len(click))
        if start >= end:
            continue
        audio[start:end] += click[: end - start] * np.sign(rng.normal(size=end - start))
    for start_s, end_s in spec.speech:
        start, end = round(start_s * rate), min(n, round(end_s * rate))
        if start >= end:
            continue
        time = np.arange(end - start) / rate
        pitch = 140 + 20 * np.sin(2 * np.pi * 0.7 * time)
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
        syllables = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * time)) ** 2 / 4  # ~4 syllables a second
        audio[start:end] += 0.3 * voiced * syllables
    return np.clip(audio, -1.0, 1.0)


def write_scene_video(path: str | Path, spec: SceneSpec | None = None) -> Path:
    """Encode the clip described by `spec` (a default 4-second clip when None)."""
    spec = spec or SceneSpec()
    audio = scene_audio(spec) if spec.audio else None
    return encode_video(path, scene_frames(spec), spec.fps, audio=audio, sample_rate=spec.sample_rate)


def reference_script(spec: SceneSpec):
    """The ground-truth foley script of a scene clip: what a careful sound editor would spot.

    foley: the object appearing and each motion span; fx: each click; ambience: one bed per shot;
    dialogue: each speech span. Times are the spec's own.
    """
    from v2t_foley.foley_core.schema.script import Cue, FoleyScript

    duration = spec.n_frames / spec.fps
    bounds = [0.0, *sorted(spec.cuts), duration]
    foley = [Cue.at(spec.appear, min(spec.appear + 0.1, duration), "A small white block appears.")]
    foley += [Cue.at(a, b, "The white block slides across the floor.") for a, b in spec.motions]
    fx = [Cue.at(t, min(t + 0.05, duration), "A sharp click of an impact.") for t in spec.clicks]
    shots = enumerate(itertools.pairwise(bounds))
    ambience = [Cue.at(a, b, f"Steady room tone of shot {k + 1}.") for k, (a, b) in shots]
    dialogue = [Cue.at(a, min(b, duration), "Someone speaks in a low voice.") for a, b in spec.speech]
    return FoleyScript(
        foley=sorted(foley, key=lambda c: c.start), fx=fx, ambience=ambience, dialogue=dialogue
    )


def write_regular_video(
    path: str | Path,
    duration: float,
    *,
    shot_s: float = 20.0,
    click_s: float = 5.0,
    fps: float = 5.0,
    width: int = 160,
    height: int = 120,
    sample_rate: int = 16_000,
) -> tuple[Path, list[float], list[float]]:
    """A long clip with regular content, written piece by piece (memory does not grow with length):
    a hard cut every `shot_s` seconds (the background colour changes), a block that moves during the
    first second after every click, and a click every `click_s` seconds (offset by half a second).
    Returns the path, the cut times and the click times."""
    path = Path(path)
    palette = ((30, 50, 160), (190, 90, 30), (30, 150, 60), (150, 30, 140), (200, 200, 40), (20, 20, 20))
    n_frames = round(duration * fps)
    cuts = [k * shot_s for k in range(1, math.ceil(duration / shot_s)) if k * shot_s < duration]
    cuts = [math.ceil(t * fps - 1e-9) / fps for t in cuts]
    clicks = [
        k * click_s + 0.5 for k in range(math.ceil(duration / click_s)) if k * click_s + 0.5 < duration - 0.1
    ]
    size = max(8, height // 5)
    rng = np.random.default_rng(0)
    click = np.hanning(max(8, sample_rate // 200)) * 0.9
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt, stream.width, stream.height = "yuv420p", width, height
        stream.options = {"threads": "1"}
        astream = container.add_stream("aac", rate=sample_rate)
        astream.layout = "mono"
        written = 0  # audio samples written
        for second in range(math.ceil(duration)):
            for i in range(round(second * fps), min(n_frames, round((second + 1) * fps))):
                t = i / fps
                image = np.empty((height, width, 3), dtype=np.uint8)
                image[:] = palette[sum(t >= c for c in cuts) % len(palette)]
                phase = (t - 0.5) % click_s
                x = 4 + round((width - size - 8) * min(phase, 1.0))
                image[height // 2 - size // 2 : height // 2 + size // 2, x : x + size] = 255
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            end = round(min(second + 1, duration) * sample_rate)
            audio = rng.normal(0.0, 0.002, end - written)
            for c in clicks:
                lo = round(c * sample_rate) - written
                if 0 <= lo < audio.size:
                    piece = click[: audio.size - lo]
                    audio[lo : lo + piece.size] += piece * np.sign(rng.normal(size=piece.size))
            pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
            for k in range(0, pcm.size, 1024):
                block = pcm[k : k + 1024].reshape(1, -1)
                aframe = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
                aframe.sample_rate, aframe.pts, aframe.time_base = (
                    sample_rate,
                    written + k,
                    Fraction(1, sample_rate),
                )
                for packet in astream.encode(aframe):
                    container.mux(packet)
            written = end
        for packet in stream.encode():
            container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    return path, cuts, clicks
