"""Consecutive steps of the chain graph over many videos, as a pipeline (chain/executor.py runs it).

A video moves on to its next step as soon as its own items of this one are done (its identify answer,
then its events' reason answers, then its synthesis), instead of waiting for the slowest video of the
shard to finish the step: every step's questions reach the model together. A batching model's slots
are then refilled by whichever question waits, whatever its step, instead of draining at each step's
end while the last few long answers decode (a continuous decoder's steps cost about the same with 4
live rows as with 32 on a GPU; bench/gpu_factory.py counts the rows).

Each item is what `run_step` always did: looked up in the step cache under its key, computed when
missing, cached; a video whose item fails is marked failed and stops. A transient fault (with
`raise_transient`) stops its video where it is, unfailed, and is raised once every other video is
done: the caller's retry finds the finished steps in the videos' results and the cache. What failed a
whole step before (the step cache failing, keys that cannot be made) stops its video unfailed too, and
is raised once the others are done. Later steps' items go first: a video that has answered a step
finishes before new videos start, so the videos holding frames and pixel values stay about as many
as the threads, whatever the shard's size.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from v2t_foley.foley_core.chain.graph import MISSING, ChainContext, Step, StepCache, Work, keys_of
from v2t_foley.foley_core.chain.steps import StepResult, merge_results
from v2t_foley.foley_core.errors import TransientBackendError

STOPPED = StepResult(None)  # an item cut short (the run's failure, an interrupt): its work stops, unfailed


@dataclass
class _Visit:
    """One work's items of one step, in flight."""

    work: Work
    k: int  # the step's place in the pipeline
    outcomes: list[StepResult | BaseException | None]  # by item
    left: int  # items not answered yet


@dataclass
class StepTally:
    """How a step's items were answered, for logs and tests."""

    computed: int = 0  # items computed now
    cached: int = 0  # items found in the cache
    failed: list[str] = field(default_factory=list)  # ids of videos that failed this step


