"""The cluster path, for real: `prefect server start`, a process work pool `gpu`, the deployments of
deployments/prefect.yaml registered with `prefect deploy`, a worker, and `prefect deployment run`.
The build-dataset run deals its shards to process-shards deployment runs on the same pool."""

from __future__ import annotations

import fcntl
import json
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


def wait_for_events(url: str, name: str, store: str, timeout: float = 180) -> list[dict]:
    """Events reach the server asynchronously: poll until one about `store` is there."""
    deadline = time.monotonic() + timeout
    while True:
        found = api(url, "/events/filter", {"filter": {"event": {"prefix": [name]}}, "limit": 50})["events"]
        mine = [e for e in found if e["payload"].get("store") == store]
        if mine or time.monotonic() > deadline:
            return mine
        time.sleep(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, foley_cache):
    """A real Prefect server with the `gpu` process pool and every deployment of prefect.yaml."""
    home = tmp_path_factory.mktemp("cluster")
    with prefect_server(home / "prefect-home", home / "server.log") as (url, env):
        env = {
            **env,
            "FOLEY_CACHE_DIR": str(foley_cache),
            "WORKER_ID": "test-gpu-1",
            "FOLEY_GPU_LOCK_DIR": str(home / "gpu-locks"),
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        prefect(env, "work-pool", "create", "gpu", "--type", "process")
        prefect(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        yield url, env


def deployment_id(url: str, name: str) -> str:
    flow, deployment = name.split("/")
    return api(url, f"/deployments/name/{flow}/{deployment}")["id"]


GPU_QUEUE = ["--work-queue", "default", "--limit", "1"]  # as the README starts them: one run at a time
CONTROL_QUEUE = ["--work-queue", "control"]  # the builds' worker


def start_workers(env: dict, logs: Path, workers: list[tuple[str, str, list[str]]]) -> list[subprocess.Popen]:
    """`prefect worker start --pool gpu` for each (log name, WORKER_ID, queue options); stop them by PID."""
    started = []
    for name, worker_id, queue in workers:
        with open(logs / f"{name}.log", "w") as log:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "prefect", "worker", "start", "--pool", "gpu", *queue],
                    cwd=REPO,
                    env={**env, "WORKER_ID": worker_id},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    return started


def run_build(env: dict, manifest: str, store: Path, shard_size: int, shard_runs: int) -> str:
    """`prefect deployment run build-dataset/nightly` with the tiny model; the flow run's id."""
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
        f"shard_size={shard_size}",
        "--param",
        f"shard_runs={shard_runs}",
    )
    return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)


def test_enough_new_rows_trigger_training_and_too_few_do_not(cluster, tmp_path):
    """The deployment trigger of train-lora/on-new-data, evaluated by the server's automations."""
    url, env = cluster
    train = deployment_id(url, "train-lora/on-new-data")
    few = json.dumps({"store": str(tmp_path / "few")})
    many = json.dumps({"store": str(tmp_path / "many")})
    resource = "foley.dataset.{}"
    prefect(
        env,
        "event",
        "emit",
        "foley.dataset.updated",
        "--resource",
        json.dumps(
            {
                "prefect.resource.id": resource.format("few"),
                "foley.train-ready": "false",
                "foley.rows-since-training": "12",
            }
        ),
        "--payload",
        few,
    )
    prefect(
        env,
        "event",
        "emit",
        "foley.dataset.updated",
        "--resource",
        json.dumps(
            {
                "prefect.resource.id": resource.format("many"),
                "foley.train-ready": "true",
                "foley.rows-since-training": "5000",
            }
        ),
        "--payload",
        many,
    )
    deadline = time.monotonic() + 180
    runs: list = []
    while time.monotonic() < deadline and not runs:
        runs = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [train]}}})
        time.sleep(1)
    time.sleep(3)  # give a wrongly matched second run the time to appear
    runs = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [train]}}})
    assert [r["parameters"]["store"] for r in runs] == [str(tmp_path / "many")]


def test_training_labels_follow_the_threshold():
    from v2t_foley.flows.events import training_labels

    assert training_labels(1500, 400, 1000)["foley.train-ready"] == "true"
    assert training_labels(1300, 400, 1000) == {
        "foley.rows-since-training": "900",
        "foley.train-ready": "false",
    }


