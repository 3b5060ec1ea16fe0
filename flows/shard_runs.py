"""A build's shards on a work pool: dealt to `shard_runs` process-shards runs, claimed one at a time.

A worker starts each flow run in a new process, which loads the model and compiles its decode step
(minutes for the 7B on a cold compile cache), so a build deals its shards to a few long runs rather
than a run per shard. Each run takes its own shards first, then any other shard of the build nobody
has taken (`shard_count`): a shard is claimed by a lease in the build's run folder (`_runs/<run>/`,
beside the shards' entries), so one run works on it at a time, and marked finished there
(`<n>.done`, its error inside when it failed), so no run takes it again; the build removes the folder
when it ends. A slow worker holds no shard back: the others take what is left, and a run that finds
nothing left ends; once every shard is marked, runs no worker has started yet are cancelled. A run
that has passed over every shard waits, while shards are unmarked, for any whose run crashed: it takes
that shard over once the crashed run's lease expires (`claimed_shards`). When every run has ended, the
shards without a mark are named: every run that could take them crashed or stopped, or no worker
started one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from prefect import get_run_logger

from v2t_foley.foley_core.errors import FoleyError
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.store.lease import Lease
from v2t_foley.tasks.job import ChainJob


class ShardRunsFailed(FoleyError):
    """Shard runs on a work pool failed, crashed, or never started; the message names them."""


def shard_groups(shards: int, runs: int) -> list[list[int]]:
    """The shard numbers each of `runs` runs takes first (0: a run per shard), dealt in turn."""
    count = shards if runs == 0 else min(runs, shards)
    return [list(range(first, shards, count)) for first in range(count)]


def run_folder(run_id: str) -> str:
    """The build's folder in its store: the shards' entries, leases and marks (removed at the end)."""
    return f"_runs/{run_id}"


def _shard_file(run_id: str, index: int, kind: str) -> str:
    """Store-relative path of shard `index`'s file of `kind`: `jsonl` (its entries), `lease.json` (its
    claim), `done` (its mark)."""
    return f"{run_folder(run_id)}/{index:05d}.{kind}"


def shard_manifest(dataset: DatasetStore, run_id: str, index: int) -> str:
    """The URI of shard `index`'s entries (flow-run parameters stay small)."""
    return dataset.url(_shard_file(run_id, index, "jsonl"))


def _fresh(dataset: DatasetStore, run_id: str) -> None:
    """Forget what the filesystem cached of the build's folder: other runs write marks into it (s3fs
    answers `exists` from its listings cache)."""
    dataset.fs.invalidate_cache(dataset.path(run_folder(run_id)))


def build_ended(dataset: DatasetStore, run_id: str, index: int) -> bool:
    """Whether the build has removed shard `index`'s entries (it ended, or stopped): nothing to take.
    (The entries, not the folder: on S3 a mark written late would make the folder seem to exist.)"""
    _fresh(dataset, run_id)
    return not dataset.fs.exists(dataset.path(_shard_file(run_id, index, "jsonl")))


def claim(dataset: DatasetStore, run_id: str, index: int) -> Lease | None:
    """The lease on shard `index` when this run may work on it now: not finished, not held by a live run
    (None otherwise). Release it when the shard is finished (`finish`) or given up."""
    mark = dataset.path(_shard_file(run_id, index, "done"))
    _fresh(dataset, run_id)
    if dataset.fs.exists(mark):
        return None
    lease_file = dataset.path(_shard_file(run_id, index, "lease.json"))
    lease = Lease(dataset.fs, lease_file, f"shard {index} of build {run_id}")
    if not lease.try_acquire():
        return None
    _fresh(dataset, run_id)
    if dataset.fs.exists(mark):  # finished between the look and the claim
        lease.release()
        return None
    return lease


SWEEP_POLL_S = 10.0  # how often a run that has passed over every shard looks again for one whose run
# crashed: its lease expires 120 s after its last renewal, or at once when its host sees the process gone


