"""The cluster path, for real: `prefect server start`, a process work pool `gpu`, the deployments of
deployments/prefect.yaml registered with `prefect deploy`, a worker, and `prefect deployment run`.
The build-dataset run fans its shards out as process-shard deployment runs on the same pool."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import datasets
import pytest

from tests.conftest import make_manifest_videos
from tests.servers import prefect_server, stop

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def prefect(env: dict, *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def api(url: str, path: str, body: dict | None = None) -> object:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_for_final(url: str, run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api(url, f"/flow_runs/{run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(2)
    raise TimeoutError(f"flow run {run_id} did not finish in {timeout} s")


def wait_for_events(url: str, name: str, count: int, timeout: float = 60) -> list[dict]:
    """Events reach the server asynchronously: poll until `count` of them are there."""
    deadline = time.monotonic() + timeout
    while True:
        found = api(url, "/events/filter", {"filter": {"event": {"prefix": [name]}}, "limit": 50})["events"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_deployment_run_on_a_real_server(tmp_path, foley_cache, bad_videos):
    manifest, durations = make_manifest_videos(tmp_path / "videos", {"empty": bad_videos["empty"]})
    store = tmp_path / "store"
    with prefect_server(tmp_path / "prefect-home", tmp_path / "server.log") as (url, env):
        env = {
            **env,
            "FOLEY_CACHE_DIR": str(foley_cache),
            "WORKER_ID": "test-gpu-1",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        prefect(env, "work-pool", "create", "gpu", "--type", "process")
        prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        with open(tmp_path / "worker.log", "w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            out = prefect(
                env,
                "deployment",
                "run",
                "build-dataset/nightly",
                "--param",
                f"manifest={manifest}",
                "--param",
                f"store={store}",
                "--param",
                "model=tiny-random",
                "--param",
                "shard_size=3",
            )
            run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
            run = wait_for_final(url, run_id, timeout=420)
            assert run["state"]["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            stop(worker)

        runs = api(url, "/flow_runs/filter", {"limit": 50})
        assert len(runs) == 3 and all(r["state"]["type"] == "COMPLETED" for r in runs)
        assert len({r["deployment_id"] for r in runs}) == 2  # nightly once, and process-shard/gpu per shard
        (event,) = wait_for_events(url, "foley.dataset.updated", count=1)
        assert event["payload"]["store"] == str(store) and event["payload"]["new_ok_rows"] == 3
        limits = api(url, "/v2/concurrency_limits/filter", {})
        assert any(limit["name"] == "gpu:test-gpu-1" for limit in limits)

    loaded = datasets.load_dataset(str(store))
    rows = {row["id"]: row for split in loaded.values() for row in split}
    assert {k for k, r in rows.items() if r["status"] == "ok"} == set(durations)
    assert rows["bad-empty"]["error_kind"] == "empty" and rows["bad-blank"]["error_kind"] == "manifest_row"
    assert not os.path.exists(store / "_tmp") or not list((store / "_tmp").iterdir())
