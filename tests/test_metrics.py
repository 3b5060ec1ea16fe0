"""Metrics on hand-checkable inputs: matching edge cases, each measure, the corpus view."""

from __future__ import annotations

import pytest

from v2t_foley.foley_core.metrics import (
    EmbeddingSimilarity,
    match_cues,
    score_corpus,
    score_script,
    temporal_iou,
)
from v2t_foley.foley_core.schema import Cue, FoleyScript


def cue(start: float, end: float | None = None, text: str = "a sound") -> Cue:
    return Cue.at(start, start if end is None else end, text)


def exact_words(a: list[str], b: list[str]) -> list[float]:
    """A similarity you can check by eye: 1 for the same text, else 0."""
    return [1.0 if x == y else 0.0 for x, y in zip(a, b, strict=True)]


def test_two_predictions_for_one_reference():
    pairs = match_cues([cue(1.0), cue(1.2)], [cue(1.1)], tolerance=0.5)
    assert len(pairs) == 1
    score = score_script(FoleyScript(fx=[cue(1.0), cue(1.2)]), FoleyScript(fx=[cue(1.1)]))
    assert (score.tracks["fx"].tp, score.tracks["fx"].fp, score.tracks["fx"].fn) == (1, 1, 0)
    assert score.tracks["fx"].precision == 0.5 and score.tracks["fx"].recall == 1.0
    assert score.tracks["fx"].f1 == pytest.approx(2 / 3)


def test_matching_maximises_the_number_of_pairs():
    # greedy nearest-first would pair 1.4 with 1.0 and leave 0.6 alone; one-to-one finds two pairs
    pairs = match_cues([cue(0.6), cue(1.4)], [cue(1.0), cue(1.8)], tolerance=0.45)
    assert sorted(pairs) == [(0, 0), (1, 1)]


def test_tolerance_is_inclusive_and_per_track():
    ref = FoleyScript(foley=[cue(2.0)], fx=[cue(5.0)])
    pred = FoleyScript(foley=[cue(2.5)], fx=[], ambience=[cue(5.0)])
    score = score_script(pred, ref, tolerance=0.5)
    assert score.tracks["foley"].tp == 1  # exactly at the tolerance
    assert (score.tracks["fx"].fn, score.tracks["ambience"].fp) == (1, 1)  # right time, wrong track
    assert (score.overall.tp, score.overall.fp, score.overall.fn) == (1, 1, 1)


def test_empty_tracks():
    score = score_script(FoleyScript(), FoleyScript())
    assert all((s.precision, s.recall) == (1.0, 1.0) for s in score.tracks.values())
    missing = score_script(FoleyScript(), FoleyScript(dialogue=[cue(1.0)]))
    assert (missing.tracks["dialogue"].precision, missing.tracks["dialogue"].recall) == (1.0, 0.0)
    assert missing.tracks["dialogue"].f1 == 0.0
    invented = score_script(FoleyScript(dialogue=[cue(1.0)]), FoleyScript())
    assert (invented.tracks["dialogue"].precision, invented.tracks["dialogue"].recall) == (0.0, 1.0)


def test_cues_at_zero_and_at_the_end():
    ref = FoleyScript(ambience=[cue(0.0, 10.0)], fx=[cue(10.0)])
    pred = FoleyScript(ambience=[cue(0.0, 5.0)], fx=[cue(9.8, 10.0)])
    score = score_script(pred, ref)
    assert score.tracks["ambience"].tp == 1 and score.tracks["ambience"].ious == [0.5]
    assert score.tracks["fx"].tp == 1 and score.tracks["fx"].onset_errors == [pytest.approx(0.2)]


def test_temporal_iou():
    assert temporal_iou(cue(0, 2), cue(1, 3)) == pytest.approx(1 / 3)
    assert temporal_iou(cue(0, 1), cue(2, 3)) == 0.0
    assert temporal_iou(cue(4), cue(4)) == 1.0 and temporal_iou(cue(4), cue(4.1)) == 0.0


def test_similarity_of_matched_cues_only():
    ref = FoleyScript(foley=[cue(1.0, text="steps"), cue(3.0, text="door")])
    pred = FoleyScript(foley=[cue(1.1, text="steps"), cue(3.0, text="car"), cue(7.0, text="extra")])
    score = score_script(pred, ref, similarity=exact_words)
    assert score.tracks["foley"].similarities == [1.0, 0.0]


def test_corpus_counts_invalid_predictions():
    ref = FoleyScript(fx=[cue(1.0)])
    corpus = score_corpus({"a": (FoleyScript(fx=[cue(1.0)]), ref), "b": (None, ref)})
    assert corpus.json_validity == 0.5
    assert (corpus.overall.tp, corpus.overall.fn) == (1, 1)
    assert corpus.summary()["per_video"]["b"]["valid"] is False


def test_embedding_similarity_ranks_paraphrases_first():
    """The real offline sentence-embedding model (shipped inside its package)."""
    similarity = EmbeddingSimilarity()
    same, other = similarity(
        ["A door slams shut.", "A door slams shut."], ["Someone slams the door.", "Birds sing in the trees."]
    )
    assert same > other + 0.3
