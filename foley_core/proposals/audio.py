"""Audio onsets (librosa) and speech segments (silero-vad, whose model ships inside its package)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from v2t_foley.foley_core.proposals.base import Proposal, ProposalSettings
from v2t_foley.foley_core.video.video import Video


@dataclass(frozen=True)
class AudioTrack:
    """What could be decoded of a video's first audio stream, and what could not.

    A damaged packet costs its own stretch of audio, never the video: it is skipped, counted, and the
    stretch it should have filled is kept as silence (so later samples stay on the video's clock) and
    listed in `gaps`, where nothing can be measured.
    """

    samples: np.ndarray  # mono float32 at the requested rate; empty when nothing decoded (or streamed)
    offset: float  # time of the first sample on the video's clock (seconds from the first frame)
    skipped: int = 0  # packets the decoder rejected
    gaps: tuple[tuple[float, float], ...] = ()  # video-clock spans filled with silence for lost packets
    failure: str | None = None  # why no (or no more) audio could be read, None when it all was read
    n_samples: int | None = None  # samples decoded (silence included) when `samples` was not kept

    @property
    def usable(self) -> bool:
        return (self.samples.size if self.n_samples is None else self.n_samples) > 0

    def notes(self) -> list[str]:
        """One line each for what the proposals and the trace should say about this audio."""
        notes = []
        if not self.usable:
            damaged = f"all {self.skipped} packets are damaged" if self.skipped else "no samples"
            why = self.failure or damaged
            notes.append(f"audio: cannot be decoded ({why}); proposals are video-only")
            return notes
        if self.skipped:
            lost = sum(end - start for start, end in self.gaps)
            notes.append(
                f"audio: {self.skipped} damaged packet{'s' if self.skipped != 1 else ''} skipped"
                f" ({lost:.2f} s of audio missing; no onset is measured there)"
            )
        if self.failure:
            notes.append(f"audio: reading stopped early ({self.failure}); later audio is not measured")
        return notes


class AudioDecoder:
    """A video's first audio stream decoded packet by packet into mono float32 pieces at `rate`.

    `pieces()` yields the samples in order as they are decoded (silence in place of damaged packets),
    so a caller can analyse a long video in bounded blocks; `track()` then says what was read.
    """

    def __init__(self, video: Video, rate: int) -> None:
        self.video, self.rate = video, rate
        self.first: float | None = None  # file-clock time of the first decoded sample
        self.gaps: list[tuple[float, float]] = []
        self.skipped = 0
        self.failure: str | None = None
        self.filled = 0  # samples output so far, silence included

    @property
    def offset(self) -> float:
        """Time of the first sample on the video's clock."""
        return float(self.first or 0.0) - self.video.info.start_time

    def pieces(self) -> Iterator[np.ndarray]:
        rate = self.rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        expected: float | None = None  # file-clock time the next decoded frame should start at

        def out(frames) -> Iterator[np.ndarray]:
            for frame in frames:
                block = frame.to_ndarray().reshape(-1)
                self.filled += block.size
                yield block

        try:
            with av.open(str(self.video.path)) as media:
                stream = media.streams.audio[0]
                try:
                    for packet in media.demux(stream):
                        try:
                            decoded = packet.decode()
                        except av.error.FFmpegError:
                            self.skipped += 1
                            continue
                        for frame in decoded:
                            if frame.time is not None and frame.sample_rate:
                                if self.first is None:
                                    self.first = expected = frame.time
                                missing = frame.time - expected
                                # Lost packets leave a hole in the timeline: fill it with silence so every
                                # later sample stays at its true time (half a frame of jitter is not a hole).
                                # The resampler is flushed and renewed first: it holds a few samples back,
                                # and they belong before the hole, not after it.
                                if missing > 0.5 * frame.samples / frame.sample_rate:
                                    self.gaps.append((expected, frame.time))
                                    yield from out(resampler.resample(None))
                                    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
                                    silence = np.zeros(round(missing * rate), np.float32)
                                    self.filled += silence.size
                                    yield silence
                                expected = max(expected, frame.time + frame.samples / frame.sample_rate)
                            yield from out(resampler.resample(frame))
                except av.error.FFmpegError as err:  # the demuxer lost its way: keep what was read
                    self.failure = f"{type(err).__name__}: {err}"
                yield from out(resampler.resample(None))
        except (av.error.FFmpegError, IndexError, ValueError) as err:  # the stream cannot be opened at all
            self.failure = f"{type(err).__name__}: {err}"

    def track(self, samples: np.ndarray | None = None) -> AudioTrack:
        """What was read (call after `pieces` is exhausted); `samples` when the caller kept them."""
        start = self.video.info.start_time
        return AudioTrack(
            samples=samples if samples is not None else np.zeros(0, np.float32),
            offset=self.offset,
            skipped=self.skipped,
            gaps=tuple((round(a - start, 4), round(b - start, 4)) for a, b in self.gaps),
            failure=self.failure,
            n_samples=None if samples is not None else self.filled,
        )


def load_audio(video: Video, rate: int) -> AudioTrack:
    """Mono float32 samples of the first audio stream at `rate`, decoded packet by packet, all in memory
    (`propose` streams instead: `AudioDecoder`, `audio_windows`).

    Packets the decoder rejects are skipped (see `AudioTrack`); an audio stream that cannot be read at
    all gives an empty track with the reason, because only the video stream decides if a video is usable.
    """
    decoder = AudioDecoder(video, rate)
    chunks = list(decoder.pieces())
    samples = np.concatenate(chunks).astype(np.float32) if decoder.filled else np.zeros(0, np.float32)
    return decoder.track(samples)


@dataclass(frozen=True)
class AudioWindow:
    """One block of a long audio stream with context on both sides: measure in `samples`, keep what
    starts in the core [core_start, core_end) (sample indices of the whole stream)."""

    first: int  # index of samples[0] in the whole stream
    samples: np.ndarray
    core_start: int
    core_end: int | None  # None: to the end of the stream


def audio_windows(pieces: Iterable[np.ndarray], block: int, margin: int) -> Iterator[AudioWindow]:
    """Cut a stream of sample pieces into windows of `block` core samples with `margin` of context each
    side; memory stays at about block + 2 * margin samples. A stream of at most block + margin samples
    is one window holding all of it (so a short video is measured exactly as in one piece)."""
    buffered: list[np.ndarray] = []
    first = 0  # index of the first buffered sample
    size = 0  # buffered samples
    core = 0  # start of the next core
    for piece in pieces:
        buffered.append(piece)
        size += piece.size
        while first + size >= core + block + 2 * margin and first + size > block + margin:
            data = np.concatenate(buffered)
            lo = max(0, core - margin) - first
            hi = core + block + margin - first
            yield AudioWindow(first + lo, data[lo:hi].astype(np.float32), core, core + block)
            core += block
            drop = max(0, core - margin - first)
            data = data[drop:]
            first += drop
            buffered, size = [data], data.size
    if size and (first + size > core or core == 0):
        data = np.concatenate(buffered).astype(np.float32)
        lo = max(0, core - margin) - first
        yield AudioWindow(first + lo, data[lo:], core, None)


def detect_onsets(
    samples: np.ndarray,
    offset: float,
    settings: ProposalSettings,
    core: tuple[float, float | None] | None = None,
) -> list[Proposal]:
    """Onsets backtracked to the energy minimum before each peak: the sound's start, not its peak.

    `core` (video-clock seconds, end None for open): keep only onsets whose peak lies there (a window of
    a long stream measured with context on both sides)."""
    import librosa

    if len(samples) < settings.onset_hop * 4:
        return []
    rate, hop = settings.audio_rate, settings.onset_hop
    envelope = librosa.onset.onset_strength(y=samples, sr=rate, hop_length=hop)
    peaks = librosa.onset.onset_detect(onset_envelope=envelope, sr=rate, hop_length=hop, units="frames")
    if len(peaks) == 0:
        return []
    starts = librosa.onset.onset_backtrack(peaks, envelope)
    median = float(np.median(envelope))
    floor = median + 3.0 * float(np.median(np.abs(envelope - median))) or 1e-6
    found = []
    for peak, start in zip(peaks, starts, strict=True):
        strength = float(envelope[peak]) / floor
        if core is not None:
            at = offset + int(peak) * hop / rate
            if at < core[0] or (core[1] is not None and at >= core[1]):
                continue
        if strength >= settings.onset_min_strength:
            t = offset + _attack(samples, int(start) * hop, (int(peak) + 2) * hop) / rate
            t = round(t, 4)
            found.append(Proposal(kind="audio_onset", start=t, end=t, strength=round(strength, 3)))
    return found


ATTACK_FRACTION = 0.25  # the attack starts where the signal first reaches this share of its peak


def _attack(samples: np.ndarray, lo: int, hi: int) -> int:
    """The first sample between `lo` and `hi` that reaches ATTACK_FRACTION of the loudest there.

    The onset envelope's frames are 8 ms, and lossy codecs smear energy ahead of a transient (AAC
    pre-echo); the waveform itself says where the attack is.
    """
    lo, hi = max(0, lo), min(len(samples), max(hi, lo + 1))
    window = np.abs(samples[lo:hi])
    if window.size == 0 or window.max() <= 0:
        return lo
    return lo + int(np.argmax(window >= ATTACK_FRACTION * window.max()))


_thread_models = threading.local()


def _vad_model():
    """One silero model per thread: it is a stateful TorchScript module, and sharing one between the
    threads of a Prefect task runner crashed the process (a segfault in torch::jit, seen here)."""
    model = getattr(_thread_models, "vad", None)
    if model is None:
        from silero_vad import load_silero_vad

        with warnings.catch_warnings():  # silero-vad ships TorchScript; torch >= 2.9 warns on every load
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*", category=FutureWarning)
            model = _thread_models.vad = load_silero_vad()
    return model


def detect_speech(samples: np.ndarray, offset: float, settings: ProposalSettings) -> list[Proposal]:
    import torch
    from silero_vad import get_speech_timestamps

    if settings.audio_rate != 16_000 or len(samples) < 512:
        return []
    stamps = get_speech_timestamps(
        torch.from_numpy(samples),
        _vad_model(),
        sampling_rate=16_000,
        threshold=settings.vad_threshold,
        return_seconds=True,
    )
    return [
        Proposal(
            kind="speech", start=round(offset + s["start"], 3), end=round(offset + s["end"], 3), strength=1.0
        )
        for s in stamps
    ]