def claimed_shards(
    dataset: DatasetStore, run_id: str, indexes: list[int], shard_count: int
) -> Iterator[tuple[int, Lease]]:
    """The shards of build `run_id` this run works on, in order, each with its claim (release it once the
    shard is `finish`ed or given up): `indexes` first; with `shard_count`, then every other shard no run
    has taken; then, while shards are left without a mark, any whose run crashed, taken over once its
    lease lets go. So a crashed run's shard is finished within the build, not left to a rerun; a run
    waits for that (the build waits for its runs anyway) rather than end. Ends when the build ends.
    """
    logger = get_run_logger()

    def ended(index: int) -> bool:
        if build_ended(dataset, run_id, index):
            logger.warning("build %s has ended (its shard files are gone): nothing more to take", run_id)
            return True
        return False

    mine = set(indexes)
    seen: set[int] | None = None  # the shards marked at the last listing
    for index in [*indexes, *(i for i in range(shard_count) if i not in mine)]:
        if index not in mine:  # another run's: skip those a listing shows finished, unlooked at
            seen = marked(dataset, run_id) if seen is None else seen
            if index in seen:
                continue
        if ended(index):
            return
        seen = None  # a claim, and a shard, take time: list again before the next of the others'
        shard = claim(dataset, run_id, index)
        if shard is not None:  # None: finished, or another run's
            yield index, shard
    waited_for: list[int] = []
    while shard_count and (left := unfinished(dataset, run_id, shard_count)):
        took = False
        for index in left:
            if ended(index):
                return
            shard = claim(dataset, run_id, index)
            if shard is not None:
                took = True
                yield index, shard
        if not took:
            if left != waited_for:
                logger.info("waiting for shard(s) %s: other runs hold them (taken over if one crashed)", left)
                waited_for = left
            time.sleep(SWEEP_POLL_S)


class ShardKillsItsRuns(FoleyError):
    """The processes of two runs ended while working on a shard: it is not taken a third time."""


def check_takeover(dataset: DatasetStore, run_id: str, index: int, shard: Lease) -> None:
    """Note that claim `shard` took shard `index` over from a run whose process ended while working on
    it (`<n>.crashed`); the second time, raise ShardKillsItsRuns: a shard two processes died on likely
    kills its process itself (a video that runs the host out of memory, say), and taking it again and
    again would crash every run of the build in turn."""
    if shard.left_by is None:
        return
    note = dataset.path(_shard_file(run_id, index, "crashed"))
    _fresh(dataset, run_id)
    if dataset.fs.exists(note):
        raise ShardKillsItsRuns(
            f"the processes of two runs ended while working on it (the last: {shard.left_by.describe()});"
            " not taken a third time (a rerun of the build tries it again)"
        )
    with dataset.fs.open(note, "w") as handle:
        handle.write(json.dumps({"left_by": shard.left_by.describe()}))
    get_run_logger().warning(
        "shard %d: taken over from a run whose process ended while working on it: %s",
        index,
        shard.left_by.describe(),
    )


def finish(dataset: DatasetStore, run_id: str, index: int, error: str | None = None) -> None:
    """Mark shard `index` finished (committed, or failed after its retry with `error`): taken by no
    run again. Nothing is written once the build has ended (its shard files are gone)."""
    if not build_ended(dataset, run_id, index):
        with dataset.fs.open(dataset.path(_shard_file(run_id, index, "done")), "w") as handle:
            handle.write(json.dumps({"error": error}))


def marked(dataset: DatasetStore, run_id: str) -> set[int]:
    """The shards of the build with a mark, from one listing of its folder (a few requests on S3 for
    thousands of shards, where a look at each shard is one); none once the build ended."""
    try:
        listed = dataset.fs.ls(dataset.path(run_folder(run_id)), detail=False, refresh=True)
    except FileNotFoundError:
        return set()
    names = (str(name).rsplit("/", 1)[-1] for name in listed)
    stems = (name.removesuffix(".done") for name in names if name.endswith(".done"))
    return {int(stem) for stem in stems if stem.isdigit()}


def unfinished(dataset: DatasetStore, run_id: str, shards: int) -> list[int]:
    """The shards of the build without a mark."""
    done = marked(dataset, run_id)
    return [index for index in range(shards) if index not in done]


