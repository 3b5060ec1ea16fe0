"""Scale benchmark: what one build costs the Prefect server per video, as N grows.

    python bench/scale.py --videos 64 256 1024 --out bench/results/scale.jsonl

For each N: a fresh `prefect server start` (SQLite) on 127.0.0.1, N short generated clips (distinct
content), one build-dataset run with the tiny model and `--timing model` (the orchestration is under
test, not the model), shards of 64. Reported per N, from the server's own database after the run:
task runs, flow runs, flow- and task-run states, events, log rows, database bytes (growth over the
empty database), API requests made by the build (counted on the client's HTTP transport), and wall
time; each also per video. One JSON line per N.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_clips(folder: Path, n: int) -> str:
    from v2t_foley.foley_core.manifest import write_manifest
    from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        spec = SceneSpec(duration=1.0, cuts=(), clicks=(0.3 + 0.05 * (k % 10),), seed=k, width=64, height=48)
        rows.append({"video": str(write_scene_video(folder / f"v{k}.mp4", spec)), "id": f"v{k}"})
    return write_manifest(rows, str(folder / "manifest.csv"))


def count_requests() -> list[int]:
    """Count every HTTP request the Prefect client sends (sync and async transports)."""
    import httpx

    counter = [0]
    for cls in (httpx.Client, httpx.AsyncClient):
        original = cls.send

        if cls is httpx.Client:

            def send(self, request, *args, _original=original, **kwargs):
                counter[0] += 1
                return _original(self, request, *args, **kwargs)

        else:

            async def send(self, request, *args, _original=original, **kwargs):
                counter[0] += 1
                return await _original(self, request, *args, **kwargs)

        cls.send = send
    return counter


def database_counts(path: Path) -> dict[str, int]:
    tables = {
        "task_runs": "task_run",
        "flow_runs": "flow_run",
        "task_run_states": "task_run_state",
        "flow_run_states": "flow_run_state",
        "events": "events",
        "logs": "log",
    }
    with sqlite3.connect(path) as db:
        return {
            name: db.execute(f"select count(*) from {table}").fetchone()[0] for name, table in tables.items()
        }


def run_one(n: int, root: Path) -> dict:
    from tests.servers import prefect_server

    manifest = make_clips(root / f"clips-{n}", n)
    home = root / f"prefect-{n}"
    with prefect_server(home, root / f"server-{n}.log") as (_url, env):
        os.environ.update({k: env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME")})
        database = home / "prefect.db"
        time.sleep(2)  # let the server finish its own start-up writes
        empty_bytes = database.stat().st_size
        from v2t_foley.flows.build_dataset import build_dataset

        requests = count_requests()
        started = time.perf_counter()
        summary = build_dataset(
            manifest=manifest,
            store=str(root / f"store-{n}"),
            model="tiny-random",
            timing="model",
            shard_size=64,
        )
        seconds = time.perf_counter() - started
        time.sleep(5)  # events and logs reach the database asynchronously
        with sqlite3.connect(database) as db:
            db.execute("pragma wal_checkpoint(TRUNCATE)")
        grown = database.stat().st_size - empty_bytes
        counts = database_counts(database)
    result = {
        "videos": n,
        "ok_rows": summary.new_ok_rows,
        "shards": summary.shards,
        **counts,
        "db_bytes": grown,
        "api_requests": requests[0],
        "seconds": round(seconds, 1),
    }
    for key in ("task_runs", "task_run_states", "events", "logs", "db_bytes", "api_requests", "seconds"):
        result[f"{key}_per_video"] = round(result[key] / n, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="foley-scale-"))
    os.environ.setdefault("FOLEY_CACHE_DIR", str(root / "cache"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # what a deployment ships to the API
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    for n in args.videos:
        # each N in its own process: a fresh client, fresh module state, its own server
        if len(args.videos) > 1:
            cmd = [sys.executable, __file__, "--videos", str(n)] + (
                ["--out", str(args.out)] if args.out else []
            )
            subprocess.run(cmd, check=True)
            continue
        result = run_one(n, root) | {"commit": commit.stdout.strip(), "cpus": os.cpu_count()}
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(line + "\n")


if __name__ == "__main__":
    main()
