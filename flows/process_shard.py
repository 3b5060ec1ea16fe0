"""`process-shard`: run the chain over one shard of a manifest and write it as one Parquet shard.

Stages run breadth-first over the shard's videos (probe -> sample -> identify -> reason per event ->
synthesize -> validate), each step a cached task, so the model sees batches across videos. A video that
fails any step gets a `failed` row naming the reason; the others go on. The shard file and its marker
are written once, at the end: a run killed midway leaves no half shard, and a rerun finds the finished
steps in the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from flows.artifacts import shard_artifacts
from flows.progress import report
from flows.storage import result_storage
from foley_core.backends import frame_policy_for
from foley_core.chain import ChainResult, FramePlan, merge_results, new_trace, record_step
from foley_core.chain.trace import ChainTrace
from foley_core.errors import ManifestRowError
from foley_core.manifest import ManifestEntry
from foley_core.proposals import ProposalSet
from foley_core.records import failed_row, ok_row
from foley_core.schema.decoding import SynthesisAnswer
from foley_core.schema.events import Event
from foley_core.schema.rows import DatasetRow
from foley_core.store import DatasetStore
from foley_core.video import Video
from tasks.chain_tasks import (
    identify_task,
    probe_task,
    propose_task,
    reason_task,
    sample_task,
    simple_task,
    synthesize_task,
    validate_task,
)
from tasks.gpu import gpu_slot, started_by_worker
from tasks.job import ChainJob


@dataclass
class ShardSummary:
    index: int  # shard number
    rows: int  # rows written
    ok: int  # ok rows
    failed: int  # failed rows
    dropped: int  # rows the store already had from another run (same key, nothing better)
    computed: dict[str, int]  # step -> chain tasks that ran
    cached: dict[str, int]  # step -> chain tasks answered from the cache
    seconds: float  # wall time


@dataclass
class _Work:
    """One video's progress through the stages."""

    entry: ManifestEntry
    video: Video | None = None
    plan: FramePlan | None = None
    trace: ChainTrace | None = None
    keys: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    draft: SynthesisAnswer | None = None
    proposals: ProposalSet | None = None


class _Counts:
    """Cached vs computed task runs per step."""

    def __init__(self) -> None:
        self.computed: dict[str, int] = {}
        self.cached: dict[str, int] = {}

    def result(self, step: str, future: PrefectFuture | list[PrefectFuture]):
        if isinstance(future, list):  # a mapped step: every item must succeed
            return [self.result(step, f) for f in future]
        value = future.result()  # re-raises the task's exception
        tally = self.cached if future.state.name == "Cached" else self.computed
        tally[step] = tally.get(step, 0) + 1
        return value


def _load_model(
    job: ChainJob, works: list[_Work], fail: Callable[[_Work, BaseException], None]
) -> tuple[ChainJob, list[_Work]]:
    """Load the shard's model (inside its GPU slot, before the first model task) and pin its revisions.

    Loaded here, once, rather than lazily by the 16 tasks the first model stage starts at once. A model
    that cannot load fails every video, as each of its tasks would have.
    """
    if not works:
        return job, works
    try:
        llm = job.preload()
    except Exception as error:
        for work in works:
            fail(work, error)
        return job, []
    # Loading may have downloaded a Hub model or moved its ref: the revisions of the weights now loaded
    # are what the shard's model steps are keyed by and its rows record.
    loaded = job.pinned(llm)
    if loaded.revisions != job.revisions:
        get_run_logger().info("model revisions resolved after loading: %s", loaded.revisions)
        for work in works:
            work.trace.model = loaded.identity()
    return loaded, works


