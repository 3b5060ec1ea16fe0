"""`propose`: every measurement of one video.

Only the video stream decides whether a video is usable: damaged audio packets are skipped (and said
so in `ProposalSet.notes`), and audio that cannot be decoded at all leaves video-only proposals.
"""

from __future__ import annotations

from collections.abc import Callable

from v2t_foley.foley_core.proposals.audio import (
    AudioDecoder,
    AudioTrack,
    audio_windows,
    detect_onsets,
    detect_speech,
)
from v2t_foley.foley_core.proposals.base import Proposal, ProposalSet, ProposalSettings
from v2t_foley.foley_core.proposals.visual import detect_motion, scan_video
from v2t_foley.foley_core.video.video import Video

# Onsets this close to a stretch lost to damaged packets are dropped: the silence put in its place
# starts and ends abruptly, and the detector would report those edges as sounds.
GAP_MARGIN_S = 0.05
# Audio is measured in blocks of this many seconds with AUDIO_CONTEXT_S of context on each side (so a
# long video's audio is never held whole); audio up to AUDIO_BLOCK_S + AUDIO_CONTEXT_S is one block.
AUDIO_BLOCK_S = 30.0
AUDIO_CONTEXT_S = 1.0

# what measures a video: `propose` itself, or a pool that runs it in other processes (processes.py)
Measure = Callable[[Video, ProposalSettings], ProposalSet]


def propose(video: Video, settings: ProposalSettings | None = None) -> ProposalSet:
    """Cuts, motion spans, audio onsets and speech segments of `video` (audio ones when it has audio)."""
    settings = settings or ProposalSettings()
    cuts, energy, times = scan_video(video, settings)
    motion = detect_motion(energy, times, [c.start for c in cuts], settings)
    onsets: list[Proposal] = []
    speech: list[Proposal] = []
    notes: list[str] = []
    if video.info.has_audio:
        onsets, speech, audio = _measure_audio(video, settings)
        notes = audio.notes()
        onsets = _outside_gaps(onsets, audio)
    return ProposalSet(
        duration=video.info.duration, cuts=cuts, motion=motion, onsets=onsets, speech=speech, notes=notes
    )


def _measure_audio(
    video: Video, settings: ProposalSettings
) -> tuple[list[Proposal], list[Proposal], AudioTrack]:
    """Onsets and speech, block by block as the audio is decoded (bounded memory at any length)."""
    rate = settings.audio_rate
    decoder = AudioDecoder(video, rate)
    onsets: list[Proposal] = []
    speech: list[Proposal] = []
    block, context = round(AUDIO_BLOCK_S * rate), round(AUDIO_CONTEXT_S * rate)
    for window in audio_windows(decoder.pieces(), block, context):
        offset = decoder.offset + window.first / rate
        whole = window.core_start == 0 and window.core_end is None
        lo = decoder.offset + window.core_start / rate
        hi = None if window.core_end is None else decoder.offset + window.core_end / rate
        core = None if whole else (lo, hi)
        onsets += detect_onsets(window.samples, offset, settings, core)
        found = detect_speech(window.samples, offset, settings)
        if not whole:
            found = _clip_spans(found, lo, hi)
        speech = _join_spans(speech, found)
    return onsets, speech, decoder.track()


def _clip_spans(spans: list[Proposal], lo: float, hi: float | None) -> list[Proposal]:
    clipped = []
    for span in spans:
        start, end = max(span.start, lo), span.end if hi is None else min(span.end, hi)
        if end > start:
            clipped.append(span.model_copy(update={"start": round(start, 3), "end": round(end, 3)}))
    return clipped


def _join_spans(done: list[Proposal], new: list[Proposal]) -> list[Proposal]:
    """Append `new` spans; one that starts where the last one ended (a block boundary) continues it."""
    if done and new and new[0].start - done[-1].end <= 0.05:
        done = [*done[:-1], done[-1].model_copy(update={"end": new[0].end})]
        new = new[1:]
    return done + new


def _outside_gaps(onsets: list[Proposal], audio: AudioTrack) -> list[Proposal]:
    return [
        o for o in onsets if not any(a - GAP_MARGIN_S <= o.start <= b + GAP_MARGIN_S for a, b in audio.gaps)
    ]