def test_deployment_run_on_a_real_server(cluster, tmp_path, bad_videos):
    """build-dataset/nightly run by the `control` queue's worker, with a run per shard (`shard_runs=0`,
    the default): two process-shards/gpu deployment runs. The GPU worker takes one run at a time, and
    the run it starts takes both shards (one model load), each a process-shard subflow run of it; the
    other run does none (cancelled by the build once every shard is finished, or started after and
    finding nothing to take)."""
    url, env = cluster
    manifest, durations = make_manifest_videos(tmp_path / "videos", {"empty": bad_videos["empty"]})
    store = tmp_path / "store"
    # as the README starts them: a GPU worker taking one run at a time, and one for the builds
    workers = start_workers(
        env, tmp_path, [("worker", "test-gpu-1", GPU_QUEUE), ("control", "test-gpu-1", CONTROL_QUEUE)]
    )
    try:
        run_id = run_build(env, manifest, store, shard_size=3, shard_runs=0)
        run = wait_for_final(url, run_id, timeout=420)
        logs = "".join((tmp_path / f"{name}.log").read_text()[-2000:] for name in ("control", "worker"))
        assert run["state"]["type"] == "COMPLETED", logs
    finally:
        for worker in workers:
            stop(worker)

    build, shards = deployment_id(url, "build-dataset/nightly"), deployment_id(url, "process-shards/gpu")
    lanes = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [shards]}}})
    assert sorted(lane["parameters"]["indexes"][0] for lane in lanes) == [0, 1]  # a run per shard
    subflows = [
        r
        for r in api(url, "/flow_runs/filter", {"flow_runs": {"name": {}}})
        if r["parameters"].get("run_id") == lanes[0]["parameters"]["run_id"] and "index" in r["parameters"]
    ]
    assert sorted(r["parameters"]["index"] for r in subflows) == [0, 1]
    assert all(r["state"]["type"] == "COMPLETED" and r["parent_task_run_id"] for r in subflows)
    parents = {api(url, f"/task_runs/{r['parent_task_run_id']}")["flow_run_id"] for r in subflows}
    (lane,) = [lane for lane in lanes if lane["id"] in parents]  # one run took both shards
    assert lane["state"]["type"] == "COMPLETED"
    (other,) = [other for other in lanes if other["id"] != lane["id"]]
    assert other["state"]["type"] in ("CANCELLED", "COMPLETED"), other["state"]
    assert api(url, f"/flow_runs/{run_id}")["deployment_id"] == build
    assert api(url, f"/flow_runs/{run_id}")["work_queue_name"] == "control"
    assert lane["work_queue_name"] == "default"
    events = wait_for_events(url, "foley.dataset.updated", str(store))
    (event,) = events
    assert event["payload"]["new_ok_rows"] == 3 and event["resource"]["foley.train-ready"] == "false"
    slot = Path(env["FOLEY_GPU_LOCK_DIR"]) / "foley-gpu-test-gpu-1-0.lock"
    assert slot.read_text().strip().isdigit()  # the run took its worker's GPU slot (its pid is in it)
    with open(slot, "a+") as handle:  # and let it go: no process holds the lock now
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)

    loaded = datasets.load_dataset(str(store))
    rows = {row["id"]: row for split in loaded.values() for row in split}
    assert {k for k, r in rows.items() if r["status"] == "ok"} == set(durations)
    assert rows["bad-empty"]["error_kind"] == "empty" and rows["bad-blank"]["error_kind"] == "manifest_row"
    assert not (store / "_tmp").exists() or not list((store / "_tmp").iterdir())


def test_deployments_limit_builds_and_trainings_to_one_at_a_time(cluster):
    url, _env = cluster
    for name in ("build-dataset/nightly", "train-lora/on-new-data"):
        deployment = api(url, f"/deployments/{deployment_id(url, name)}")
        limit = deployment.get("global_concurrency_limit") or {}
        assert limit.get("limit") == 1 or deployment.get("concurrency_limit") == 1, deployment
        assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"


