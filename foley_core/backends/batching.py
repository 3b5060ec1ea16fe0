"""Coalesce concurrent `generate` calls from many threads into batches for one model.

Prefect runs a shard's tasks in threads; each asks a question or a few. One worker thread owns the
model: it takes the oldest waiting request, gathers others with the same generation parameters (up to
`max_batch`, waiting at most `max_wait_s` for more to arrive), runs them as one batch and hands every
caller its own answer. So a process never runs its model twice at once, and the GPU sees batches.
With a continuous decoder (`--decoder continuous`) greedy requests never wait for a batch: each takes
the next free decode slot, whichever video or task it comes from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from v2t_foley.foley_core.backends.base import Generation, GenerationParams, GenerationRequest, VideoLLM
from v2t_foley.foley_core.video.reader import Frames

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    request: GenerationRequest
    params: GenerationParams
    future: Future


def _settle(future: Future, answer: Generation | BaseException) -> None:
    if isinstance(answer, BaseException):
        future.set_exception(answer)
    else:
        future.set_result(answer)


class _Closed(VideoLLM):
    """What a closed BatchingVideoLLM wraps: no model."""

    def generate(self, requests: Sequence[GenerationRequest], params: GenerationParams) -> list[Generation]:
        raise RuntimeError("the batching backend is closed")


class BatchingVideoLLM(VideoLLM):
    """Wraps a VideoLLM; thread-safe; same identity (model, revision, frame policy) as the inner one."""

    stop_wait_s = 10.0  # how long `stop` waits for the worker to answer what is queued

    def __init__(
        self, inner: VideoLLM, max_batch: int = 8, max_wait_s: float = 0.005, prepare: bool = True
    ) -> None:
        self.inner = inner
        self.max_batch = max_batch
        self.parallel_requests = max_batch  # a batch's rows, or the continuous decoder's slots
        self.max_wait_s = max_wait_s
        # callers make what their requests need that needs no model (grammars, the video's pixel values)
        # before they queue them, when the inner model can (`prepare`); False: its thread makes it all
        self.prepare = prepare
        self.backend = inner.backend
        self.model_id = inner.model_id
        self.revision = inner.revision
        self.adapter = inner.adapter
        self.adapter_revision = inner.adapter_revision
        self.frame_policy = inner.frame_policy
        self.decoder = getattr(inner, "decoder", "generate")
        self.supports_json_schema = inner.supports_json_schema
        self.batches = 0  # batches run, for logs and benchmarks
        self.requests = 0  # requests answered
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._ended = False  # the worker has returned (under _ready)
        self._close_at_end: VideoLLM | None = None  # the model the worker closes as it returns
        self._worker = threading.Thread(target=self._serve, name="foley-batcher", daemon=True)
        self._worker.start()

    def generate(self, requests: Sequence[GenerationRequest], params: GenerationParams) -> list[Generation]:
        # in the caller's thread, so that the model's thread waits on none of it; greedy requests only:
        # the continuous decoder takes them one by one, where sampled ones go to generate's batches
        prepare = getattr(self.inner, "prepare", None) if self.prepare else None
        if prepare is not None and params.temperature == 0:
            prepare(requests)
        pending = [_Pending(r, params, Future()) for r in requests]
        with self._ready:
            if self._closed:
                raise RuntimeError("the batching backend is closed")
            self._queue.extend(pending)
            self._ready.notify()
        return [p.future.result() for p in pending]

    def answer_room(self, frames: Frames, prompt: str) -> int | None:
        return self.inner.answer_room(frames, prompt)

    def _take_batch(self) -> list[_Pending]:
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if not self._queue:
                return []
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(timeout=left)
            params = self._queue[0].params
            batch, rest = [], deque()
            while self._queue:
                item = self._queue.popleft()
                (batch if item.params == params and len(batch) < self.max_batch else rest).append(item)
            self._queue.extendleft(reversed(rest))
            return batch

    def _serve(self) -> None:
        try:
            self._serve_until_closed()
        finally:
            with self._ready:
                self._ended = True
                model, self._close_at_end = self._close_at_end, None
            if model is not None:
                model.close()

    def _serve_until_closed(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            if getattr(self.inner, "continuous", None) is not None and batch[0].params.temperature == 0:
                self._serve_continuously(batch)
                continue
            try:
                answers = self.inner.generate([p.request for p in batch], batch[0].params)
            except BaseException as err:  # every caller of the batch gets the failure
                for item in batch:
                    item.future.set_exception(err)
                continue
            self.batches += 1
            self.requests += len(batch)
            for item, answer in zip(batch, answers, strict=True):
                item.future.set_result(answer)

    def _serve_continuously(self, batch: list[_Pending]) -> None:
        """Greedy requests through the model's continuous decoder (backends/continuous.py): the batch
        starts it, and every greedy request that arrives while it decodes takes the next free slot."""
        first = deque(batch)
        inner = self.inner  # close() may swap it out while this wave decodes

        def take():
            while True:
                item = first.popleft() if first else self._take_greedy()
                if item is None:
                    return None
                self.requests += 1
                try:
                    return inner.ask(
                        item.request, item.params, lambda answer, f=item.future: _settle(f, answer)
                    )
                except Exception as error:  # this request's own fault (a schema without bounds, ...)
                    item.future.set_exception(error)

        try:
            inner.continuous.serve(take)
        except BaseException as error:  # the decoder broke: nobody waits forever for an answer
            for item in first:
                item.future.set_exception(error)
        self.batches += 1

    def _take_greedy(self) -> _Pending | None:
        """The oldest waiting request when it is greedy; None when it samples, so the wave drains and
        the sampled request gets its turn (it never waits behind an endless stream of greedy ones)."""
        with self._ready:
            if self._queue and self._queue[0].params.temperature == 0:
                return self._queue.popleft()
        return None

    def stop(self) -> None:
        """Answer what is queued and end the thread; the inner model stays as it is."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._worker.join(timeout=self.stop_wait_s)

    def close(self) -> None:
        """Stop, then close and drop the inner model.

        Dropping `inner` matters: a caller may still hold this wrapper, and it must not keep the model's
        memory alive (the registry frees it for the next model). A worker still decoding after `stop`'s
        wait keeps using the model: closing it under the worker would drop its compiled step mid-wave
        (it would recompile), so the worker closes it as it returns.
        """
        self.stop()
        inner, self.inner = self.inner, _Closed()
        with self._ready:
            deferred = not self._ended
            if deferred:
                self._close_at_end = inner
        if deferred:
            log.warning("the batching thread is still answering; it closes its model when it ends")
            return
        inner.close()
