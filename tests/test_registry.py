"""One shared model per process: concurrent first askers share one load; another spec replaces the
held model, ending its batching thread and freeing its weights. The tiny model through real
transformers code."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

import v2t_foley.foley_core.backends as backends
from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, load_shared_backend
from v2t_foley.foley_core.backends.registry import ModelRegistry, release_shared_model
from v2t_foley.tasks.job import ChainJob

TINY = BackendSpec(model="tiny-random", device="cpu")


class CountingLoader:
    """The real loader, counted; it lingers a little so racing askers arrive during the load."""

    def __init__(self) -> None:
        self.loads: list[BackendSpec] = []
        self._load = backends.load_backend  # the real one, before any monkeypatch
        self._lock = threading.Lock()

    def __call__(self, spec: BackendSpec):
        with self._lock:
            self.loads.append(spec)
        llm = self._load(spec)
        time.sleep(0.2)  # without the registry's lock every asker would be in here by now
        return llm


@pytest.fixture
def registry():
    loader = CountingLoader()
    held = ModelRegistry(loader)
    yield held, loader
    held.release()


def test_sixteen_first_askers_load_once(registry):
    held, loader = registry
    start = threading.Barrier(16)

    def ask(_):
        start.wait()
        return held.get(TINY)

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, range(16)))
    assert len(loader.loads) == 1
    assert len({id(llm) for llm in got}) == 1
    assert held.get(TINY) is got[0] and len(loader.loads) == 1  # and later askers too


def test_another_spec_closes_the_old_batcher_and_frees_its_model(registry):
    held, loader = registry
    old = held.get(TINY)
    thread, weights, wrapper = old._worker, weakref.ref(old.inner.model), weakref.ref(old.inner)
    assert thread.is_alive()
    new = held.get(BackendSpec(model="tiny-random", device="cpu", batch_size=4))
    assert new is not old and len(loader.loads) == 2
    assert not thread.is_alive()
    gc.collect()
    assert weights() is None and wrapper() is None  # though the test still holds the old batcher
    with pytest.raises(RuntimeError, match="closed"):
        old.generate([], GenerationParams())


def test_changed_revisions_reload_the_same_spec(registry):
    """An adapter retrained into its folder is other weights under the same spec."""
    held, loader = registry
    first = held.get(TINY)
    assert held.get(TINY, (first.revision, first.adapter_revision)) is first
    second = held.get(TINY, ("sha256:other", ""))
    assert second is not first and len(loader.loads) == 2


def test_tasks_share_what_the_flow_preloaded(monkeypatch):
    """The module's registry, as ChainJob uses it: preload loads, every task's settings reuse it."""
    release_shared_model()
    loader = CountingLoader()
    monkeypatch.setattr(backends, "load_backend", loader)
    job = ChainJob(backend=TINY).pinned()
    llm = job.preload()
    loaded = job.pinned(llm)
    with ThreadPoolExecutor(16) as pool:
        settings = list(pool.map(lambda _: loaded.settings(), range(16)))
    assert all(s.llm is llm for s in settings) and len(loader.loads) == 1
    assert load_shared_backend(TINY) is llm  # resolving again finds the same weights
    release_shared_model()


def test_closing_while_the_worker_still_answers_closes_its_model_when_it_ends():
    """A wave that outlasts `stop`'s wait keeps using its model: it is closed as the worker returns,
    not under it (closing drops a compiled step, which the wave would then recompile). The inner model
    is a stand-in that blocks until released: no real model can be held mid-answer on cue."""
    from v2t_foley.foley_core.backends.base import Generation, VideoLLM
    from v2t_foley.foley_core.backends.batching import BatchingVideoLLM

    release, started, closed = threading.Event(), threading.Event(), []

    class Slow(VideoLLM):
        def generate(self, requests, params):
            started.set()
            release.wait(30)
            return [Generation("{}", 1, True, False) for _ in requests]

        def close(self):
            closed.append(threading.current_thread().name)

    batcher = BatchingVideoLLM(Slow())
    batcher.stop_wait_s = 0.1
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(batcher.generate, [None], GenerationParams())
        assert started.wait(10)
        batcher.close()
        assert closed == []  # the worker still answers with it
        release.set()
        assert answer.result(timeout=10)[0].text == "{}"
    batcher._worker.join(10)
    assert closed == ["foley-batcher"]