# a retried shard recomputes nothing (every finished step is cached) and doubles no row (the commit
# drops what the store already has)
@flow(
    name="process-shard", task_runner=ThreadPoolTaskRunner(max_workers=16), retries=1, retry_delay_seconds=10
)
def process_shard(
    entries: list[ManifestEntry],
    store: str,
    job: ChainJob,
    run_id: str,
    index: int,
    result_storage_uri: str | None = None,
    retry_failed: bool = False,
) -> ShardSummary:
    """Run the chain over `entries` and write shard `index` of run `run_id` into `store`."""
    started = time.perf_counter()
    logger = get_run_logger()
    # one resolution of the weights' revisions for the whole shard: rows and step keys use this value
    job = job.pinned()
    dataset = DatasetStore(store)
    prompts = job.prompts()
    storage = result_storage(result_storage_uri or dataset.cache_uri)
    probe, sample, prop, ident, reas, synth, simp, valid = (
        t.with_options(result_storage=storage)
        for t in (
            probe_task,
            sample_task,
            propose_task,
            identify_task,
            reason_task,
            synthesize_task,
            simple_task,
            validate_task,
        )
    )
    counts = _Counts()
    rows: dict[str, DatasetRow] = {}

    def fail(work: _Work, error: BaseException) -> None:
        logger.warning("%s (%s): failed: %s", work.entry.id, work.entry.video, error)
        rows[work.entry.id] = failed_row(
            work.entry,
            error,
            prompt_version=prompts.version,
            spec=job.backend,
            run_id=run_id,
            video=work.video,
            trace=work.trace,
            revisions=job.resolved_revisions(),
        )
        report("video", id=work.entry.id, status="failed", error=str(error))

    def run_stage(step: str | None, works: list[_Work], submit, keep) -> list[_Work]:
        """Submit one task per video, wait for all, hand each result to `keep`; drop the failures.

        `step` names the chain step for the cached/computed counts (None: probing, neither).
        """
        futures = [(work, submit(work)) for work in works]
        alive = []
        for work, future in futures:
            try:
                keep(work, counts.result(step, future) if step else future.result())
                alive.append(work)
            except Exception as error:
                fail(work, error)
        return alive

    works = []
    for entry in entries:
        if entry.problem:
            fail(_Work(entry), ManifestRowError(entry.problem))
        else:
            works.append(_Work(entry))

    def keep_video(work: _Work, video: Video) -> None:
        work.video = video

    works = run_stage(
        None, works, lambda w: probe.submit(w.entry, job.config.frame_max_side, job.allow_roots), keep_video
    )
    policy = frame_policy_for(job.backend)

    def submit_sample(work: _Work):
        work.keys["sample"] = job.sample_key(work.video.sha256, policy)
        return sample.submit(work.video, policy, work.keys["sample"])

    def keep_plan(work: _Work, plan: FramePlan) -> None:
        work.plan = plan
        info = work.video.info
        work.trace = new_trace(
            work.entry.video,
            work.video.sha256,
            info.duration,
            plan,
            job.identity(),
            prompts,
            job.config,
        )

    works = run_stage("sample", works, submit_sample, keep_plan)

    measured = job.config.timing == "measured" and not job.backend.adapter
    if measured:

        def submit_propose(work: _Work):
            work.keys["propose"] = job.propose_key(work.video.sha256)
            return prop.submit(work.video, job.config.proposals, work.keys["propose"])

        def keep_proposals(work: _Work, proposals: ProposalSet) -> None:
            work.proposals = proposals
            work.trace.proposals = proposals.model_dump()
            work.trace.notes.extend(proposals.notes)

        works = run_stage("propose", works, submit_propose, keep_proposals)

    one_pass = bool(job.backend.adapter)  # an adapter writes the script from the simple prompt, in one call
    with gpu_slot(enabled=job.backend.backend == "transformers" and bool(works) and started_by_worker()):
        job, works = _load_model(job, works, fail)

        def submit_simple(work: _Work):
            work.keys["synthesize"] = job.model_step_key("simple", work.video.sha256, [work.keys["sample"]])
            return simp.submit(work.video, work.plan, job, work.keys["synthesize"])

        def keep_one_pass(work: _Work, result) -> None:
            record_step(work.trace, "simple", result)
            work.draft = result.value

        if one_pass:
            works = run_stage("simple", works, submit_simple, keep_one_pass)

        def submit_identify(work: _Work):
            upstream = [work.keys["sample"]] + ([work.keys["propose"]] if measured else [])
            work.keys["identify"] = job.model_step_key("identify", work.video.sha256, upstream)
            return ident.submit(work.video, work.plan, job, work.keys["identify"], work.proposals)

        def keep_events(work: _Work, result) -> None:
            record_step(work.trace, "identify", result)
            work.events = result.value

        if not one_pass:
            works = run_stage("identify", works, submit_identify, keep_events)

        def submit_reasons(work: _Work):
            futures = []
            for event in work.events:
                key = job.model_step_key(
                    "reason", work.video.sha256, [work.keys["identify"]], item=event.index
                )
                work.keys[f"reason-{event.index}"] = key
                futures.append(reas.submit(work.video, work.plan, event, job, key))
            return futures

        def keep_reasons(work: _Work, results) -> None:
            record_step(work.trace, "reason", merge_results(results))

        if not one_pass:
            works = run_stage("reason", works, submit_reasons, keep_reasons)

        def submit_synthesize(work: _Work):
            upstream = [work.keys["identify"]] + [work.keys[f"reason-{e.index}"] for e in work.events]
            work.keys["synthesize"] = job.model_step_key("synthesize", work.video.sha256, upstream)
            return synth.submit(
                work.video, work.plan, work.events, work.trace.reasoning, job, work.keys["synthesize"]
            )

        def keep_draft(work: _Work, result) -> None:
            record_step(work.trace, "synthesize", result)
            work.draft = result.value

        if not one_pass:
            works = run_stage("synthesize", works, submit_synthesize, keep_draft)

    def submit_validate(work: _Work):
        upstream = [work.keys["synthesize"]] + ([work.keys["propose"]] if measured else [])
        key = job.validate_key(work.video.sha256, upstream)
        return valid.submit(
            work.draft, work.events, work.video.info.duration, job.config.timing, key, work.proposals
        )

    def keep_script(work: _Work, result) -> None:
        record_step(work.trace, "validate", result)
        chain = ChainResult(script=result.value, trace=work.trace)
        rows[work.entry.id] = ok_row(work.entry, work.video, chain, job.backend, run_id)
        report("video", id=work.entry.id, status="ok")

    run_stage("validate", works, submit_validate, keep_script)

    ordered = [rows[e.id] for e in entries if e.id in rows]
    # under the store's commit lease: rows another run already wrote are dropped, not doubled
    marker = dataset.write_shard(ordered, run_id, index, replace_failed=retry_failed) if ordered else None
    summary = ShardSummary(
        index=index,
        rows=marker.added_ok + marker.added_failed if marker else 0,
        ok=marker.added_ok if marker else 0,
        failed=marker.added_failed if marker else 0,
        dropped=marker.dropped if marker else len(ordered),
        computed=counts.computed,
        cached=counts.cached,
        seconds=round(time.perf_counter() - started, 3),
    )
    logger.info(
        "shard %d: %d rows (%d ok, %d failed), %d already in the store; steps computed %s, cached %s; %.1f s",
        index,
        summary.rows,
        summary.ok,
        summary.failed,
        summary.dropped,
        summary.computed,
        summary.cached,
        summary.seconds,
    )
    report("shard", index=index, rows=summary.rows, ok=summary.ok, failed=summary.failed)
    shard_artifacts(summary)
    return summary
