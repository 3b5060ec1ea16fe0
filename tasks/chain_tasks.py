"""The chain graph's steps as Prefect tasks: one task run per step over a whole shard, the model's steps
(identify, reason, synthesize) one task run together, as a pipeline.

Inside a task, every video (and every event of per-event steps) is looked up in the step cache under its
own content key and computed only when missing (foley_core.chain.executor.run_steps), so a shard makes
a few task runs whatever its size, and a retry recomputes only the videos that are missing. In the
model's task a video goes on to its next step as soon as its own answers are in, so the model's
batch is refilled from every step instead of draining at each step's end. Results live in the step
cache, not in Prefect: no task result is persisted.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from v2t_foley.foley_core.chain.executor import StepTally, run_steps
from v2t_foley.foley_core.chain.graph import ChainContext, StepCache, Work, graph
from v2t_foley.foley_core.manifest import ManifestEntry
from v2t_foley.foley_core.video import open_video
from v2t_foley.tasks.retries import is_transient_error, retry_transient

# concurrent items per step (videos measured at once, probes): a model step runs at least twice as many
# as the model answers side by side (foley_core.chain.executor.step_threads), so its slots stay full
STEP_THREADS = 16
UNCACHED = {"cache_policy": NO_CACHE, "persist_result": False}


@task(
    name="probe",
    task_run_name="probe",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_transient,
    **UNCACHED,
)
def probe_task(
    entries: list[ManifestEntry], max_side: int | None, allow_roots: tuple[str, ...] | None
) -> list[Work | BaseException]:
    """Fetch, hash and probe every video of the shard: its Work, or why it cannot be read."""

    def probe(entry: ManifestEntry) -> Work | BaseException:
        try:
            video = open_video(entry.video, max_side=max_side, allow_roots=allow_roots)
        except Exception as error:
            return error
        return Work(id=entry.id, uri=entry.video, video=video)

    with ThreadPoolExecutor(max_workers=STEP_THREADS, thread_name_prefix="probe") as pool:
        probed = list(pool.map(probe, entries))
    transient = next((p for p in probed if isinstance(p, BaseException) and is_transient_error(p)), None)
    if transient is not None and not _last_attempt():
        raise transient  # a dropped connection is retried, not recorded as a bad video
    return probed


def _last_attempt() -> bool:
    run = TaskRunContext.get()
    return run is None or run.task_run.run_count > (run.task.retries or 0)


@task(name="step", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, **UNCACHED)
def step_task(
    names: list[str], works: list[Work], ctx: ChainContext, cache: StepCache
) -> dict[str, StepTally]:
    """Consecutive steps of the graph over the shard's live videos, as a pipeline (one step, or the
    model's steps together: foley_core/chain/pipeline.py). Transient faults (OOM, a dropped connection)
    retry the task, recomputing only what is missing; on the last attempt they fail their videos."""
    steps = [next(s for s in graph(ctx) if s.name == name) for name in names]
    return run_steps(steps, works, ctx, cache, threads=STEP_THREADS, raise_transient=not _last_attempt())
