"""What a build's runs on a work pool cost the Prefect server: making them, watching them, cancelling them.

    PYTHONPATH=. python3 bench/pool_runs.py --runs 256 1024 > bench/results/cpu-pool-runs.jsonl

A build on a pool (flows/shard_runs.py) starts a run per shard, up to 256, by default, and while it
waits it reads their states every few seconds. For each N: a fresh `prefect server start` (SQLite) on
127.0.0.1, a process work pool with a `process-shards` deployment and no worker, and inside a flow (as
build-dataset does) N `run_deployment` calls with a real job's parameters; then one look at their
states as the build reads them now (`_states`: 200 a request) and as it read them before (a request
a run); then every run cancelled, as a build does once every shard is marked. Wall times and API
requests (counted on the client's HTTP transports) of each, and the bytes of a run's parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def run_one(runs: int, root: Path) -> dict:
    from scale import count_requests

    from tests.servers import prefect_server

    home = root / f"prefect-{runs}"
    with prefect_server(home, root / f"server-{runs}.log") as (_url, env):
        os.environ.update({k: env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME")})
        from prefect import flow
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.deployments import run_deployment

        from v2t_foley.flows.shard_runs import _cancel_unstarted, _states
        from v2t_foley.foley_core.backends import BackendSpec
        from v2t_foley.tasks.job import ChainJob

        pool = f"bench-{uuid.uuid4().hex[:6]}"
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            flow_id = client.create_flow_from_name("process-shards")
            client.create_deployment(flow_id=flow_id, name=pool, work_pool_name=pool)
        job = ChainJob(backend=BackendSpec())  # the default model and chain, as a build passes them
        requests = count_requests()
        result: dict = {"runs": runs}

        @flow(name="build-dataset-bench")
        def build() -> None:
            def timed(name: str, work) -> object:
                before, started = requests[0], time.perf_counter()
                out = work()
                result[f"{name}_s"] = round(time.perf_counter() - started, 2)
                result[f"{name}_requests"] = requests[0] - before
                return out

            made = timed(
                "make",
                lambda: [
                    run_deployment(
                        name=f"process-shards/{pool}",
                        parameters={
                            "store": "s3://bucket/store",
                            "job": job,
                            "run_id": "bench",
                            "indexes": [index],
                            "shard_count": runs,
                            "result_storage_uri": None,
                            "retry_failed": False,
                        },
                        timeout=0,
                    ).id
                    for index in range(runs)
                ],
            )
            result["parameters_bytes"] = len(json.dumps(client_parameters(made[0]), default=str))
            pending = dict.fromkeys(made)
            with get_client(sync_client=True) as client:
                states = timed("look_paged", lambda: _states(client, pending))
                assert all(state is not None and state.is_scheduled() for state in states.values())
                timed("look_one_by_one", lambda: {run: client.read_flow_run(run).state for run in pending})
                timed("cancel", lambda: _cancel_unstarted(client, pending, "bench"))
                assert not pending

        def client_parameters(run_id) -> dict:
            with get_client(sync_client=True) as client:
                return client.read_flow_run(run_id).parameters

        build()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[256])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="foley-pool-runs-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    for runs in args.runs:
        if len(args.runs) > 1:  # each N in its own process: a fresh client and its own server
            subprocess.run([sys.executable, __file__, "--runs", str(runs)], check=True)
            continue
        result = run_one(runs, root) | {"commit": commit.stdout.strip(), "cpus": os.cpu_count()}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
