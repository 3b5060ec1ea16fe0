"""Audio onsets (librosa) and speech segments (silero-vad, whose model ships inside its package)."""

from __future__ import annotations

import threading
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

    samples: np.ndarray  # mono float32 at the requested rate; empty when nothing decoded
    offset: float  # time of the first sample on the video's clock (seconds from the first frame)
    skipped: int = 0  # packets the decoder rejected
    gaps: tuple[tuple[float, float], ...] = ()  # video-clock spans filled with silence for lost packets
    failure: str | None = None  # why no (or no more) audio could be read, None when it all was read

    @property
    def usable(self) -> bool:
        return self.samples.size > 0

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


def load_audio(video: Video, rate: int) -> AudioTrack:
    """Mono float32 samples of the first audio stream at `rate`, decoded packet by packet.

    Packets the decoder rejects are skipped (see `AudioTrack`); an audio stream that cannot be read at
    all gives an empty track with the reason, because only the video stream decides if a video is usable.
    """
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks: list[np.ndarray] = []
    gaps: list[tuple[float, float]] = []
    first: float | None = None  # file-clock time of the first decoded sample
    expected: float | None = None  # file-clock time the next decoded frame should start at
    filled = 0  # samples output so far, silence included
    skipped = 0
    failure = None

    def add(frames) -> None:
        nonlocal filled
        for out in frames:
            block = out.to_ndarray().reshape(-1)
            chunks.append(block)
            filled += block.size

    try:
        with av.open(str(video.path)) as media:
            stream = media.streams.audio[0]
            try:
                for packet in media.demux(stream):
                    try:
                        decoded = packet.decode()
                    except av.error.FFmpegError:
                        skipped += 1
                        continue
                    for frame in decoded:
                        if frame.time is not None and frame.sample_rate:
                            if first is None:
                                first = expected = frame.time
                            missing = frame.time - expected
                            # Lost packets leave a hole in the timeline: fill it with silence so every
                            # later sample stays at its true time (half a frame of jitter is not a hole).
                            # The resampler is flushed and renewed first: it holds a few samples back,
                            # and they belong before the hole, not after it.
                            if missing > 0.5 * frame.samples / frame.sample_rate:
                                gaps.append((expected, frame.time))
                                add(resampler.resample(None))
                                resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
                                silence = np.zeros(round(missing * rate), np.float32)
                                chunks.append(silence)
                                filled += silence.size
                            expected = max(expected, frame.time + frame.samples / frame.sample_rate)
                        add(resampler.resample(frame))
            except av.error.FFmpegError as err:  # the demuxer lost its way: keep what was read
                failure = f"{type(err).__name__}: {err}"
            add(resampler.resample(None))
    except (av.error.FFmpegError, IndexError, ValueError) as err:  # the stream cannot be opened at all
        failure = f"{type(err).__name__}: {err}"
    samples = np.concatenate(chunks).astype(np.float32) if filled else np.zeros(0, np.float32)
    start = video.info.start_time
    return AudioTrack(
        samples=samples,
        offset=float(first or 0.0) - start,
        skipped=skipped,
        gaps=tuple((round(a - start, 4), round(b - start, 4)) for a, b in gaps),
        failure=failure,
    )


def detect_onsets(samples: np.ndarray, offset: float, settings: ProposalSettings) -> list[Proposal]:
    """Onsets backtracked to the energy minimum before each peak: the sound's start, not its peak."""
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
