"""A build's shards on a work pool: dealt to process-shards runs, and the build's wait.

A worker starts each flow run in a new process, which loads the model and compiles its decode step
(minutes for the 7B on a cold compile cache), so no run stops at its own shards. Each takes its own
first, then any other shard of the build nobody has taken, then, while shards are unmarked, any whose
run crashed (flows/shard_claims.py: claims and marks in the build's run folder). A slow worker holds
no shard back: the others take what is left. With `shard_runs` 0 (the default) every shard has a run
of its own, up to `DEFAULT_RUNS`, and the runs that workers start take the shards of those they never
get to: a worker loads the model about once a build, whatever the pool's size, and a run that stops
(two failures in a row) is followed by a fresh process. With `shard_runs` N, N runs. Once every shard
is marked the runs end, and runs no worker has started yet are cancelled. When every run has ended,
failed shards and shards without a mark are named.
"""

from __future__ import annotations

import time

from prefect import get_run_logger

from v2t_foley.flows.shard_claims import failed_marks, unfinished
from v2t_foley.foley_core.errors import FoleyError
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.store.lease import Lease
from v2t_foley.tasks.job import ChainJob


class ShardRunsFailed(FoleyError):
    """Shard runs on a work pool failed, crashed, or never started; the message names them."""


DEFAULT_RUNS = 256  # the runs of `shard_runs` 0: a run per shard up to this. Runs take any shard, so
# more only serve a pool of more workers (give it `shard_runs`), and each is a flow run the server holds
# (its parameters: the whole job) and the build reads while it waits


def shard_groups(shards: int, runs: int) -> list[list[int]]:
    """The shard numbers each of `runs` runs takes first (0: a run per shard, up to `DEFAULT_RUNS`),
    dealt in turn."""
    count = min(runs or DEFAULT_RUNS, shards)
    return [list(range(first, shards, count)) for first in range(count)]


STATES_PER_READ = 200  # runs whose states one API request reads (the server's largest page)
LOOK_EVERY_S = 30.0  # how often a build waiting on its runs lists the marks (a few requests on S3)
RUN_END_GRACE_S = 300.0  # how long a build waits for runs still going once every shard is marked: a
# live one ends within a minute (its next look, its slot, its imports); a run whose worker went away
# stays Running in Prefect unless heartbeats mark it Crashed


