"""`propose`: every measurement of one video."""

from __future__ import annotations

from foley_core.proposals.audio import detect_onsets, detect_speech, load_audio
from foley_core.proposals.base import ProposalSet, ProposalSettings
from foley_core.proposals.visual import detect_cuts, detect_motion, motion_energy, small_frames
from foley_core.video.video import Video


def propose(video: Video, settings: ProposalSettings | None = None) -> ProposalSet:
    """Cuts, motion spans, audio onsets and speech segments of `video` (audio ones when it has audio)."""
    settings = settings or ProposalSettings()
    frames = small_frames(video, settings.analysis_width)
    times = video.frame_times[: len(frames)]
    cuts = detect_cuts(frames, times, video.info.fps, settings)
    motion = detect_motion(motion_energy(frames), times, [c.start for c in cuts], settings)
    onsets, speech = [], []
    if video.info.has_audio:
        samples, offset = load_audio(video, settings.audio_rate)
        onsets = detect_onsets(samples, offset, settings)
        speech = detect_speech(samples, offset, settings)
    return ProposalSet(duration=video.info.duration, cuts=cuts, motion=motion, onsets=onsets, speech=speech)
