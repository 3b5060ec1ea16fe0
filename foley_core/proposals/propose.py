"""`propose`: every measurement of one video.

Only the video stream decides whether a video is usable: damaged audio packets are skipped (and said
so in `ProposalSet.notes`), and audio that cannot be decoded at all leaves video-only proposals.
"""

from __future__ import annotations

from v2t_foley.foley_core.proposals.audio import AudioTrack, detect_onsets, detect_speech, load_audio
from v2t_foley.foley_core.proposals.base import Proposal, ProposalSet, ProposalSettings
from v2t_foley.foley_core.proposals.visual import detect_cuts, detect_motion, motion_energy, small_frames
from v2t_foley.foley_core.video.video import Video

# Onsets this close to a stretch lost to damaged packets are dropped: the silence put in its place
# starts and ends abruptly, and the detector would report those edges as sounds.
GAP_MARGIN_S = 0.05


def propose(video: Video, settings: ProposalSettings | None = None) -> ProposalSet:
    """Cuts, motion spans, audio onsets and speech segments of `video` (audio ones when it has audio)."""
    settings = settings or ProposalSettings()
    frames = small_frames(video, settings.analysis_width)
    times = video.frame_times[: len(frames)]
    cuts = detect_cuts(frames, times, video.info.fps, settings)
    motion = detect_motion(motion_energy(frames), times, [c.start for c in cuts], settings)
    onsets: list[Proposal] = []
    speech: list[Proposal] = []
    notes: list[str] = []
    if video.info.has_audio:
        audio = load_audio(video, settings.audio_rate)
        notes = audio.notes()
        if audio.usable:
            onsets = _outside_gaps(detect_onsets(audio.samples, audio.offset, settings), audio)
            speech = detect_speech(audio.samples, audio.offset, settings)
    return ProposalSet(
        duration=video.info.duration, cuts=cuts, motion=motion, onsets=onsets, speech=speech, notes=notes
    )


def _outside_gaps(onsets: list[Proposal], audio: AudioTrack) -> list[Proposal]:
    return [
        o for o in onsets if not any(a - GAP_MARGIN_S <= o.start <= b + GAP_MARGIN_S for a, b in audio.gaps)
    ]
