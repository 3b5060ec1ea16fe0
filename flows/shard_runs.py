"""A build's shards on a work pool: dealt to `shard_runs` process-shards runs, claimed one at a time.

A worker starts each flow run in a new process, which loads the model and compiles its decode step
(minutes for the 7B on a cold compile cache), so a build deals its shards to a few long runs rather
than a run per shard. Each run takes its own shards first, then any other shard of the build nobody
has taken (`shard_count`): a shard is claimed by a lease in the build's run folder (`_runs/<run>/`,
beside the shards' entries), so one run works on it at a time, and marked finished there
(`<n>.done`, its error inside when it failed), so no run takes it again; the build removes the folder
when it ends. A slow worker holds no shard back: the others take what is left, and a run that finds
nothing left ends; once every shard is marked, runs no worker has started yet are cancelled. When
every run has ended, the shards without a mark are named: their run crashed, or no worker started it.
"""

from __future__ import annotations

import json
import time

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

    A run that ends other than Completed fails this build with its message; runs that no worker starts
    within `start_timeout_s` while none of them runs (or ends) are cancelled; then every shard without
    its mark is named, with the pool when runs never started.
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
    never_started = 0
    pending = dict(runs)
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
                        failures.append(f"run dealt shards {group} ({state.name}: {message})")
                        logger.error("run %s of shards %s: %s, %s", flow_run_id, group, state.name, message)
                elif state.type in (StateType.SCHEDULED, StateType.PENDING) and (
                    time.monotonic() - waiting_since > start_timeout_s
                ):
                    client.set_flow_run_state(
                        flow_run_id, Cancelled(message="no worker started it"), force=True
                    )
                    del pending[flow_run_id]
                    never_started += 1
    left = unfinished(dataset, run_id, shards)
    problems = []
    if failures:
        problems.append("shard run(s) failed: " + "; ".join(failures))
    if left and never_started:
        problems.append(
            f"no worker of work pool {work_pool!r} started shard(s) {left} within "
            f"{start_timeout_s:.0f} s (start one: prefect worker start --pool {work_pool})"
        )
    elif left:
        problems.append(f"shard(s) {left} were not finished (their run crashed or stopped; rerun the build)")
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
