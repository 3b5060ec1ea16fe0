"""`process-shard`: the chain graph over one shard of a build; one Parquet shard out.

The shard's entries come from a small shard manifest in the store (flow-run parameters stay small).
Each step of the graph (foley_core.chain.graph) is one task over every video of the shard, and the
model's steps one task together (a pipeline: a video asks its next step's questions as soon as its own
answers are in), so a shard makes a few task runs whatever its size; inside a task each video is cached
under its own content key, and a video that fails a step becomes a failed row naming the reason while
the others go on. The model is loaded once, inside the worker's GPU slot, before the first model step.
The rows are committed at the end, under the store's commit lease: a run killed midway leaves no half
shard, and a rerun finds the finished steps in the step cache.

`process-shards` runs shards of a build in turn in one process (what a build on a work pool starts, a
run per shard or `shard_runs` of them, each claiming shards as it goes: flows/shard_claims.py): the
model is loaded, and its decode step compiled, once for all of them rather than once per shard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefect import get_run_logger
from prefect.utilities.annotations import quote

from v2t_foley.flows.artifacts import shard_artifacts
from v2t_foley.flows.core_logs import logged_flow
from v2t_foley.flows.progress import report
from v2t_foley.flows.shard_claims import (
    STOPS_PER_MACHINE,
    ShardKillsItsRuns,
    check_takeover,
    claimed_shards,
    finish,
    note_stop,
    shard_manifest,
    stops_here,
)
from v2t_foley.foley_core.backends import frame_policy_for
from v2t_foley.foley_core.chain import ChainResult
from v2t_foley.foley_core.chain.chunkworks import merge_works, split_works
from v2t_foley.foley_core.chain.graph import ChainContext, Work, chunk_steps, video_steps
from v2t_foley.foley_core.chain.stepcache import FileStepCache
from v2t_foley.foley_core.errors import BackendError, FoleyError, ManifestRowError
from v2t_foley.foley_core.manifest import read_entries
from v2t_foley.foley_core.proposals.processes import shared_measure
from v2t_foley.foley_core.records import failed_row, ok_row
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.tasks.chain_tasks import probe_task, step_task
from v2t_foley.tasks.gpu import gpu_slot, started_by_worker
from v2t_foley.tasks.job import ChainJob


@dataclass
class ShardSummary:
    index: int  # shard number
    rows: int  # rows this shard added to the store
    ok: int  # ok rows added
    failed: int  # failed rows added
    dropped: int  # rows the store already had from another run (same key, nothing better)
    computed: dict[str, int] = field(default_factory=dict)  # step -> items computed
    cached: dict[str, int] = field(default_factory=dict)  # step -> items read from the step cache
    # step -> wall time of its task runs: where a shard's time goes (one task after another; the model's
    # steps are one task, a pipeline, under their names joined by "+": "identify+reason+synthesize")
    step_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # wall time
    model_ok: int = 0  # videos (or chunks) that came through the model's steps
    # videos (or chunks) that reached the model's steps and failed there by an error of the process (its
    # load, the device, the backend), not of their own input or answer (`_of_the_process`)
    model_failed: int = 0


def chain_context(job: ChainJob) -> ChainContext:
    """The graph's context for a job whose revisions are pinned."""
    return ChainContext(
        model=job.preload,
        identity=job.identity(),
        policy=frame_policy_for(job.backend),
        prompts=job.prompts(),
        config=job.config,
        one_pass=bool(job.backend.adapter),
        measure=shared_measure(),  # in processes on a worker of many cores (FOLEY_MEASURE_PROCESSES)
    )


