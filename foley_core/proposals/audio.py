"""Audio onsets (librosa) and speech segments (silero-vad, whose model ships inside its package)."""

from __future__ import annotations

import threading

import av
import numpy as np

from foley_core.proposals.base import Proposal, ProposalSettings
from foley_core.video.errors import CorruptVideoError
from foley_core.video.video import Video


def load_audio(video: Video, rate: int) -> tuple[np.ndarray, float]:
    """Mono float32 samples at `rate`, and the time of the first sample on the video's clock."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks, first = [], None
    try:
        with av.open(str(video.path)) as media:
            stream = media.streams.audio[0]
            for frame in media.decode(stream):
                if first is None and frame.time is not None:
                    first = frame.time
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.error.FFmpegError as err:
        raise CorruptVideoError(video.uri, f"decoding the audio failed: {err}") from None
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return samples, float(first or 0.0) - video.info.start_time


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