def run_on_pool(
    work_pool: str,
    shards: int,
    dataset: DatasetStore,
    job: ChainJob,
    run_id: str,
    result_storage: str | None,
    retry_failed: bool,
    start_timeout_s: float,
    lease: Lease,
    shard_runs: int,
) -> None:
    """Start `process-shards/<work_pool>` deployment runs over the build's `shards` (written to their
    `shard_manifest`s), `shard_runs` of them (0: one a shard, up to `DEFAULT_RUNS`), and wait for all of
    them.

    A run that fails fails this build with its message; one that crashes, or that someone cancels or
    deletes, does when shards are left unfinished (the other runs take over a crashed run's shard).
    Runs that no worker starts within `start_timeout_s` while none of them runs (or ends) are cancelled,
    and so are those not started once every shard is marked; runs still going `RUN_END_GRACE_S` after
    that are cancelled, named, and not waited for. Then failed shards (from their marks) and every shard
    without its mark are named, with the pool when runs never started. When this wait itself fails
    (another build took the store, the API failed), the runs no worker has started are cancelled: a
    worker would start each only for it to find its build gone.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    pending: dict = {}  # flow run id -> the shards dealt to it, for the runs not ended
    with get_client(sync_client=True) as client:
        try:
            for group in shard_groups(shards, shard_runs):
                parameters = {
                    "store": dataset.uri,
                    "job": job,
                    "run_id": run_id,
                    "indexes": group,
                    "shard_count": shards,
                    "result_storage_uri": result_storage,
                    "retry_failed": retry_failed,
                }
                run = run_deployment(name=f"process-shards/{work_pool}", parameters=parameters, timeout=0)
                pending[run.id] = group
            ended = _wait(client, pending, dataset, run_id, shards, start_timeout_s, lease)
        except BaseException:
            _abandon(client, pending)
            raise
    _raise_for(dataset, run_id, shards, work_pool, start_timeout_s, *ended)


def _wait(
    client,
    pending: dict,
    dataset: DatasetStore,
    run_id: str,
    shards: int,
    start_timeout_s: float,
    lease: Lease,
) -> tuple[list[str], list[str], int]:
    """Wait until every run in `pending` has ended or been cancelled (see `run_on_pool`); returns what
    went wrong: failed runs, lost runs (crashed, cancelled by someone, deleted), and how many runs no
    worker started."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    logger = get_run_logger()
    waiting_since = time.monotonic()  # since a run of ours last started or ended
    failures: list[str] = []
    lost: list[str] = []
    never_started = 0
    next_look = time.monotonic() + LOOK_EVERY_S
    all_marked_at: float | None = None
    while pending:
        # 2 s a page of states (runs are read `STATES_PER_READ` a request)
        time.sleep(min(LOOK_EVERY_S, 2.0 * -(-len(pending) // STATES_PER_READ)))
        lease.check()  # another build took the store over: stop waiting for ours
        states = _states(client, pending)
        if any(s is not None and (s.is_running() or s.is_final()) for s in states.values()):
            waiting_since = time.monotonic()  # workers are busy with our runs, not missing
        for flow_run_id, group in list(pending.items()):
            state = states[flow_run_id]
            if flow_run_id not in pending:  # cancelled just now
                continue
            if state is None or state.is_final():  # None: deleted from the server, so nothing will run it
                waiting_since = time.monotonic()
                del pending[flow_run_id]
                if pending and not unfinished(dataset, run_id, shards):
                    _cancel_unstarted(client, pending, "every shard was finished")
                if state is None or not state.is_completed():
                    name, message = (
                        ("Deleted", "from the Prefect server")
                        if state is None
                        else (state.name, state.message)
                    )
                    why = f"run dealt shards {group} ({name}: {message or 'no message'})"
                    (failures if state is not None and state.is_failed() else lost).append(why)
                    logger.error("run %s of shards %s: %s, %s", flow_run_id, group, name, message)
            elif state.type in (StateType.SCHEDULED, StateType.PENDING) and (
                time.monotonic() - waiting_since > start_timeout_s
            ):
                client.set_flow_run_state(flow_run_id, Cancelled(message="no worker started it"), force=True)
                del pending[flow_run_id]
                never_started += 1
        if pending and time.monotonic() >= next_look:
            next_look = time.monotonic() + LOOK_EVERY_S
            if unfinished(dataset, run_id, shards):
                all_marked_at = None
            else:
                all_marked_at = all_marked_at or time.monotonic()
                _cancel_unstarted(client, pending, "every shard was finished")
                if pending and time.monotonic() - all_marked_at > RUN_END_GRACE_S:
                    _give_up_on(client, pending, logger)
    return failures, lost, never_started


def _abandon(client, pending: dict) -> None:
    """The build's wait failed: cancel its runs no worker has started, as far as the API lets it."""
    try:
        _cancel_unstarted(client, pending, "its build-dataset run failed")
    except Exception as error:  # the API that failed the wait may fail this too: the wait's error counts
        get_run_logger().warning("could not cancel the build's runs not started yet: %s", error)


def _states(client, runs: dict) -> dict:
    """The state of each of `runs` (flow run ids), `STATES_PER_READ` a request; None for a run the
    server no longer has (deleted)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids, states = list(runs), dict.fromkeys(runs)
    for first in range(0, len(ids), STATES_PER_READ):
        page = ids[first : first + STATES_PER_READ]
        found = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)), limit=len(page)
        )
        states.update({run.id: run.state for run in found})
    return states


def _give_up_on(client, pending: dict, logger) -> None:
    """Runs still going `RUN_END_GRACE_S` after every shard was marked: their worker went away (Prefect
    shows such a run Running unless heartbeats mark it Crashed). Cancelled, with why, not waited for."""
    from prefect.states import Cancelled

    why = f"every shard of its build was finished and it had not ended {RUN_END_GRACE_S:.0f} s after"
    logger.warning("run(s) %s: %s (its worker went away?): cancelled", sorted(map(str, pending)), why)
    for flow_run_id in list(pending):
        client.set_flow_run_state(flow_run_id, Cancelled(message=why), force=True)
        del pending[flow_run_id]


def _raise_for(
    dataset: DatasetStore,
    run_id: str,
    shards: int,
    work_pool: str,
    start_timeout_s: float,
    failures: list[str],
    lost: list[str],
    never_started: int,
) -> None:
    """Raise ShardRunsFailed naming what the build's runs left undone: failed shards (from their marks:
    a run that marked one may have crashed after), failed runs, lost runs (crashed, cancelled by
    someone, deleted) when shards are left (otherwise the others took their shards: logged), and
    shards left unmarked."""
    logger = get_run_logger()
    left = unfinished(dataset, run_id, shards)
    failed = failed_marks(dataset, run_id)
    if lost and left:
        failures = [*failures, *lost]
    elif lost:
        logger.warning(
            "run(s) crashed, were cancelled or deleted, and the other runs finished their shards: %s",
            "; ".join(lost),
        )
    problems = []
    if failed:
        named = [f"shard {index}: {error}" for index, error in list(failed.items())[:5]]
        more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        problems.append(f"{len(failed)} shard(s) failed: {'; '.join(named)}{more}")
    if failures:
        problems.append("shard run(s) failed: " + "; ".join(failures))
    if left and never_started:
        problems.append(
            f"no worker of work pool {work_pool!r} started shard(s) {left} within "
            f"{start_timeout_s:.0f} s (start one: prefect worker start --pool {work_pool})"
        )
    elif left:
        problems.append(
            f"shard(s) {left} were not finished (every run that could take them crashed or stopped; rerun)"
        )
    if problems:
        raise ShardRunsFailed(" and ".join(problems))


def _cancel_unstarted(client, pending: dict, why: str) -> None:
    """Cancel the runs in `pending` no worker has started (they would find nothing to take), by their
    states read just now: a run a worker started since an earlier read is left to end by itself."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    for flow_run_id, state in _states(client, pending).items():
        if state is not None and state.type in (StateType.SCHEDULED, StateType.PENDING):
            client.set_flow_run_state(flow_run_id, Cancelled(message=why), force=True)
            del pending[flow_run_id]
