"""Measured proposals on generated clips whose cuts, motion, clicks and speech are known."""

from __future__ import annotations

import numpy as np
import pytest

from v2t_foley.foley_core.proposals import ProposalSet, ProposalSettings, candidate_windows, propose
from v2t_foley.foley_core.proposals.base import Proposal
from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
from v2t_foley.foley_core.video import open_video

SPECS = {
    "mp4-12fps": (
        ".mp4",
        SceneSpec(
            duration=6.0,
            fps=12.0,
            cuts=(2.0, 4.5),
            motions=((0.5, 1.5), (3.0, 3.5)),
            appear=0.25,
            clicks=(1.25, 3.75),
            speech=((4.6, 5.8),),
        ),
    ),
    "mkv-25fps-pcm": (
        ".mkv",
        SceneSpec(
            duration=5.0,
            fps=25.0,
            cuts=(1.6,),
            motions=((2.2, 3.0),),
            appear=0.4,
            clicks=(1.0, 3.6),
            speech=(),
        ),
    ),
}


@pytest.fixture(scope="module", params=list(SPECS))
def measured(request, tmp_path_factory) -> tuple[SceneSpec, ProposalSet]:
    suffix, spec = SPECS[request.param]
    path = write_scene_video(tmp_path_factory.mktemp("prop") / f"clip{suffix}", spec)
    return spec, propose(open_video(str(path)))


def frames_off(found: list[float], truth: list[float], fps: float) -> list[float]:
    """For each true time, the distance in frames to the nearest found time."""
    return [min(abs(f - t) for f in found) * fps if found else np.inf for t in truth]


def test_cuts_within_one_frame_and_nothing_else(measured):
    spec, proposals = measured
    found = [c.start for c in proposals.cuts]
    assert len(found) == len(spec.cuts)
    assert max(frames_off(found, list(spec.cuts), spec.fps)) <= 1


def test_clicks_within_one_frame(measured):
    spec, proposals = measured
    found = [o.start for o in proposals.onsets]
    assert max(frames_off(found, list(spec.clicks), spec.fps)) <= 1
    assert len(found) <= len(spec.clicks) + 1  # at most one spurious onset


def test_motion_onsets_within_three_frames(measured):
    spec, proposals = measured
    truth = [spec.appear] + [a for a, _b in spec.motions]
    assert max(frames_off([m.start for m in proposals.motion], truth, spec.fps)) <= 3
    ends = [b for _a, b in spec.motions]
    assert max(frames_off([m.end for m in proposals.motion], ends, spec.fps)) <= 3


def test_speech_segments(measured):
    spec, proposals = measured
    assert len(proposals.speech) == len(spec.speech)
    for (a, b), found in zip(spec.speech, proposals.speech, strict=True):
        # the start is sharp; where a synthetic voice "ends" is the detector's call: at least half of it
        assert abs(found.start - a) <= 0.1 and a + (b - a) / 2 <= found.end <= b + 0.3


def test_shots_cover_the_video(measured):
    spec, proposals = measured
    shots = proposals.shots()
    assert shots[0][0] == 0.0 and shots[-1][1] == pytest.approx(spec.duration, abs=1 / spec.fps)
    assert len(shots) == len(spec.cuts) + 1


def test_windows_join_an_onset_at_the_start_of_a_motion():
    proposals = ProposalSet(
        duration=10.0,
        motion=[
            Proposal(kind="motion", start=2.0, end=3.0, strength=2.0),
            Proposal(kind="motion", start=5.0, end=14.0, strength=2.0),
        ],
        onsets=[
            Proposal(kind="audio_onset", start=2.1, end=2.1, strength=9.0),
            Proposal(kind="audio_onset", start=7.0, end=7.0, strength=6.0),
        ],
        speech=[Proposal(kind="speech", start=8.0, end=9.5, strength=1.0)],
    )
    windows = candidate_windows(proposals, ProposalSettings(window_min_s=0.4, window_max_s=4.0))
    kinds = [(round(w.start, 2), round(w.end, 2), round(w.onset, 2), w.kind) for w in windows]
    assert (2.0, 3.0, 2.1, "motion+audio") in kinds  # the sound's onset places the cue
    assert (7.0, 7.4, 7.0, "audio_onset") in kinds  # an onset mid-motion is its own event
    assert [k for k in kinds if k[3] == "motion" and k[0] >= 5.0] == [
        (5.0, 9.0, 5.0, "motion"),
        (9.0, 10.0, 9.0, "motion"),
    ]  # long motion split, clipped to the video
    assert (8.0, 9.5, 8.0, "speech") in kinds
    assert len(candidate_windows(proposals, max_windows=2)) == 2


def test_measured_chain_places_every_cue_on_a_true_onset(measured, tiny_llm, tmp_path):
    """Script level: with measured timing, whatever the (random) model says, each cue starts within
    one frame of a true onset (a cut, a click, an appearance, a motion or speech start, or 0)."""
    from v2t_foley.foley_core.chain import run_chain
    from v2t_foley.foley_core.schema import validate_script
    from v2t_foley.foley_core.synthetic import reference_script

    spec, _proposals = measured
    path = write_scene_video(tmp_path / "clip.mp4", spec)
    video = open_video(str(path))
    result = run_chain(video, tiny_llm)
    validate_script(result.script, video.info.duration)
    truth = [0.0] + [cue.start for _track, cue in reference_script(spec).cues()]
    cues = result.script.cues()
    assert cues
    assert max(frames_off(truth, [cue.start for _t, cue in cues], spec.fps)) <= 1
