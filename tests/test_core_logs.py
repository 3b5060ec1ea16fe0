"""foley_core's log records reach the logs of the Prefect run they happen in (flows/core_logs.py), as the
API holds them: a record of the flow's thread or a task's to that run, one of a thread no run started
(the batching thread) to the innermost flow run in `core_logs`; nothing outside a run."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import pytest
from prefect import task
from prefect.context import FlowRunContext

from tests.test_chain_graph import clips  # noqa: F401 (two short scene videos and their manifest)
from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.flows.core_logs import CORE_LOGGER, logged_flow

PROBE = f"{CORE_LOGGER}.probe"


def logs_of(flow_run_id) -> list:
    """The run's logs from foley_core as the API holds them, once every log queued is sent."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    # logs are shipped in batches: send what is queued, and wait (the handler's flush waits 5 s at most)
    APILogWorker.drain_all(timeout=120)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log for log in logs if log.name.startswith(CORE_LOGGER)]


def in_a_thread_no_run_started(message: str) -> None:
    """Log `message` from a new thread (no Prefect context); what it raises is raised here."""
    raised: list[BaseException] = []

    def log() -> None:
        try:
            logging.getLogger(PROBE).warning(message)
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=log)
    thread.start()
    thread.join()
    if raised:
        raise raised[0]


@logged_flow(name="core-logs-inner")
def inner(tag: str) -> str:
    logging.getLogger(PROBE).warning("inner's flow %s", tag)
    in_a_thread_no_run_started(f"inner's thread {tag}")
    return str(FlowRunContext.get().flow_run.id)


@task
def a_task(tag: str) -> str:
    """Logs, then runs a subflow inside the task (whose thread then carries both contexts)."""
    logging.getLogger(PROBE).warning("from a task %s", tag)
    return inner(f"{tag} in a task")


@logged_flow(name="core-logs-outer")
def outer(tag: str) -> tuple[str, str, str]:
    logging.getLogger(PROBE).warning("from the flow %s", tag)
    logging.getLogger(PROBE).info("an info %s", tag)
    in_task = a_task(tag)
    direct = inner(tag)
    in_a_thread_no_run_started(f"outer's thread {tag}")
    return str(FlowRunContext.get().flow_run.id), direct, in_task


def test_each_record_reaches_the_run_it_belongs_to_once(prefect_harness):
    core = logging.getLogger(CORE_LOGGER)
    handlers = list(core.handlers)
    outer_run, direct_run, in_task_run = outer("t1")
    assert core.handlers == handlers and core.level == logging.NOTSET  # as it was, after the runs

    outer_logs = logs_of(outer_run)
    said = sorted(log.message for log in outer_logs)
    assert said == ["an info t1", "from a task t1", "from the flow t1", "outer's thread t1"]
    assert {log.name for log in outer_logs} == {PROBE}  # the records keep their logger's name
    by_message = {log.message: log for log in outer_logs}
    assert by_message["from a task t1"].task_run_id is not None
    assert by_message["from the flow t1"].task_run_id is None
    for run, tag in ((direct_run, "t1"), (in_task_run, "t1 in a task")):
        assert sorted(log.message for log in logs_of(run)) == [f"inner's flow {tag}", f"inner's thread {tag}"]


def test_a_record_outside_any_run_is_not_sent_and_warns_nothing(prefect_harness):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Prefect warns when its API handler gets a record with no run
        logging.getLogger(PROBE).warning("outside any run")
        in_a_thread_no_run_started("outside any run, in a thread")


def test_a_lease_renewals_warning_reaches_the_run_that_took_the_lease(tmp_path, prefect_harness):
    """The renewal thread is foley_core's; it runs in its creator's context. The lease's file is
    replaced by a folder under it, so that its renewals fail to read it (a store gone wrong), while a
    subflow (the latest run open) runs."""
    import fsspec

    from v2t_foley.foley_core.store.lease import Lease

    path = tmp_path / "build.json"

    @logged_flow(name="core-logs-meanwhile")
    def meanwhile() -> str:
        time.sleep(0.5)  # the renewals (every 0.1 s) fail while this run is the latest one open
        return str(FlowRunContext.get().flow_run.id)

    @logged_flow(name="core-logs-lease")
    def holds_a_lease() -> tuple[str, str]:
        lease = Lease(fsspec.filesystem("file"), str(path), "build", ttl_s=0.3)
        assert lease.try_acquire()
        path.unlink()
        path.mkdir()
        other = meanwhile()
        lease._stop.set()
        return str(FlowRunContext.get().flow_run.id), other

    taker, other = holds_a_lease()
    said = [log.message for log in logs_of(taker)]
    assert any(message.startswith("could not renew the build lease") for message in said), said
    assert not [log.message for log in logs_of(other)]


