"""Synthetic timing benchmark: clips with known cuts, motion, clicks and speech, and their references.

    python bench/timing_benchmark.py --clips 8            # prints the tables, writes bench-timing/ (JSON)

1. Proposals against the truth: cut recall / precision (within one frame), and the median absolute
   onset error in frames of cuts, audio clicks and motion onsets (appearance and motion starts).
2. The chain with the tiny random model, in `measured` and `model` timing, scored against the
   reference scripts (event F1 at 0.5 s, mean IoU) and by how far each cue's start lies from the
   nearest true onset, in frames. The tiny model's words are meaningless; its times in `model` mode are
   guesses, which is the point of the side-by-side.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
from pathlib import Path

from v2t_foley.foley_core.synthetic import SceneSpec


def random_spec(rng: random.Random, k: int) -> SceneSpec:
    """8-second clips; events at least 0.6 s apart so the truth is unambiguous."""
    fps = rng.choice([12.0, 24.0, 25.0])
    slots = sorted(rng.sample([round(0.6 * i, 2) for i in range(1, 13)], 7))
    cuts = tuple(sorted(slots[:2]))
    clicks = tuple(sorted({round(slots[2] + 0.05, 3), round(slots[3] + 0.05, 3)}))
    start = slots[4]
    motions = ((start, round(start + 0.5, 2)),)
    speech = ((7.0, 7.8),) if k % 2 == 0 else ()
    return SceneSpec(
        duration=8.0,
        fps=fps,
        cuts=cuts,
        motions=motions,
        appear=round(slots[5] / 10 + 0.1, 2),
        clicks=clicks,
        speech=speech,
        seed=k,
    )


def frames_error(found: list[float], truth: list[float], fps: float) -> list[float]:
    return [min(abs(f - t) for f in found) * fps for t in truth] if found else [float("inf")] * len(truth)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--out", default="bench-timing")
    args = parser.parse_args()
    os.environ.setdefault("FOLEY_CACHE_DIR", str(Path(tempfile.gettempdir()) / "foley-bench-cache"))

    from v2t_foley.foley_core.backends import BackendSpec, load_backend
    from v2t_foley.foley_core.chain import ChainConfig, run_chain
    from v2t_foley.foley_core.metrics import score_corpus
    from v2t_foley.foley_core.proposals import propose
    from v2t_foley.foley_core.synthetic import reference_script, write_scene_video
    from v2t_foley.foley_core.video import open_video

    out = Path(args.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    llm = load_backend(BackendSpec(model="tiny-random"))
    cut_errors, click_errors, motion_errors = [], [], []
    cut_tp = cut_found = cut_true = 0
    pairs = {"measured": {}, "model": {}}
    cue_errors = {"measured": [], "model": []}
    for k in range(args.clips):
        spec = random_spec(rng, k)
        path = write_scene_video(out / "videos" / f"clip{k}.mp4", spec)
        reference = reference_script(spec)
        (out / "videos" / f"clip{k}.json").write_text(reference.model_dump_json())
        video = open_video(str(path))
        proposals = propose(video)
        found = [c.start for c in proposals.cuts]
        cut_found += len(found)
        cut_true += len(spec.cuts)
        errors = frames_error(found, list(spec.cuts), spec.fps)
        cut_errors += errors
        cut_tp += sum(e <= 1 for e in errors)
        click_errors += frames_error([o.start for o in proposals.onsets], list(spec.clicks), spec.fps)
        motion_truth = [spec.appear] + [a for a, _b in spec.motions]
        motion_errors += frames_error([m.start for m in proposals.motion], motion_truth, spec.fps)
        truth = [c.start for _track, c in reference.cues()]
        for timing in ("measured", "model"):
            result = run_chain(video, llm, config=ChainConfig(timing=timing))
            pairs[timing][f"clip{k}"] = (result.script, reference)
            cue_errors[timing] += frames_error(truth, [c.start for _t, c in result.script.cues()], spec.fps)

    def median(values):
        return round(statistics.median(values), 2) if values else None

    proposals_table = {
        "clips": args.clips,
        "cut_recall": round(cut_tp / cut_true, 3) if cut_true else None,
        "cut_precision": round(cut_tp / cut_found, 3) if cut_found else None,
        "cut_median_error_frames": median(cut_errors),
        "click_median_error_frames": median(click_errors),
        "click_within_1_frame": round(sum(e <= 1 for e in click_errors) / len(click_errors), 3),
        "motion_median_error_frames": median(motion_errors),
        "motion_within_3_frames": round(sum(e <= 3 for e in motion_errors) / len(motion_errors), 3),
    }
    chain_table = {}
    for timing in ("measured", "model"):
        corpus = score_corpus(pairs[timing])
        chain_table[timing] = {
            "event_f1": round(corpus.overall.f1, 3),
            "precision": round(corpus.overall.precision, 3),
            "recall": round(corpus.overall.recall, 3),
            "mean_iou": corpus.overall.summary()["mean_iou"],
            "cue_start_median_error_frames": median(cue_errors[timing]),
            "cues_within_1_frame_of_a_true_onset": round(
                sum(e <= 1 for e in cue_errors[timing]) / max(len(cue_errors[timing]), 1), 3
            ),
        }
    report = {"proposals": proposals_table, "chain_tiny_model": chain_table}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
