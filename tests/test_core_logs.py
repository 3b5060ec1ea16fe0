"""foley_core's log records reach the logs of the Prefect run they happen in (flows/core_logs.py), as the
API holds them: a record of the flow's thread or a task's to that run, one of a thread no run started
(the batching thread) to the innermost flow run in `core_logs`; nothing outside a run."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import pytest
from prefect import flow, task
from prefect.context import FlowRunContext

from tests.test_chain_graph import clips  # noqa: F401 (two short scene videos and their manifest)
from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.flows.core_logs import CORE_LOGGER, core_logs

PROBE = f"{CORE_LOGGER}.probe"


def logs_of(flow_run_id, expected: int) -> list:
    """The run's logs from foley_core as the API holds them, once `expected` have arrived (they are shipped
    in batches) or after 20 s."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 20
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            ours = [log for log in logs if log.name.startswith(CORE_LOGGER)]
            if len(ours) >= expected or time.monotonic() > deadline:
                return ours
            time.sleep(0.5)


def in_a_thread_no_run_started(message: str) -> None:
    thread = threading.Thread(target=logging.getLogger(PROBE).warning, args=(message,))
    thread.start()
    thread.join()


@task
def a_task(tag: str) -> None:
    logging.getLogger(PROBE).warning("from a task %s", tag)


@flow(name="core-logs-inner")
@core_logs
def inner(tag: str) -> str:
    in_a_thread_no_run_started(f"inner's thread {tag}")
    return str(FlowRunContext.get().flow_run.id)


@flow(name="core-logs-outer")
@core_logs
def outer(tag: str) -> tuple[str, str]:
    logging.getLogger(PROBE).warning("from the flow %s", tag)
    logging.getLogger(PROBE).info("an info %s", tag)
    a_task(tag)
    inner_run = inner(tag)
    in_a_thread_no_run_started(f"outer's thread {tag}")
    return str(FlowRunContext.get().flow_run.id), inner_run


def test_each_record_reaches_the_run_it_belongs_to_once(prefect_harness):
    core = logging.getLogger(CORE_LOGGER)
    handlers = list(core.handlers)
    outer_run, inner_run = outer("t1")
    assert core.handlers == handlers and core.level == logging.NOTSET  # as it was, after the runs

    outer_logs = logs_of(outer_run, expected=4)
    said = sorted(log.message for log in outer_logs)
    assert said == ["an info t1", "from a task t1", "from the flow t1", "outer's thread t1"]
    assert {log.name for log in outer_logs} == {PROBE}  # the records keep their logger's name
    by_message = {log.message: log for log in outer_logs}
    assert by_message["from a task t1"].task_run_id is not None
    assert by_message["from the flow t1"].task_run_id is None
    assert [log.message for log in logs_of(inner_run, expected=1)] == ["inner's thread t1"]


def test_a_record_outside_any_run_is_not_sent_and_warns_nothing(prefect_harness):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Prefect warns when its API handler gets a record with no run
        logging.getLogger(PROBE).warning("outside any run")
        in_a_thread_no_run_started("outside any run, in a thread")


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
    prefix_attention.use_kernels(True)


def test_the_batching_threads_attention_fallback_is_in_the_shards_run_logs(
    clips,  # noqa: F811
    tmp_path,
    prefect_harness,
    failing_kernels,
):
    """The warning is logged on the model's batching thread, which no run started: without
    core_logs it reached only the process's console."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterName

    _folder, manifest = clips
    store = str(tmp_path / "store")
    build_dataset(
        manifest=manifest, store=store, model="tiny-random", batch_size=4, decoder="continuous", device="cpu"
    )
    wanted = f"{CORE_LOGGER}.backends.attention_check"
    deadline = time.monotonic() + 20
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(name=LogFilterName(any_=[wanted])))
            runs = [client.read_flow_run(log.flow_run_id) for log in logs if "fused kernels" in log.message]
            ours = [run for run in runs if run.parameters.get("store") == store]
            if ours or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert ours, "the attention check's warning is not in the logs of this build's runs"
    assert {client_flow_name(run.flow_id) for run in ours} == {"process-shard"}


def client_flow_name(flow_id) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow(flow_id).name