# a retried shard recomputes nothing (every finished step is cached) and doubles no row (the commit
# drops what the store already has)
@logged_flow(name="process-shard", retries=1, retry_delay_seconds=10)
def process_shard(
    shard: str,
    store: str,
    job: ChainJob,
    run_id: str,
    index: int,
    result_storage_uri: str | None = None,
    retry_failed: bool = False,
) -> ShardSummary:
    """Run the chain graph over the entries in the shard manifest `shard` and commit them to `store`."""
    started = time.perf_counter()
    logger = get_run_logger()
    entries = read_entries(shard)
    # one resolution of the weights' revisions for the whole shard: rows and step keys use this value
    job = job.pinned()
    dataset = DatasetStore(store)
    cache = FileStepCache(result_storage_uri or dataset.cache_uri)
    rows: dict[str, DatasetRow] = {}
    by_id = {entry.id: entry for entry in entries}

    def fail(entry_id: str, error: BaseException, work: Work | None = None) -> None:
        entry = by_id[entry_id]
        logger.warning("%s (%s): failed: %s", entry.id, entry.video, error)
        rows[entry.id] = failed_row(
            entry,
            error,
            prompt_version=job.prompts().version,
            spec=job.backend,
            run_id=run_id,
            video=work.video if work else None,
            trace=work.trace if work else None,
            revisions=job.resolved_revisions(),
        )
        report("video", id=entry.id, status="failed", error=str(error))

    readable = []
    for entry in entries:
        if entry.problem:
            fail(entry.id, ManifestRowError(entry.problem))
        else:
            readable.append(entry)
    works: list[Work] = []
    probed_all = probe_task(quote(readable), job.config.frame_max_side, job.allow_roots)
    for entry, probed in zip(readable, probed_all, strict=True):
        if isinstance(probed, BaseException):
            fail(entry.id, probed)
        else:
            probed.video.max_side = job.config.frame_max_side
            works.append(probed)

    ctx = chain_context(job)
    computed: dict[str, int] = {}
    cached: dict[str, int] = {}
    step_seconds: dict[str, float] = {}

    def run(step_names: list[str], items: list[Work]) -> None:
        # `items`: the videos, or (after the split) the chunk works: a long video's chunks are items of
        # the same task as the short videos, each cached under its own key
        name = "+".join(step_names)  # the model's steps run as one pipeline: their wall time is one
        step_started = time.perf_counter()
        tallies = step_task.with_options(name=name, task_run_name=name)(
            step_names, quote(items), quote(ctx), quote(cache)
        )
        step_seconds[name] = step_seconds.get(name, 0.0) + time.perf_counter() - step_started
        for step_name, tally in tallies.items():
            computed[step_name] = computed.get(step_name, 0) + tally.computed
            cached[step_name] = cached.get(step_name, 0) + tally.cached
        for work in items:
            if work.error is not None and work.parent is None and work.id not in rows:
                fail(work.id, work.error, work)

    for step in video_steps(ctx):  # per whole video (the streaming measurements)
        run([step.name], works)
    chunks = split_works(works, ctx)
    steps = chunk_steps(ctx)
    first_model = next((k for k, s in enumerate(steps) if s.uses_model), len(steps))
    for step in steps[:first_model]:
        run([step.name], chunks)
    live = [w for w in chunks if w.error is None]
    in_slot = job.backend.backend == "transformers" and bool(live) and started_by_worker()
    model_steps = [step.name for step in steps[first_model:] if step.uses_model]
    with gpu_slot(enabled=in_slot):
        if live:
            job, ctx = _load_model(job, ctx, live)
        # one task, a pipeline: a video asks its next step's questions once it can (none is run when
        # no video is left to ask the model: a failed load failed them all)
        if model_steps and any(work.error is None for work in chunks):
            run(model_steps, chunks)
    model_failed = sum(1 for work in live if work.error is not None and _of_the_process(work.error))
    model_ok = sum(1 for work in live if work.error is None)
    for step in steps[first_model:]:
        if not step.uses_model:
            run([step.name], chunks)
    merge_works(works, ctx)  # a chunked video's script and trace (or the failed chunk, named)

    for work in works:
        if work.error is None:
            chain = ChainResult(script=work.value("validate"), trace=work.trace)
            rows[work.id] = ok_row(by_id[work.id], work.video, chain, job.backend, run_id)
            report("video", id=work.id, status="ok")
        elif work.id not in rows:
            fail(work.id, work.error, work)

    ordered = [rows[e.id] for e in entries if e.id in rows]
    # under the store's commit lease: rows another run already wrote are dropped, not doubled
    marker = dataset.write_shard(ordered, run_id, index, replace_failed=retry_failed) if ordered else None
    summary = ShardSummary(
        index=index,
        rows=marker.added_ok + marker.added_failed if marker else 0,
        ok=marker.added_ok if marker else 0,
        failed=marker.added_failed if marker else 0,
        dropped=marker.dropped if marker else len(ordered),
        computed={k: v for k, v in computed.items() if v},
        cached={k: v for k, v in cached.items() if v},
        step_seconds={k: round(v, 3) for k, v in step_seconds.items()},
        seconds=round(time.perf_counter() - started, 3),
        model_ok=model_ok,
        model_failed=model_failed,
    )
    logger.info(
        "shard %d: %d rows (%d ok, %d failed), %d already in the store; computed %s, cached %s; %.1f s"
        " (per step: %s)",
        index,
        summary.rows,
        summary.ok,
        summary.failed,
        summary.dropped,
        summary.computed,
        summary.cached,
        summary.seconds,
        summary.step_seconds,
    )
    report("shard", index=index, rows=summary.rows, ok=summary.ok, failed=summary.failed)
    shard_artifacts(summary, run_id)
    return summary


