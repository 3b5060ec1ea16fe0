"""Long videos: time and peak memory per minute of video, events per minute, cut accuracy.

Synthetic videos of 1, 10 and 60 minutes (160x120, 5 fps, a cut every 20 s, a click and a motion every
5 s; `foley_core.synthetic.write_regular_video`) go through `run_chain` with the offline tiny-random
model on CPU, each in a fresh process (peak RSS is that process's ru_maxrss; time is measured after a
warm-up run on a 3-second clip, so imports, compiles and the model's load are not counted per minute).
`--stage propose` runs only the measurements (the part that reads the whole video), which makes a
60-minute run cheap.

    PYTHONPATH=. python3 bench/long_video.py --minutes 1 10 --stage chain
    PYTHONPATH=. python3 bench/long_video.py --minutes 1 10 60 --stage propose

One JSON line per run goes to bench/results/long_video.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def one(path: str, stage: str, cuts: list[float], fps: float) -> dict:
    """Runs in the child process."""
    from v2t_foley.foley_core.chain import ChainConfig, run_chain
    from v2t_foley.foley_core.proposals import propose
    from v2t_foley.foley_core.video import open_video

    warm = _warm_up(stage)
    started = time.perf_counter()
    video = open_video(path)
    out: dict = {"duration_s": video.info.duration}
    if stage == "propose":
        proposals = propose(video)
        found = [c.start for c in proposals.cuts]
        out["onsets"] = len(proposals.onsets)
    else:
        started = time.perf_counter()
        result = run_chain(video, warm, config=ChainConfig())
        trace = result.trace
        found = [c["start"] for c in trace.proposals["cuts"]]
        chunks = trace.chunks or [
            {
                "index": 0,
                "start": 0.0,
                "end": trace.duration,
                "events": [0, len(trace.events)],
                "step_seconds": trace.step_seconds,
            }
        ]
        per_minute = [
            (c["events"][1] - c["events"][0]) * 60.0 / (c["end"] - c["start"]) if c.get("events") else 0.0
            for c in chunks
        ]
        out.update(
            events=len(trace.events),
            cues=len(result.script.cues()),
            chunks=len(chunks),
            events_per_min_first_chunk=round(per_minute[0], 2),
            events_per_min_last_chunk=round(per_minute[-1], 2),
            min_events_in_a_chunk=min(
                (c["events"][1] - c["events"][0]) if c.get("events") else 0 for c in chunks
            ),
            last_event_s=max((e.end for e in trace.events), default=0.0),
            # model steps' seconds per chunk at the start and at the end of the video: does a chunk
            # cost more late in a long video (time per minute growing with length)?
            # the tiny random model writes more or fewer tokens depending on the frames it sees: time
            # per minute moves with that, so the model's time is also given per 1,000 new tokens
            new_tokens=sum(c.new_tokens for c in trace.calls),
            model_s_per_1k_tokens=round(
                1000
                * sum(s for k, s in trace.step_seconds.items() if k != "propose")
                / max(sum(c.new_tokens for c in trace.calls), 1),
                3,
            ),
            chunk_s_first_tenth=_chunk_seconds(chunks[: max(1, len(chunks) // 10)]),
            chunk_s_last_tenth=_chunk_seconds(chunks[-max(1, len(chunks) // 10) :]),
        )
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    within = [t for t in cuts if any(abs(t - f) <= 1.0 / fps + 1e-6 for f in found)]
    out.update(cuts_true=len(cuts), cuts_found=len(found), cuts_within_one_frame=len(within))
    return out


def _chunk_seconds(chunks: list[dict]) -> float:
    """Mean of the summed step seconds of these chunks (a whole video counts as one chunk)."""
    totals = [sum((c.get("step_seconds") or {}).values()) for c in chunks]
    return round(sum(totals) / max(len(totals), 1), 3)


def _warm_up(stage: str):
    """Costs paid once per process, not per minute of video: imports, numba compiles, the VAD model and
    (for the chain) the tiny model, by running the same stage on a 3-second clip first."""
    import tempfile

    from v2t_foley.foley_core.chain import run_chain
    from v2t_foley.foley_core.proposals import propose
    from v2t_foley.foley_core.synthetic import write_regular_video
    from v2t_foley.foley_core.video import open_video

    with tempfile.TemporaryDirectory() as folder:
        path, _, _ = write_regular_video(f"{folder}/warm.mp4", 3.0)
        if stage == "propose":
            propose(open_video(str(path)))
            return None
        from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM

        llm = TransformersVideoLLM("tiny-random", device="cpu")
        run_chain(open_video(str(path)), llm)
        return llm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--stage", choices=["chain", "propose"], default="chain")
    parser.add_argument("--folder", default="/tmp/foley-long-video")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--child", nargs=3, metavar=("PATH", "CUTS_JSON", "STAGE"))
    args = parser.parse_args()
    if args.child:
        path, cuts, stage = args.child
        print("RESULT " + json.dumps(one(path, stage, json.loads(cuts), args.fps)))
        return

    from v2t_foley.foley_core.synthetic import write_regular_video

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    for minutes in args.minutes:
        path = folder / f"regular-{minutes:g}min.mp4"
        cuts_file = path.with_suffix(".cuts.json")
        if not path.exists() or not cuts_file.exists():
            _, cuts, _ = write_regular_video(path, minutes * 60.0, fps=args.fps)
            cuts_file.write_text(json.dumps(cuts))
        cuts = json.loads(cuts_file.read_text())
        child = [
            sys.executable,
            __file__,
            "--fps",
            str(args.fps),
            "--child",
            str(path),
            json.dumps(cuts),
            args.stage,
        ]
        done = subprocess.run(child, capture_output=True, text=True, check=False)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{minutes} min: the run failed")
        row = {"minutes": minutes, "stage": args.stage, **json.loads(line[len("RESULT ") :])}
        row["seconds_per_min"] = round(row["seconds"] / minutes, 2)
        row["machine"] = f"{platform.machine()}, {_cores()} cores (CPU)"
        print(json.dumps(row), flush=True)
        with open(RESULTS / "long_video.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