LOOK_EVERY_S = 30.0  # how often a build waiting on its runs lists the marks (a few requests on S3)
RUN_END_GRACE_S = 300.0  # how long a build waits for runs still going once every shard is marked: a
# live one ends within seconds (its next look, its slot, its imports); a run whose worker went away
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
    `shard_manifest`s) and wait for all of them. With `shard_runs` 0 each run takes its one shard only.

    A run that fails, or is cancelled, fails this build with its message; one that crashes does when
    shards are left unfinished (the other runs take over a crashed run's shard). Runs that no worker
    starts within `start_timeout_s` while none of them runs (or ends) are cancelled, and so are those
    not started once every shard is marked; runs still going `RUN_END_GRACE_S` after that are named
    and not waited for. Then every shard without its mark is named, with the pool when runs never
    started.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.states import Cancelled

    logger = get_run_logger()
    runs = {
        run_deployment(
            name=f"process-shards/{work_pool}",
            parameters={
                "store": dataset.uri,
                "job": job,
                "run_id": run_id,
                "indexes": group,
                "shard_count": shards if shard_runs else 0,
                "result_storage_uri": result_storage,
                "retry_failed": retry_failed,
            },
            timeout=0,
        ).id: group
        for group in shard_groups(shards, shard_runs)
    }
    waiting_since = time.monotonic()  # since a run of ours last started or ended
    failures: list[str] = []
    crashed: list[str] = []
    never_started = 0
    pending = dict(runs)
    next_look = time.monotonic() + LOOK_EVERY_S
    all_marked_at: float | None = None
    with get_client(sync_client=True) as client:
        while pending:
            time.sleep(2)
            lease.check()  # another build took the store over: stop waiting for ours
            states = {run: client.read_flow_run(run).state for run in pending}
            if any(s is not None and (s.is_running() or s.is_final()) for s in states.values()):
                waiting_since = time.monotonic()  # workers are busy with our runs, not missing
            for flow_run_id, group in list(pending.items()):
                state = states[flow_run_id]
                if state is None or flow_run_id not in pending:  # not read yet, or cancelled just now
                    continue
                if state.is_final():
                    waiting_since = time.monotonic()
                    del pending[flow_run_id]
                    if shard_runs and pending and not unfinished(dataset, run_id, shards):
                        _cancel_unstarted(client, pending, states, "every shard was finished")
                    if not state.is_completed():
                        message = state.message or "no message"
                        why = f"run dealt shards {group} ({state.name}: {message})"
                        (crashed if state.is_crashed() else failures).append(why)
                        logger.error("run %s of shards %s: %s, %s", flow_run_id, group, state.name, message)
                elif state.type in (StateType.SCHEDULED, StateType.PENDING) and (
                    time.monotonic() - waiting_since > start_timeout_s
                ):
                    client.set_flow_run_state(
                        flow_run_id, Cancelled(message="no worker started it"), force=True
                    )
                    del pending[flow_run_id]
                    never_started += 1
            if shard_runs and pending and time.monotonic() >= next_look:
                next_look = time.monotonic() + LOOK_EVERY_S
                if unfinished(dataset, run_id, shards):
                    all_marked_at = None
                    continue
                all_marked_at = all_marked_at or time.monotonic()
                _cancel_unstarted(client, pending, states, "every shard was finished")
                if pending and time.monotonic() - all_marked_at > RUN_END_GRACE_S:
                    logger.warning(
                        "every shard is finished, and run(s) %s have not ended %.0f s after: not waited"
                        " for (a run whose worker went away stays Running)",
                        sorted(str(run) for run in pending),
                        RUN_END_GRACE_S,
                    )
                    break
    left = unfinished(dataset, run_id, shards)
    if crashed and left:
        failures.extend(crashed)
    elif crashed:
        logger.warning("run(s) crashed, and the other runs finished their shards: %s", "; ".join(crashed))
    problems = []
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


def _cancel_unstarted(client, pending: dict, states: dict, why: str) -> None:
    """Cancel the runs in `pending` no worker has started (they would find nothing to take)."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    for flow_run_id in list(pending):
        state = states.get(flow_run_id)
        if state is None or state.type in (StateType.SCHEDULED, StateType.PENDING):
            client.set_flow_run_state(flow_run_id, Cancelled(message=why), force=True)
            del pending[flow_run_id]
