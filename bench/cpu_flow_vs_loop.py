"""CPU benchmark: the build-dataset flow vs the same foley_core calls in a plain loop.

    python bench/cpu_flow_vs_loop.py --videos 24

Tiny random model, generated clips. Measures, in one process:
- loop:        open_video -> run_chain -> ok_row for each video, then one write_shard
- flow cold:   build-dataset into a fresh store with an empty step cache
- flow rerun:  the same manifest into the same store (everything already done)
- flow cached: a fresh store with the warm step cache (every chain step from the cache)
The Prefect server (test harness) is started before timing, as a deployment's server would be.
Prints one JSON line per measurement and a summary line with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--shard-size", type=int, default=64)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="foley-bench-"))
    os.environ.setdefault("FOLEY_CACHE_DIR", str(root / "cache"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from prefect.testing.utilities import prefect_test_harness

    from v2t_foley.flows.build_dataset import build_dataset, new_run_id
    from v2t_foley.foley_core.backends import BackendSpec, load_backend, load_shared_backend
    from v2t_foley.foley_core.chain import run_chain
    from v2t_foley.foley_core.manifest import read_manifest, write_manifest
    from v2t_foley.foley_core.prompts import load_prompts
    from v2t_foley.foley_core.records import ok_row
    from v2t_foley.foley_core.store import DatasetStore
    from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
    from v2t_foley.foley_core.video import open_video

    rows = []
    for k in range(args.videos):
        spec = SceneSpec(
            duration=args.duration, cuts=(args.duration / 2,), clicks=(0.4 + 0.1 * (k % 5),), seed=k
        )
        rows.append({"video": str(write_scene_video(root / f"v{k}.mp4", spec)), "id": f"v{k}"})
    manifest = write_manifest(rows, str(root / "manifest.csv"))
    spec = BackendSpec(model="tiny-random")
    # model loads are outside every timing: the loop's own model, and the flow's shared one
    llm = load_backend(spec)
    load_shared_backend(spec)
    results = {}

    def log(name: str, seconds: float, **extra) -> None:
        results[name] = seconds
        print(
            json.dumps({"measure": name, "seconds": round(seconds, 3), "videos": args.videos, **extra}),
            flush=True,
        )

    started = time.perf_counter()
    prompts, store = load_prompts(), DatasetStore(str(root / "loop-store"))
    loop_rows = []
    for entry in read_manifest(manifest):
        video = open_video(entry.video)
        loop_rows.append(ok_row(entry, video, run_chain(video, llm, prompts), spec, "loop"))
    store.write_shard(loop_rows, new_run_id(), 0)
    log("loop", time.perf_counter() - started)

    with prefect_test_harness(server_startup_timeout=120):
        common = {"manifest": manifest, "model": "tiny-random", "shard_size": args.shard_size}
        started = time.perf_counter()
        cold = build_dataset(store=str(root / "flow-store"), **common)
        log("flow_cold", time.perf_counter() - started, computed=cold.computed)
        started = time.perf_counter()
        build_dataset(store=str(root / "flow-store"), **common)
        log("flow_rerun", time.perf_counter() - started)
        started = time.perf_counter()
        cached = build_dataset(
            store=str(root / "flow-store-2"), result_storage=str(root / "flow-store/_cache"), **common
        )
        log("flow_cached", time.perf_counter() - started, computed=cached.computed)
    print(
        json.dumps(
            {
                "summary": True,
                "flow_over_loop": round(results["flow_cold"] / results["loop"], 3),
                "rerun_over_cold": round(results["flow_rerun"] / results["flow_cold"], 4),
                "cached_over_cold": round(results["flow_cached"] / results["flow_cold"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