FAILURES_IN_A_ROW = 2  # shards failing one after another that stop a process-shards run: its process is
# suspect (its store access, say), and would mark the build's shards failed faster than others take them


class ShardsFailed(FoleyError):
    """Shards of a process-shards run failed (each after its retry), or it stopped taking shards; the
    message names them and says why."""


@logged_flow(name="process-shards")
def process_shards(
    store: str,
    job: ChainJob,
    run_id: str,
    indexes: list[int],
    shard_count: int = 0,
    result_storage_uri: str | None = None,
    retry_failed: bool = False,
) -> list[ShardSummary]:
    """Run `process-shard` over shards of build `run_id` in turn, in this process: `indexes` first, then,
    with `shard_count`, any other shard of the build that no run has taken, and then, until every shard
    is marked, any whose run crashed (`claimed_shards`).

    A shard that fails (after its retry) is marked finished with its error and the run goes on; the run
    then fails naming it. Two shards failing in a row (a shard refused by `check_takeover` is not
    this run's failure, and does not count), or a shard whose videos all failed in the model's
    steps by an error of the process (a device error would fail every video of every later shard), stop
    the run from taking more (other runs take the rest), and the run fails saying why. Once two runs of
    the build stopped on this machine (`WORKER_ID`), its later runs take no shard (`stops_here`). On a
    worker, a run that takes other runs' shards holds the GPU slot from its start, before it claims
    one: waiting for the slot with a shard claimed would hold that shard back.
    """
    logger = get_run_logger()
    dataset = DatasetStore(store)
    done: list[ShardSummary] = []
    failed: list[str] = []
    streak = 0  # shards failed in a row
    on_gpu = job.backend.backend == "transformers" and started_by_worker()
    stopped = ""  # why this run stopped taking shards
    if shard_count and (stops := stops_here(dataset, run_id)) >= STOPS_PER_MACHINE:
        logger.error("%d runs of this build stopped on this machine: it takes none of its shards", stops)
        return []
    with gpu_slot(enabled=on_gpu and shard_count > 0):
        for index, shard in claimed_shards(dataset, run_id, indexes, shard_count):
            manifest = shard_manifest(dataset, run_id, index)
            try:
                try:
                    check_takeover(dataset, run_id, index, shard)
                    summary = process_shard(
                        manifest, store, job, run_id, index, result_storage_uri, retry_failed
                    )
                except Exception as error:
                    logger.error("shard %d failed: %s", index, error)
                    failed.append(f"shard {index}: {error}")
                    finish(dataset, run_id, index, str(error), shard)
                    if isinstance(error, ShardKillsItsRuns):  # refused, not tried: says nothing of this run
                        continue
                    streak += 1
                    if streak == FAILURES_IN_A_ROW:  # the process, more likely than the shards
                        stopped = f"{streak} shards in a row failed"
                        break
                    continue
                finish(dataset, run_id, index, shard=shard)
            finally:
                shard.release()
            done.append(summary)
            streak = 0
            if summary.model_failed and not summary.model_ok:
                stopped = f"every video of shard {index} failed in the model's steps"
                break
    if stopped:
        logger.error("this run takes no more shards: %s", stopped)
        if shard_count:  # the build's later runs on this machine count it
            note_stop(dataset, run_id, stopped)
    if failed or stopped:
        took, parts = len(failed) + len(done), []
        if failed:
            parts.append(f"{len(failed)} of the {took} shard(s) this run took failed: {'; '.join(failed)}")
        if stopped:
            parts.append(f"it stopped: {stopped}")
        raise ShardsFailed("; and ".join(parts))
    return done


def _of_the_process(error: BaseException) -> bool:
    """An error of the model's process (a device error, a backend failing, a failed load), not of one
    video: its input (a frame that cannot be decoded) or its answer (unusable after the repair)."""
    return isinstance(error, BackendError) or not isinstance(error, FoleyError)


def _load_model(job: ChainJob, ctx: ChainContext, live: list[Work]) -> tuple[ChainJob, ChainContext]:
    """Load the model once, before the first model step; a load failure fails every live video.

    Loading may have downloaded a Hub model or moved its ref: the revisions of the weights now loaded
    are what the shard's model steps are keyed by and its rows record.
    """
    try:
        llm = job.preload()
    except Exception as error:
        for work in live:
            work.error = error
        return job, ctx
    loaded = job.pinned(llm)
    if loaded.revisions != job.revisions:
        get_run_logger().info("model revisions resolved after loading: %s", loaded.revisions)
        for work in live:
            if work.trace is not None:
                work.trace.model = loaded.identity()
        return loaded, chain_context(loaded)
    return job, ctx