def test_shards_no_worker_starts_fail_the_build_naming_the_pool(cluster, tmp_path):
    """process-shards deployed on a pool no worker serves: the build fails after its start timeout."""
    url, env = cluster
    prefect(env, "work-pool", "create", "idle", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "flows/process_shard.py:process_shards", "-n", "idle", "-p", "idle")
    manifest, _ = make_manifest_videos(tmp_path / "videos")
    store = tmp_path / "store"
    code = (
        "from flows.build_dataset import build_dataset\n"
        f"build_dataset(manifest={manifest!r}, store={str(store)!r}, model='tiny-random', "
        "work_pool='idle', shard_start_timeout_s=5)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "no worker of work pool 'idle' started shard(s) [0]" in done.stderr + done.stdout
    shard = deployment_id(url, "process-shards/idle")
    runs = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [shard]}}})
    assert [r["state"]["type"] for r in runs] == ["CANCELLED"]  # it will not run later behind our back
    assert not (store / "_shards").exists() or not list((store / "_shards").iterdir())


def test_a_run_killed_mid_shard_is_taken_over_by_another(cluster, tmp_path):
    """Two GPU workers (one run at a time each) and the build's two process-shards runs, one shard a video.
    The first run's process to claim a shard is killed (SIGKILL, found by the pid its claim names: an
    out-of-memory kill). Its worker reports the run Crashed; the other run, done with its own shards,
    takes the killed one's over and finishes it, and the build completes with every video in the
    store."""
    import os
    import signal

    url, env = cluster
    manifest, durations = make_manifest_videos(tmp_path / "videos")
    store = tmp_path / "store"
    workers = start_workers(
        env,
        tmp_path,
        [
            ("gpu-a", "crash-gpu-1", GPU_QUEUE),
            ("gpu-b", "crash-gpu-2", GPU_QUEUE),
            ("control", "crash-control", CONTROL_QUEUE),
        ],
    )
    try:
        run_id = run_build(env, manifest, store, shard_size=1, shard_runs=2)
        killed = None
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline:
            for claim in (store / "_runs").glob("*/*.lease.json") if (store / "_runs").exists() else []:
                try:
                    holder = json.loads(claim.read_text())
                except (OSError, ValueError):  # released, or being written, just now
                    continue
                mark = claim.with_name(claim.name.replace(".lease.json", ".done"))
                if mark.exists():
                    continue
                try:
                    os.kill(holder["pid"], signal.SIGSTOP)  # held still, then looked at again: not marked yet
                except ProcessLookupError:  # ended since its claim was read
                    continue
                if mark.exists() or not claim.exists():
                    os.kill(holder["pid"], signal.SIGCONT)
                    continue
                os.kill(holder["pid"], signal.SIGKILL)
                killed = (int(claim.name.split(".")[0]), holder["pid"])
                break
            time.sleep(0.2)
        assert killed is not None, "no run claimed a shard"
        run = wait_for_final(url, run_id, timeout=480)
        logs = "".join((tmp_path / f"{n}.log").read_text()[-3000:] for n in ("control", "gpu-a", "gpu-b"))
        assert run["state"]["type"] == "COMPLETED", logs
    finally:
        for worker in workers:
            stop(worker)

    shards = deployment_id(url, "process-shards/gpu")
    lanes = [
        lane
        for lane in api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [shards]}}})
        if lane["parameters"]["store"] == str(store)
    ]
    assert sorted(lane["state"]["type"] for lane in lanes) == ["COMPLETED", "CRASHED"]
    (survivor,) = [lane for lane in lanes if lane["state"]["type"] == "COMPLETED"]
    subflows = [
        r
        for r in api(url, "/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"is_null_": False}}})
        if r["parameters"].get("run_id") == survivor["parameters"]["run_id"] and "index" in r["parameters"]
    ]
    taken_over = [
        r
        for r in subflows
        if r["parameters"]["index"] == killed[0]
        and r["state"]["type"] == "COMPLETED"
        and api(url, f"/task_runs/{r['parent_task_run_id']}")["flow_run_id"] == survivor["id"]
    ]
    assert taken_over, f"shard {killed[0]} was not finished by the run that survived"
    said = api(url, "/logs/filter", {"logs": {"flow_run_id": {"any_": [survivor["id"]]}}, "limit": 200})
    assert any(
        f"shard {killed[0]}: taken over from a run that left it unfinished" in x["message"] for x in said
    )
    loaded = datasets.load_dataset(str(store))
    rows = {row["id"]: row for split in loaded.values() for row in split}
    assert {k for k, r in rows.items() if r["status"] == "ok"} == set(durations)