class Pipeline:
    """One run of `steps` over `works` (see the module docstring); `run` returns each step's tally."""

    def __init__(
        self, steps: list[Step], works: list[Work], ctx: ChainContext, cache: StepCache, raise_transient: bool
    ) -> None:
        self.steps, self.works, self.ctx, self.cache = steps, works, ctx, cache
        self.raise_transient = raise_transient
        self.tallies = {step.name: StepTally() for step in steps}
        self.transient: TransientBackendError | None = None
        # what fails the whole run, as it failed a step before: the step cache's failure, keys that cannot
        # be made (a template missing), an interrupt; raised once every work stopped
        self.fatal: BaseException | None = None
        self._cancelled = False  # the caller was interrupted: what is queued is not computed
        self._lock = threading.Lock()  # tallies, counters
        self._moving = len(works)  # works not yet through every step (or stopped)
        self._all_done = threading.Event()
        # items waiting for a thread, a later step's first (then in the order queued): a video that got
        # this far is finished before new ones start, so the videos between steps (and what they hold:
        # frames, pixel values) stay few however large the shard
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], None] | None]] = queue.PriorityQueue()
        self._queued = itertools.count()
        self._threaded = False

    def run(self, threads: int) -> dict[str, StepTally]:
        if not self.works:
            return self.tallies
        if threads > 1:
            self._threaded = True
            pool = [
                threading.Thread(target=self._serve, name=f"{self.steps[0].name}-{n}", daemon=True)
                for n in range(threads)
            ]
            for thread in pool:
                thread.start()
            try:
                for work in self.works:
                    self._advance(work, 0)
                self._all_done.wait()
            except BaseException:
                self._cancelled = True  # the threads drain the queue without computing
                raise
            finally:
                for _ in pool:  # after every queued item: a stop sorts after any step's
                    self._queue.put((len(self.steps), next(self._queued), None))
                for thread in pool:
                    thread.join()
        else:  # in the caller's thread, item after item (a model called from one thread at a time)
            for work in self.works:
                self._advance(work, 0)
        order = {work.id: k for k, work in enumerate(self.works)}
        for tally in self.tallies.values():
            tally.failed.sort(key=lambda work_id: order.get(work_id, 0))
        if self.fatal is not None:
            raise self.fatal
        if self.transient is not None:
            raise self.transient
        return self.tallies

    def _advance(self, work: Work, k: int) -> None:
        """Queue `work`'s items of the first step from `steps[k]` on that it still needs; when none is
        left (or it failed), it is done."""
        try:
            while k < len(self.steps) and work.error is None:
                step = self.steps[k]
                if step.name in work.results:  # a retried task: its first attempt finished this one
                    k += 1
                    continue
                items = work.value("identify") if step.per_event else [None]
                keys = keys_of(step, self.ctx, work, items)
                work.keys[step.name] = keys
                if not items:  # an event step of a video without events: an empty result, at once
                    if not self._settle(work, step, []):
                        break
                    k += 1
                    continue
                visit = _Visit(work, k, [None] * len(items), len(items))
                for index, (item, key) in enumerate(zip(items, keys, strict=True)):
                    run = partial(self._item, visit, index, item, key)
                    if self._threaded:
                        self._queue.put((-k, next(self._queued), run))
                    else:
                        run()
                return
        except BaseException as failure:  # its keys could not be made: the run's failure, not the video's
            self._stop(failure)
        self._done()

    def _serve(self) -> None:
        while True:
            _, _, run = self._queue.get()
            if run is None:
                return
            run()

    def _item(self, visit: _Visit, index: int, item: Any, key: str) -> None:
        work, step = visit.work, self.steps[visit.k]
        try:
            visit.outcomes[index] = STOPPED if self._cancelled else self._answer(step, work, item, key)
        except BaseException as error:  # the step cache's (a store that cannot be read): the run's
            self._stop(error)
            visit.outcomes[index] = STOPPED
        with self._lock:
            visit.left -= 1
            if visit.left:
                return
        try:
            settled = self._settle(work, step, visit.outcomes)
        except BaseException as failure:
            self._stop(failure)
            settled = False
        if settled:
            self._advance(work, visit.k + 1)
        else:
            self._done()

    def _answer(self, step: Step, work: Work, item: Any, key: str) -> StepResult | BaseException:
        found = self.cache.get(step, key)
        if found is not MISSING:
            with self._lock:
                self.tallies[step.name].cached += 1
            return found
        try:
            result = step.compute(self.ctx, work, item)
        except Exception as error:  # the video's failure, not the step's
            return error
        self.cache.put(step, key, result)
        with self._lock:
            self.tallies[step.name].computed += 1
        return result

    def _settle(self, work: Work, step: Step, outcomes: list[StepResult | BaseException | None]) -> bool:
        """Keep `work`'s result of `step` from its items' outcomes; False when the work stops here."""
        if any(o is STOPPED for o in outcomes):
            return False
        error = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if isinstance(error, TransientBackendError) and self.raise_transient:
            with self._lock:
                self.transient = self.transient or error
            return False
        try:
            if error is not None:
                raise error
            results = [o for o in outcomes if isinstance(o, StepResult)]
            result = merge_results(results) if step.per_event else results[0]
            work.results[step.name] = result
            step.keep(self.ctx, work, result)
        except Exception as failure:
            self._fail(work, step, failure)
            return False
        return True

    def _stop(self, error: BaseException) -> None:
        """The run fails with `error` once every work stopped (the work at hand stops unfailed)."""
        with self._lock:
            self.fatal = self.fatal or error

    def _fail(self, work: Work, step: Step, failure: BaseException) -> None:
        work.error = failure
        with self._lock:
            self.tallies[step.name].failed.append(work.id)

    def _done(self) -> None:
        with self._lock:
            self._moving -= 1
            if self._moving == 0:
                self._all_done.set()
