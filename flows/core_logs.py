"""foley_core's log records in the logs of the Prefect run they happen in, not only the worker's console.

foley_core logs with the standard library under `v2t_foley.foley_core` and never imports Prefect, and
Prefect sends to its API only its own loggers' records. So a warning such as the prefix store's
attention falling back to slower ops, a lease taken over or an unreadable step cache entry reached the
console of the worker's process and never the run's page in the UI (`prefect flow-run logs`). A flow
made by `logged_flow` (`prefect.flow` over its body wrapped in `core_logs`) sends them to the API,
keeping their logger's name:
- a record from a thread that carries a run's context (the flow's own, a task's) goes to that run;
  (foley_core starts its lease renewal threads in their creator's context, so theirs go to the run
  that took the lease);
- a record from a thread no run started (the model's batching thread, a step's pool of threads),
  whose work serves whatever the process runs now, goes to the flow run that entered `core_logs` last
  and is still in it: the shard being processed, inside its run or build. Two runs side by side in
  one process (not how the factory runs them) would see each other's such records.

A run's logs get the first SENT_ALIKE records of a kind (logger, level and message before its
arguments) in full; the rest are counted, and when the run leaves, one record a kind says how many
were not sent. A flow's retry counts anew (its body enters again). The worker's console still prints
every one.

While a run is inside, the foley_core logger lets INFO through (`PREFECT_LOGGING_LEVEL`, as Prefect
sets its own loggers) unless it has a level of its own, so the console prints its INFO lines too.
Setting `PREFECT_LOGGING_EXTRA_LOGGERS=v2t_foley` as well would send the records of a run's threads
twice. `PREFECT_LOGGING_TO_API_ENABLED=false` turns all of it off, with Prefect's own run logs.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from prefect import Flow, flow
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_LOGGING_LEVEL
from prefect.utilities.hashing import file_hash

CORE_LOGGER = "v2t_foley.foley_core"
# records of one kind that a run's logs get in full: a store whose step cache went bad warns once per
# entry, and a shard of a million entries would send a million logs to the server's database
SENT_ALIKE = 20
HELD_BACK = "(more like this are counted, not sent: the count comes at the end)"  # the last one sent says so

P = ParamSpec("P")
R = TypeVar("R")

# flow runs of this process inside `core_logs`, in the order they entered, each with its thread's context
# as it entered: a thread no run started has no Prefect settings, without which Prefect sends nothing
_open: list[tuple[UUID, contextvars.Context]] = []
# the records of each run in `_open` by kind (`_kind`), and how many came, sent or not
_counts: dict[UUID, dict[tuple[str, int, str], int]] = {}
_lock = threading.Lock()


def _kind(record: logging.LogRecord) -> tuple[str, int, str]:
    return record.name, record.levelno, str(record.msg)


class _ToTheRun(logging.Handler):
    """Sends a foley_core record to the API as a log of the run it belongs to (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        self._api = APILogHandler()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(logging.makeLogRecord(record.__dict__))  # other handlers keep the record as it was
        except Exception:  # a logging call must not raise into foley_core (a record's bad arguments)
            self.handleError(record)

    def _send(self, sent: logging.LogRecord) -> None:
        sent.flow_run_id, sent.task_run_id = _run_of_this_thread()
        if sent.flow_run_id is not None:
            if _counted(sent):
                self._api.handle(sent)
            return
        with _lock:
            latest = _open[-1] if _open else None
        if latest is not None:
            sent.flow_run_id, context = latest
            if _counted(sent):
                context.copy().run(self._api.handle, sent)  # a copy: two threads cannot run in one context

    def summarize(self, flow_run_id: UUID, counts: dict[tuple[str, int, str], int]) -> None:
        """One record a kind of which the run's logs did not get every record: how many were held back.
        Called in the run's own thread, whose context sends it."""
        for (name, level, message), count in counts.items():
            if count > SENT_ALIKE:
                note = f"{count - SENT_ALIKE} more like this were not sent to the run's logs: {message}"
                summary = logging.LogRecord(name, level, __file__, 0, note, None, None)
                summary.flow_run_id, summary.task_run_id = flow_run_id, None
                self._api.handle(summary)


def _counted(record: logging.LogRecord) -> bool:
    """Whether `record` goes to its run's logs: one of the first SENT_ALIKE of its kind there (the
    last of them says that the rest are counted), or of a run that is not in `core_logs`."""
    with _lock:
        counts, kind = _counts.get(record.flow_run_id), _kind(record)
        if counts is None:
            return True
        count = counts[kind] = counts.get(kind, 0) + 1
    if count == SENT_ALIKE:
        record.msg = f"{record.getMessage()} {HELD_BACK}"
        record.args = None
    return count <= SENT_ALIKE


def _run_of_this_thread() -> tuple[UUID | None, UUID | None]:
    """(flow run id, task run id) of the run whose context the calling thread carries, else Nones. A
    subflow called inside a task carries both contexts: the flow's is the one running (as Prefect's
    `get_run_context` decides)."""
    task, run = TaskRunContext.get(), FlowRunContext.get()
    flow_run = run.flow_run if run is not None else None
    if flow_run is not None and (task is None or task.task_run.flow_run_id != flow_run.id):
        return flow_run.id, None
    if task is not None:
        return task.task_run.flow_run_id, task.task_run.id
    return None, None


_handler = _ToTheRun()
_level_set = False  # whether `core_logs` set the foley_core logger's level (and so restores it)


def _enter(flow_run_id: UUID) -> None:
    global _level_set
    context = contextvars.copy_context()
    core = logging.getLogger(CORE_LOGGER)
    with _lock:
        if not _open:
            core.addHandler(_handler)
            if core.level == logging.NOTSET:
                core.setLevel(PREFECT_LOGGING_LEVEL.value())
                _level_set = True
        _open.append((flow_run_id, context))
        _counts.setdefault(flow_run_id, {})


def _leave(flow_run_id: UUID) -> None:
    global _level_set
    core = logging.getLogger(CORE_LOGGER)
    with _lock:
        del _open[next(i for i, (run, _context) in enumerate(_open) if run == flow_run_id)]
        # the run's last exit (a logged flow's function called inside its own run enters it again)
        last = all(run != flow_run_id for run, _context in _open)
        counts = _counts.pop(flow_run_id, {}) if last else {}
    try:
        _handler.summarize(flow_run_id, counts)
    finally:
        with _lock:
            if not _open:
                core.removeHandler(_handler)
                if _level_set:
                    core.setLevel(logging.NOTSET)
                    _level_set = False


def core_logs(body: Callable[P, R]) -> Callable[P, R]:
    """`body` (a flow's function), sending foley_core's records to its run while it runs."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        flow_run_id, _task = _run_of_this_thread()
        if flow_run_id is None:  # called as a plain function: nothing to send to
            return body(*args, **kwargs)
        entered = False
        try:
            _enter(flow_run_id)
            entered = True
            return body(*args, **kwargs)
        finally:
            if entered:
                _leave(flow_run_id)

    # Prefect resolves a flow's string annotations in its function's globals, which would be this
    # module's: the wrapper shows the body's signature with them resolved
    run.__signature__ = inspect.signature(body, eval_str=True)  # type: ignore[attr-defined]
    return run


def logged_flow(**options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]:
    """`prefect.flow(**options)` over the function wrapped in `core_logs`. Its version is the hash of
    the function's own file, as Prefect versions a flow by default (the wrapper's file would give
    every flow this module's hash). Sync functions only: the wrapper would leave before a coroutine
    ran."""

    def make(body: Callable[P, R]) -> Flow[P, R]:
        if inspect.iscoroutinefunction(body) or inspect.isasyncgenfunction(body):
            raise TypeError(f"logged_flow takes sync functions only, not {body.__qualname__}")
        version = options.get("version") or file_hash(inspect.getsourcefile(body))
        return flow(**{**options, "version": version})(core_logs(body))

    return make
