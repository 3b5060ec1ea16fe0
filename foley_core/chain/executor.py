"""Run the chain graph's steps over many videos: the one executor core both `run_chain` and the
`process-shard` flow use (foley_core.chain.graph declares the steps).

`run_step` runs one step over many works: each video (and each event, for per-event steps) is looked up
in the step cache under its own content key and computed only when missing; a video whose step fails is
marked failed and drops out, the others go on. `run_graph` is the plain in-process loop over all steps;
it asks a step's transient faults again as the flow's step task does (the videos it finished keep
their results; a video cut short is asked again whole, unless a cache given to it kept its items).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from v2t_foley.foley_core.chain.chunkworks import merge_works, split_works
from v2t_foley.foley_core.chain.graph import (
    MISSING,
    ChainContext,
    Step,
    StepCache,
    Work,
    chunk_steps,
    keys_of,
    video_steps,
)
from v2t_foley.foley_core.chain.steps import StepResult, merge_results
from v2t_foley.foley_core.errors import TransientBackendError

log = logging.getLogger(__name__)
STEP_ATTEMPTS = 3  # a step's attempts in the plain loop: the flow's step task has retries=2
RETRY_DELAY_S = 5.0  # between them, as the step task's retry_delay_seconds


@dataclass
class StepTally:
    """How a step's items were answered, for logs and tests."""

    computed: int = 0  # items computed now
    cached: int = 0  # items found in the cache
    failed: list[str] = field(default_factory=list)  # ids of videos that failed this step


def run_step(
    step: Step,
    works: list[Work],
    ctx: ChainContext,
    cache: StepCache,
    *,
    threads: int = 1,
    raise_transient: bool = False,
) -> StepTally:
    """Run `step` for every live work: cached items are read, missing ones computed (concurrently across
    videos with `threads` > 1, so a batching model sees batches). A video that fails is marked failed.
    With `raise_transient`, a transient fault (OOM, a dropped connection) is raised after the others are
    done and cached, so the caller's retry recomputes only the videos that are missing."""
    tally = StepTally()
    # a retried task finds the videos its first attempt finished: they keep their result (and trace)
    live = [w for w in works if w.error is None and step.name not in w.results]
    jobs: list[tuple[Work, Any, str]] = []
    for work in live:
        items = work.value("identify") if step.per_event else [None]
        keys = keys_of(step, ctx, work, items)
        work.keys[step.name] = keys
        jobs.extend(zip([work] * len(items), items, keys, strict=True))

    def one(job: tuple[Work, Any, str]) -> StepResult | BaseException:
        work, item, key = job
        found = cache.get(step, key)
        if found is not MISSING:
            tally.cached += 1
            return found
        try:
            result = step.compute(ctx, work, item)
        except Exception as error:  # the video's failure, not the step's
            return error
        cache.put(step, key, result)
        tally.computed += 1
        return result

    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(jobs)), thread_name_prefix=step.name) as pool:
            outcomes = list(pool.map(one, jobs))
    else:
        outcomes = [one(job) for job in jobs]

    transient: TransientBackendError | None = None
    by_work: dict[int, list[StepResult | BaseException]] = {}
    for (work, _, _), outcome in zip(jobs, outcomes, strict=True):
        by_work.setdefault(id(work), []).append(outcome)
    for work in live:
        outcomes_here = by_work.get(id(work), [])
        error = next((o for o in outcomes_here if isinstance(o, BaseException)), None)
        if isinstance(error, TransientBackendError) and raise_transient:
            transient = transient or error
            continue
        try:
            if error is not None:
                raise error
            results = [o for o in outcomes_here if isinstance(o, StepResult)]
            result = merge_results(results) if step.per_event else results[0]
            work.results[step.name] = result
            step.keep(ctx, work, result)
        except Exception as failure:
            work.error = failure
            tally.failed.append(work.id)
    if transient is not None:
        raise transient
    return tally


def run_graph(
    works: list[Work],
    ctx: ChainContext,
    cache: StepCache | None = None,
    *,
    on_step: Callable[[str], None] | None = None,
) -> None:
    """Every step over `works`, in process (the plain loop's executor): the per-video steps, the split
    into chunks, the per-chunk steps, the merge (what the process-shard flow does with tasks)."""
    cache = cache or StepCache()
    for step in video_steps(ctx):
        if on_step:
            on_step(step.name)
        run_step_retrying(step, works, ctx, cache)
    chunks = split_works(works, ctx)
    for step in chunk_steps(ctx):
        if on_step:
            on_step(step.name)
        run_step_retrying(step, chunks, ctx, cache)
    merge_works(works, ctx)


def run_step_retrying(step: Step, works: list[Work], ctx: ChainContext, cache: StepCache) -> StepTally:
    """`run_step`, with its transient faults (an out-of-memory wave, a prefix-store attention that failed
    after its check, a server that gave up) asked again up to `STEP_ATTEMPTS` times; on the last
    attempt they fail their videos."""
    for attempt in range(1, STEP_ATTEMPTS):
        try:  # what the attempt finished is kept in its works: only the missing videos are asked again
            return run_step(step, works, ctx, cache, raise_transient=True)
        except TransientBackendError as error:
            log.warning(
                "step %s: %s; asking its missing videos again (attempt %d of %d) in %.0f s",
                step.name,
                error,
                attempt + 1,
                STEP_ATTEMPTS,
                RETRY_DELAY_S,
            )
            time.sleep(RETRY_DELAY_S)
    return run_step(step, works, ctx, cache)
