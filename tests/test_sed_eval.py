"""`foley eval`'s event F1 against sed_eval's event-based F1 (onset only, the same collar, optimal
one-to-one matching, each track as an event class), on the synthetic references and on hand-made
cases with misses, extras and onsets near the collar. Where the definitions differ (empty sides) the
module docstring of foley_core.metrics says how; those cases are checked here too."""

from __future__ import annotations

import math
import random
import warnings

import pytest

from v2t_foley.flows.demo import DEMO_CLIPS
from v2t_foley.foley_core.metrics import score_corpus
from v2t_foley.foley_core.schema import Cue, FoleyScript
from v2t_foley.foley_core.schema.script import TRACKS
from v2t_foley.foley_core.synthetic import SceneSpec, reference_script

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sed_eval = pytest.importorskip("sed_eval")


def events(video: str, script: FoleyScript) -> list[dict]:
    return [
        {"filename": video, "event_label": track, "onset": c.start, "offset": c.end}
        for track in TRACKS
        for c in script.track(track)
    ]


def sed_eval_scores(pairs: dict[str, tuple[FoleyScript, FoleyScript]], collar: float):
    metrics = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=list(TRACKS),
        t_collar=collar,
        evaluate_onset=True,
        evaluate_offset=False,
        event_matching_type="optimal",
    )
    for video, (pred, ref) in sorted(pairs.items()):
        metrics.evaluate(reference_event_list=events(video, ref), estimated_event_list=events(video, pred))
    return metrics


def assert_agree(pairs: dict[str, tuple[FoleyScript, FoleyScript]], collar: float) -> None:
    ours = score_corpus(pairs, tolerance=collar)
    theirs = sed_eval_scores(pairs, collar)
    for track in TRACKS:
        counts = theirs.class_wise[track]
        score = ours.tracks[track]
        assert (score.tp, score.tp + score.fp, score.tp + score.fn) == (
            counts["Ntp"],
            counts["Nsys"],
            counts["Nref"],
        ), track
        if counts["Nsys"] and counts["Nref"]:  # where the definitions meet (see foley_core.metrics)
            f = theirs.results_class_wise_metrics()[track]["f_measure"]
            assert score.f1 == pytest.approx(f["f_measure"], abs=1e-9), track
            assert score.precision == pytest.approx(f["precision"], abs=1e-9)
            assert score.recall == pytest.approx(f["recall"], abs=1e-9)
    overall = theirs.results_overall_metrics()["f_measure"]
    if not (ours.overall.tp + ours.overall.fp and ours.overall.tp + ours.overall.fn):
        return  # sed_eval leaves P, R, F undefined (nan) with no output or no reference
    assert ours.overall.f1 == pytest.approx(overall["f_measure"], abs=1e-9)
    assert ours.overall.precision == pytest.approx(overall["precision"], abs=1e-9)
    assert ours.overall.recall == pytest.approx(overall["recall"], abs=1e-9)


def cue(start: float, end: float | None = None) -> Cue:
    return Cue.at(start, start + 0.1 if end is None else end, "a sound")


def perturbed(script: FoleyScript, rng: random.Random) -> FoleyScript:
    """A prediction a model might write: onsets moved (some past the collar), cues missed, extras."""
    tracks = {}
    for track in TRACKS:
        out = []
        for c in script.track(track):
            if rng.random() < 0.2:
                continue  # a miss
            shift = rng.choice([0.0, 0.1, -0.3, 0.45, 0.5, -0.5, 0.55, 1.2])
            start = max(0.0, c.start + shift)
            out.append(Cue.at(start, max(start, c.end + shift), c.description))
        if rng.random() < 0.4:
            out.append(cue(rng.uniform(0, 4)))  # an extra
        tracks[track] = sorted(out, key=lambda c: c.start)
    return FoleyScript(**tracks)


@pytest.mark.parametrize("collar", [0.2, 0.5, 1.0])
def test_synthetic_references_agree_with_sed_eval(collar):
    rng = random.Random(7)
    specs = [SceneSpec(), *DEMO_CLIPS]
    refs = {f"clip{k}": reference_script(spec) for k, spec in enumerate(specs)}
    assert_agree({v: (ref, ref) for v, ref in refs.items()}, collar)  # a perfect prediction
    for _ in range(5):
        assert_agree({v: (perturbed(ref, rng), ref) for v, ref in refs.items()}, collar)


def test_hand_made_cases_agree_with_sed_eval():
    ref = FoleyScript(
        foley=[cue(1.0), cue(2.0), cue(3.0)],
        fx=[cue(0.6), cue(1.5)],
        ambience=[cue(0.0, 4.0)],
        dialogue=[cue(0.5, 2.0)],
    )
    pred = FoleyScript(
        foley=[cue(1.2), cue(1.4), cue(3.6)],  # one hit, one extra near the same reference, one late
        fx=[cue(1.1), cue(2.0)],  # 1.1 - 0.6 is 0.5000000000000001 in floats: outside a 0.5 collar
        ambience=[cue(0.5, 4.0)],  # exactly at the collar: inside
        dialogue=[cue(0.5, 2.0), cue(3.0)],  # one hit, one extra
    )
    pairs = {"a": (pred, ref), "b": (ref, ref)}
    assert_agree(pairs, 0.5)
    ours = score_corpus(pairs, tolerance=0.5)
    assert (ours.tracks["fx"].tp, ours.tracks["ambience"].tp) == (3, 2)  # with b's, a perfect one
    # the greedy-looking trap: 0.6 and 1.4 against 1.0 and 1.8 both match with one-to-one matching
    tricky = {"c": (FoleyScript(fx=[cue(0.6), cue(1.4)]), FoleyScript(fx=[cue(1.0), cue(1.8)]))}
    assert_agree(tricky, 0.45)
    assert score_corpus(tricky, tolerance=0.45).tracks["fx"].tp == 2
    # a missing prediction (invalid JSON) misses every reference cue
    assert_agree({"d": (FoleyScript(), ref)}, 0.5)


def test_where_the_definitions_differ_empty_tracks():
    """sed_eval leaves P/R/F undefined (nan) for a side with no event; we say: no prediction,
    precision 1 and F1 0; a track empty on both sides, F1 1."""
    ref = FoleyScript(fx=[cue(1.0)])
    pairs = {"a": (FoleyScript(), ref)}
    ours, theirs = score_corpus(pairs), sed_eval_scores(pairs, 0.5)
    assert ours.tracks["foley"].f1 == 1.0
    assert math.isnan(theirs.results_class_wise_metrics()["foley"]["f_measure"]["f_measure"])
    assert ours.tracks["fx"].precision == 1.0
    assert math.isnan(theirs.results_class_wise_metrics()["fx"]["f_measure"]["precision"])
    assert ours.tracks["fx"].f1 == 0.0 and ours.tracks["fx"].recall == 0.0
    assert theirs.results_class_wise_metrics()["fx"]["f_measure"]["recall"] == 0.0
