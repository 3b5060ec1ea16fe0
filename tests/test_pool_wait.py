"""A build's wait for its process-shards runs on a work pool (flows/shard_runs.py `run_on_pool`): what
it does as its runs start, crash, get lost or never start, on the test harness's real Prefect API.
Nothing here can crash or lose a worker's machine, so the states a worker would report are set by hand;
the real crash on a real cluster is tests/test_deployment_e2e.py."""

from __future__ import annotations

import threading
import time

import pytest

from v2t_foley.flows import shard_runs
from v2t_foley.flows.build_dataset import new_run_id
from v2t_foley.flows.shard_claims import finish, shard_manifest
from v2t_foley.foley_core.backends import BackendSpec
from v2t_foley.foley_core.chain import ChainConfig
from v2t_foley.foley_core.manifest import ManifestEntry, write_entries
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.tasks.job import ChainJob

JOB = ChainJob(backend=BackendSpec(model="tiny-random", device="cpu"), config=ChainConfig(timing="model"))


@pytest.fixture
def pool_build(tmp_path, prefect_harness, monkeypatch):
    """A build's shards (entries written) and a `process-shards/<pool>` deployment on a process work
    pool of the harness's server, with no worker: the test moves its runs' states by hand."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"hand-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name("process-shards")
        client.create_deployment(flow_id=flow_id, name=pool, work_pool_name=pool)
    dataset, run_id = DatasetStore(str(tmp_path / "store")), new_run_id()
    for index in range(3):
        entry = ManifestEntry(id=f"v{index}", video="/nowhere.mp4")
        write_entries([entry], shard_manifest(dataset, run_id, index))
    monkeypatch.setattr(shard_runs, "LOOK_EVERY_S", 0.2)
    monkeypatch.setattr(shard_runs, "RUN_END_GRACE_S", 3.0)
    return pool, dataset, run_id


def wait_on_pool(pool_build, shard_runs_: int) -> tuple[threading.Thread, dict, list]:
    """build-dataset's wait (`run_on_pool`) in a thread, inside a flow run as in a build; its runs once
    created, and what the wait left: its flow run id and what it raised."""
    from prefect import flow, runtime
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from v2t_foley.flows.shard_runs import run_on_pool
    from v2t_foley.foley_core.store.lease import Lease

    pool, dataset, run_id = pool_build
    left: dict = {"raised": None}

    @flow(name="build-dataset-wait")
    def build() -> None:
        left["flow_run_id"] = runtime.flow_run.id
        lease = Lease(dataset.fs, dataset.path("_locks/build.json"), "build")
        assert lease.try_acquire()
        try:
            run_on_pool(pool, 3, dataset, JOB, run_id, None, False, 3600.0, lease, shard_runs_)
        finally:
            lease.release()

    def wait() -> None:
        try:
            build()
        except BaseException as error:
            left["raised"] = error

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    wanted = min(shard_runs_, 3) or 3  # 0: a run per shard
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[pool]))
            )
            if len(runs) == wanted:
                break
            time.sleep(0.1)
    assert len(runs) == wanted, f"the build made {len(runs)} runs, not {wanted}"
    return thread, left, sorted(runs, key=lambda run: run.parameters["indexes"])


def set_state(run, state) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, state, force=True)


def read_state(run):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run.id).state


def logged(flow_run_id, text: str) -> bool:
    """Whether the flow run's logs, as the Prefect API holds them (shipped in batches), say `text`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if any(text in log.message for log in logs):
                return True
            time.sleep(0.5)
    return False


def test_a_build_outlives_a_crashed_run_a_lost_one_and_one_never_started(pool_build):
    """Nothing here can crash or lose a worker's machine, so the states its worker would report are set by
    hand on the real API. Run 0 crashes once the others have finished every shard (they took its shard
    over), run 1 stays Running after them (its machine went away), run 2 is never started: the build
    cancels run 2, then run 1 once its grace is over, logs the crash, and succeeds."""
    from prefect.states import Crashed, Running

    _pool, dataset, run_id = pool_build
    thread, left, runs = wait_on_pool(pool_build, 3)
    set_state(runs[0], Running())
    set_state(runs[1], Running())
    finish(dataset, run_id, 0)
    finish(dataset, run_id, 1)
    set_state(runs[0], Crashed(message="process exited with code -9"))
    finish(dataset, run_id, 2)
    thread.join(90)
    assert not thread.is_alive() and left["raised"] is None
    assert read_state(runs[2]).is_cancelled() and read_state(runs[2]).message == "every shard was finished"
    lost = read_state(runs[1])
    assert lost.is_cancelled() and "had not ended 3 s after" in lost.message
    assert logged(
        left["flow_run_id"], "run(s) crashed, were cancelled or deleted, and the other runs finished"
    )


