"""Run the chain graph's steps over many videos: the one executor core both `run_chain` and the
`process-shard` flow use (foley_core.chain.graph declares the steps).

`run_step` runs one step over many works: each video (and each event, for per-event steps) is looked up
in the step cache under its own content key and computed only when missing; a video whose step fails is
marked failed and drops out, the others go on; `run_steps` runs consecutive steps so, as a pipeline
(chain/pipeline.py: the factory's model task). `run_graph` is the plain in-process loop over all steps;
it asks a step's transient faults again as the flow's step task does (the videos it finished keep
their results; a video cut short is asked again whole, unless a cache given to it kept its items).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from v2t_foley.foley_core.chain.chunkworks import merge_works, split_works
from v2t_foley.foley_core.chain.graph import (
    ChainContext,
    Step,
    StepCache,
    Work,
    chunk_steps,
    video_steps,
)
from v2t_foley.foley_core.chain.pipeline import Pipeline, StepTally
from v2t_foley.foley_core.errors import TransientBackendError

log = logging.getLogger(__name__)
STEP_ATTEMPTS = 3  # a step's attempts in the plain loop: the flow's step task has retries=2
RETRY_DELAY_S = 5.0  # between them, as the step task's retry_delay_seconds


def step_threads(step: Step, ctx: ChainContext, threads: int) -> int:
    """How many of `step`'s items run at once: `threads`, and for a step that asks the model, at least
    twice as many as the model answers side by side (`VideoLLM.parallel_requests`: a batch, decode
    slots, a server's requests in flight). Each item is one caller waiting on its answer, so fewer
    callers than slots would leave slots empty (16 threads once capped a 32-slot decoder's per-event
    and per-video steps at 16 rows); the second half wait, prepared, to take a slot the moment one
    frees. A model that takes one caller at a time (1) keeps `threads`."""
    if not step.uses_model:
        return threads
    try:
        parallel = ctx.model().parallel_requests
    except Exception:  # a model that cannot load fails each item that asks it, as it always did
        return threads
    return max(threads, 2 * parallel) if parallel > 1 else threads


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
    videos and events, `step_threads`, so a batching model sees batches). A video that fails is marked
    failed. With `raise_transient`, a transient fault (OOM, a dropped connection) is raised after the
    others are done and cached, so the caller's retry recomputes only the videos that are missing."""
    return run_steps([step], works, ctx, cache, threads=threads, raise_transient=raise_transient)[step.name]


def run_steps(
    steps: list[Step],
    works: list[Work],
    ctx: ChainContext,
    cache: StepCache,
    *,
    threads: int = 1,
    raise_transient: bool = False,
) -> dict[str, StepTally]:
    """`run_step` for consecutive `steps` as a pipeline (chain/pipeline.py): a video moves on to its next
    step as soon as its own items of this one are done, so no step waits for the shard's slowest video
    of the one before. Each step's tally, by name."""
    # a video of one item per step gains nothing from threads; a shard's videos or events do. The model
    # is asked how many it takes only when a video is left to ask it (a failed load failed them all)
    live = [work for work in works if work.error is None]
    many = len(live) > 1 or (len(live) == 1 and any(step.per_event for step in steps))
    size = max(step_threads(step, ctx, threads) for step in steps) if many else 1
    return Pipeline(steps, works, ctx, cache, raise_transient).run(size)


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
