"""A request's model inputs without the processor's whole run (backends/prompt_inputs.py): pixel values
made once per frames object in the callers' threads, the same inputs as the processor's, and through
the batching backend the continuous decoder's thread no longer runs the processor for them, while
every answer stays `generate`'s."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.test_continuous import SCHEMA, texts
from tests.test_static_decode import PROMPTS, clip
from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest, load_backend
from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
from v2t_foley.foley_core.backends.prompt_inputs import prepared_inputs


@pytest.fixture(scope="module")
def llm():
    return load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=4))


def test_prepared_inputs_are_the_processors(llm):
    frames = clip(5)
    llm.pixels.prepare(frames)
    for prompt in (*PROMPTS, "Émile's café:\n  3 cues\t(tab) — done?", ""):
        request = GenerationRequest(frames, prompt)
        fast, full = prepared_inputs(llm, request), llm._encode([request])
        assert fast is not None and set(fast) == set(full)
        for key in full:
            assert torch.equal(fast[key], full[key]), (prompt, key)
    assert prepared_inputs(llm, GenerationRequest(clip(6), PROMPTS[0])) is None  # not prepared
    assert prepared_inputs(llm, GenerationRequest(frames, "an <image> too")) is None  # the processor's path


def test_pixel_values_are_made_once_per_frames_object_and_dropped_with_it(llm):
    before = len(llm.pixels)
    frames = clip(7)
    llm.pixels.prepare(frames)
    made = llm.pixels.get(frames)
    llm.pixels.prepare(frames)
    assert llm.pixels.get(frames) is made and len(llm.pixels) == before + 1
    del frames, made
    gc.collect()
    assert len(llm.pixels) == before


def test_only_the_continuous_decoder_has_its_requests_prepared(llm):
    """`generate` encodes batches with the processor: making pixel values for it would be work twice."""
    llm.use_decoder("generate")
    before, frames = len(llm.pixels), clip(8)
    llm.prepare([GenerationRequest(frames, PROMPTS[0])])
    assert len(llm.pixels) == before


class CountingProcessor:
    """The model's processor, counting its runs by thread (a proxy: the processor's own code runs)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.runs: list[str] = []

    def __call__(self, *args, **kwargs):
        self.runs.append(threading.current_thread().name)
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@pytest.mark.parametrize("prepare", [True, False], ids=["callers-prepare", "batching-thread-processes"])
def test_the_batching_thread_runs_no_processor_for_prepared_requests(llm, prepare):
    # new frames objects for each run: frames prepared by an earlier run would count as prepared here
    videos = [clip(50 + k) for k in range(3)]
    asked = [GenerationRequest(videos[k % 3], PROMPTS[k % 4], SCHEMA if k % 2 else None) for k in range(6)]
    params = GenerationParams(max_new_tokens=10)
    alone = [llm.generate([r], params)[0] for r in asked]
    llm.use_decoder("continuous")
    counting = llm.processor = CountingProcessor(llm.processor)
    batching = BatchingVideoLLM(llm, max_batch=4, prepare=prepare)
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda r: batching.generate([r], params)[0], asked))
    finally:
        batching.stop()
        llm.processor = counting.inner
        llm.use_decoder("generate")
    assert texts(answers) == texts(alone)
    in_batching_thread = counting.runs.count("foley-batcher")
    # without preparing, every new video's first question runs it there (and others alone may too)
    assert in_batching_thread == 0 if prepare else in_batching_thread >= 3
