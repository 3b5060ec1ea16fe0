"""What measurement proposes, and the settings of the measurements."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

Kind = Literal["cut", "motion", "audio_onset", "speech"]

# Part of the propose step's cache key: bump it when what `propose` returns changes for the same
# settings (2: damaged audio is skipped and noted instead of failing; `ProposalSet.notes`).
PROPOSALS_VERSION = 2


class Proposal(BaseModel):
    """One measured happening. Times in seconds from the first video frame."""

    kind: Kind  # cut: a shot boundary; motion: something moves; audio_onset: a sound starts; speech
    start: float  # onset (a cut or an audio onset is an instant: start == end)
    end: float  # end of the motion or speech span
    strength: float  # how clear the measurement is (1.0 = at the detection threshold)


class ProposalSet(BaseModel):
    """Everything measured in one video."""

    duration: float
    cuts: list[Proposal] = Field(default_factory=list)
    motion: list[Proposal] = Field(default_factory=list)
    onsets: list[Proposal] = Field(default_factory=list)
    speech: list[Proposal] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # what could not be measured, e.g. damaged audio

    def shots(self) -> list[tuple[float, float]]:
        """Shot spans between cuts, covering the whole video."""
        bounds = [0.0, *sorted(c.start for c in self.cuts), self.duration]
        return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]

    def speech_spans(self) -> list[tuple[float, float]]:
        return [(s.start, s.end) for s in self.speech]


@dataclass(frozen=True)
class ProposalSettings:
    """Thresholds of the measurements. Part of the cache key of the propose step."""

    cut_threshold: float = 27.0  # PySceneDetect ContentDetector threshold
    min_shot_s: float = 0.4  # shorter shots are merged (flash frames)
    analysis_width: int = 96  # frames are scaled to this width for cuts and motion
    motion_floor: float = 1.0  # minimum mean absolute frame difference (0-255) that counts as motion
    motion_mad: float = 4.0  # ... or this many median absolute deviations above the median, if higher
    motion_gap_frames: int = 2  # still gaps shorter than this inside a motion are bridged
    audio_rate: int = 16_000  # audio is analysed as mono at this rate
    onset_hop: int = 128  # onset envelope hop in samples (8 ms at 16 kHz)
    onset_min_strength: float = 5.0  # an onset's envelope peak over the noise floor (median + 3 MAD)
    vad_threshold: float = 0.5  # silero-vad speech probability threshold
    window_min_s: float = 0.4  # candidate windows are at least this long
    window_max_s: float = 4.0  # and at most this long (longer spans are split)