def test_a_run_gets_the_first_records_of_a_kind_and_a_count_of_the_rest(prefect_harness):
    """A warning that repeats per entry (a broken step cache) from the flow's thread and from a thread no
    run started: the run's logs get SENT_ALIKE of that kind and, when the run ends, how many more came;
    another kind is counted apart; the process's own handlers still get every record."""
    from v2t_foley.flows.core_logs import HELD_BACK, SENT_ALIKE

    seen: list[logging.LogRecord] = []
    console = logging.Handler()
    console.emit = seen.append

    @logged_flow(name="core-logs-repeats")
    def repeats() -> str:
        for entry in range(2 * SENT_ALIKE):
            logging.getLogger(PROBE).warning("entry %d unreadable", entry)
        thread = threading.Thread(
            target=lambda: [logging.getLogger(PROBE).warning("entry %d unreadable", -k) for k in range(5)]
        )
        thread.start()
        thread.join()
        logging.getLogger(PROBE).warning("another kind")
        return str(FlowRunContext.get().flow_run.id)

    logging.getLogger(PROBE).addHandler(console)
    try:
        run = repeats()
    finally:
        logging.getLogger(PROBE).removeHandler(console)
    said = [log.message for log in logs_of(run)]
    alike = {m for m in said if m.startswith("entry ")}  # a set: records a moment apart may share a time
    last = f"entry {SENT_ALIKE - 1} unreadable {HELD_BACK}"
    assert alike == {f"entry {k} unreadable" for k in range(SENT_ALIKE - 1)} | {last}
    held_back = 2 * SENT_ALIKE + 5 - SENT_ALIKE
    assert f"{held_back} more like this were not sent to the run's logs: entry %d unreadable" in said
    assert said.count("another kind") == 1 and len(said) == SENT_ALIKE + 2
    assert len(seen) == 2 * SENT_ALIKE + 5 + 1  # the console's records, every one as it was logged
    assert all("counted" not in record.getMessage() for record in seen)


def test_the_count_holds_across_a_reentry_and_bad_arguments_raise_nothing(prefect_harness, monkeypatch):
    """A logged flow's function called inside its own run (`.fn`) enters the run again: its exit must
    not end the run's count, or every later record of the run would be sent. A record whose arguments
    do not fit its message is the handler's error (reported on stderr), never the caller's, also
    where the handler formats it (the last record of a kind sent). The records stop at foley_core's
    logger: pytest's capture handler, above it, raises such errors on purpose."""
    from v2t_foley.flows.core_logs import SENT_ALIKE

    monkeypatch.setattr(logging.getLogger(CORE_LOGGER), "propagate", False)

    @logged_flow(name="core-logs-reentered")
    def reentered(again: bool) -> str:
        if again:
            reentered.fn(False)
        for entry in range(SENT_ALIKE):
            logging.getLogger(PROBE).warning("entry %d", entry)
            logging.getLogger(PROBE).warning("%d bad", "not a number")  # sent by nobody, raises nothing
        return str(FlowRunContext.get().flow_run.id)

    run = reentered(True)
    said = [log.message for log in logs_of(run)]
    # SENT_ALIKE of each kind's 2 * SENT_ALIKE, then a count of each: the badly formed ones' first
    # records reached no log (the API handler could not format them either), their count does
    counts = [
        f"{SENT_ALIKE} more like this were not sent to the run's logs: {kind}"
        for kind in ("entry %d", "%d bad")
    ]
    assert sorted(m for m in said if "were not sent" in m) == sorted(counts)
    assert len(said) == SENT_ALIKE + 2, said[SENT_ALIKE - 2 :]


def test_a_logged_flow_is_versioned_by_its_own_file_and_takes_no_coroutine():
    """Prefect's default version is the hash of the flow function's file; the wrapper's is another."""
    from prefect.utilities.hashing import file_hash

    from v2t_foley.flows import build_dataset as build_module
    from v2t_foley.flows import core_logs as wrapper_module

    assert build_dataset.version == file_hash(build_module.__file__)
    assert build_dataset.version != file_hash(wrapper_module.__file__)

    async def a_coroutine() -> None:
        pass

    with pytest.raises(TypeError, match="sync functions only"):
        logged_flow(name="async")(a_coroutine)


@pytest.fixture
def failing_kernels(monkeypatch):
    """Stand-in: the store's fused attention kernel raises, as a CUDA build without it would (the CUDA
    kernel that could refuse cannot run on this machine)."""
    from v2t_foley.foley_core.backends import prefix_attention, registry

    def refuses(*args):
        raise RuntimeError("no kernel image is available for execution on the device")

    registry.release_shared_model()  # a model loaded now, whose decoder checks its attention anew
    monkeypatch.setattr(prefix_attention, "_fused", refuses)
    yield
    registry.release_shared_model()  # later tests' decoders check the real kernel


def test_the_batching_threads_attention_fallback_is_in_the_shards_run_logs(
    clips,  # noqa: F811
    tmp_path,
    prefect_harness,
    failing_kernels,
):
    """The warning is logged on the model's batching thread, which no run started: without
    core_logs it reached only the process's console."""
    from prefect.client.orchestration import get_client

    _folder, manifest = clips
    store = str(tmp_path / "store")
    build_dataset(
        manifest=manifest, store=store, model="tiny-random", batch_size=4, decoder="continuous", device="cpu"
    )
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        shard_runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["process-shard"]))
        )
    ours = [run for run in shard_runs if run.parameters.get("store") == store]
    assert ours
    wanted = f"{CORE_LOGGER}.backends.attention_check"
    said = [log for run in ours for log in logs_of(run.id) if log.name == wanted]
    assert any("fused kernels failed its check" in log.message for log in said), [log.message for log in said]