@pytest.mark.parametrize(
    ("marks", "expected"),
    [
        ({0: None, 2: None}, ["(Crashed: process exited with code -9)", "shard(s) [1] were not finished"]),
        ({0: "frames could not be decoded", 1: None, 2: None}, ["1 shard(s) failed: shard 0: frames could"]),
    ],
    ids=["shard-left", "failed-mark"],
)
def test_a_crashed_run_fails_the_build_when_work_is_left_undone(pool_build, marks, expected):
    """One of two runs crashes, the other completes. With shard 1 left unmarked the crash fails the
    build; with every shard marked, but shard 0 marked failed (by the run that crashed later: no run
    ends Failed), the build still fails, naming shard 0 and its error from the mark."""
    from prefect.states import Completed, Crashed, Running

    _pool, dataset, run_id = pool_build
    thread, left, runs = wait_on_pool(pool_build, 2)
    for run in runs:
        set_state(run, Running())
    for index, error in marks.items():
        finish(dataset, run_id, index, error)
    set_state(runs[0], Crashed(message="process exited with code -9"))
    set_state(runs[1], Completed())
    thread.join(90)
    assert not thread.is_alive()
    assert all(part in str(left["raised"]) for part in expected), left["raised"]


def test_a_run_per_shard_takes_any_shard_and_the_runs_it_made_unneeded_are_cancelled(pool_build, monkeypatch):
    """`shard_runs` 0 (the default): a run per shard, each allowed every shard of the build. One worker's
    run finishes all three shards (set by hand: nothing here runs a worker); the build then cancels
    the two runs no worker started, and succeeds once that run completes. The runs' states are read
    a page at a time (two runs a page here). The running one's grace is long here: this test checks
    that it is waited for, however slowly the checks below run (the grace's end is the first test's)."""
    from prefect.states import Completed, Running

    monkeypatch.setattr(shard_runs, "STATES_PER_READ", 2)
    monkeypatch.setattr(shard_runs, "RUN_END_GRACE_S", 600.0)
    _pool, dataset, run_id = pool_build
    thread, left, runs = wait_on_pool(pool_build, 0)
    assert [(run.parameters["indexes"], run.parameters["shard_count"]) for run in runs] == [
        ([0], 3),
        ([1], 3),
        ([2], 3),
    ]
    set_state(runs[1], Running())
    for index in range(3):
        finish(dataset, run_id, index)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(read_state(runs[k]).is_cancelled() for k in (0, 2)):
        time.sleep(0.2)
    assert all(read_state(runs[k]).message == "every shard was finished" for k in (0, 2))
    assert thread.is_alive()  # the running one is waited for
    set_state(runs[1], Completed())
    thread.join(90)
    assert not thread.is_alive() and left["raised"] is None


@pytest.mark.parametrize("others_take_its_shard", [False, True])
def test_a_run_deleted_from_the_server_fails_the_build_only_when_its_shard_is_left(
    pool_build, others_take_its_shard
):
    """Someone deletes one of the build's runs (the UI, the API) before any worker starts it: no worker
    ever will. The build stops waiting for it; it fails naming the run and its shard when that shard is
    left unfinished, and succeeds when another run took the shard."""
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    _pool, dataset, run_id = pool_build
    thread, left, runs = wait_on_pool(pool_build, 2)
    with get_client(sync_client=True) as client:
        client.delete_flow_run(runs[1].id)
    set_state(runs[0], Running())
    for index in (0, 1, 2) if others_take_its_shard else (0, 2):
        finish(dataset, run_id, index)
    set_state(runs[0], Completed())
    thread.join(90)
    assert not thread.is_alive()
    if others_take_its_shard:
        assert left["raised"] is None
    else:
        assert "run dealt shards [1] (Deleted: from the Prefect server)" in str(left["raised"])
        assert "shard(s) [1] were not finished" in str(left["raised"])


def test_a_build_whose_wait_fails_cancels_the_runs_no_worker_started(pool_build, monkeypatch):
    """The build loses its store lease while it waits (a stand-in: `Lease.check` made to raise, as it
    does once another build took the store over). Its three runs, none started, are cancelled: a worker
    would otherwise start each only for it to find its build gone."""
    from v2t_foley.foley_core.store.lease import Lease, LeaseLost

    started = threading.Event()

    def lost(self) -> None:
        if started.is_set():
            raise LeaseLost("another build took the store over")

    monkeypatch.setattr(Lease, "check", lost)
    thread, left, runs = wait_on_pool(pool_build, 0)
    started.set()
    thread.join(90)
    assert not thread.is_alive() and isinstance(left["raised"], LeaseLost)
    assert [read_state(run).message for run in runs] == ["its build-dataset run failed"] * 3
    assert all(read_state(run).is_cancelled() for run in runs)
