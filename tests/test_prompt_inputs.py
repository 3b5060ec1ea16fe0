"""A request's model inputs without the processor's whole run (backends/prompt_inputs.py): pixel values
made once per frames object in the callers' threads, the same inputs as the processor's, and through
the batching backend the continuous decoder's thread no longer runs the processor for them, nor
compiles their grammars, while every answer stays `generate`'s."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from tests.test_continuous import SCHEMA, texts
from tests.test_static_decode import PROMPTS, clip
from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest, load_backend
from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
from v2t_foley.foley_core.backends.prompt_inputs import prepared_inputs
from v2t_foley.foley_core.schema.decoding import SchemaLimits, identify_schema
from v2t_foley.foley_core.video.reader import Frames


@pytest.fixture(scope="module")
def llm():
    return load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=4))


def frames_of(count: int, height: int, width: int, seed: int) -> Frames:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    return Frames(images=images, times=tuple(0.5 * k for k in range(count)), indices=tuple(range(count)))


@pytest.mark.parametrize(
    ("count", "height", "width"),
    [(8, 120, 160), (8, 288, 512), (8, 512, 288), (8, 1000, 100), (1, 224, 224), (5, 30, 20)],
)
def test_prepared_inputs_are_the_processors(llm, count, height, width):
    """The tests' clips, the factory's frames (512 on the long side, either way), odd shapes and frame
    counts."""
    frames = frames_of(count, height, width, seed=height + width)
    llm.pixels.prepare(frames)
    for prompt in (*PROMPTS, "Émile's café:\n  3 cues\t(tab) — done?", ""):
        request = GenerationRequest(frames, prompt)
        fast, full = prepared_inputs(llm, request), llm._encode([request])
        assert fast is not None and set(fast) == set(full)
        for key in full:
            assert torch.equal(fast[key], full[key]), (prompt, key)
            assert fast[key].dtype == full[key].dtype
    assert prepared_inputs(llm, GenerationRequest(clip(6), PROMPTS[0])) is None  # not prepared
    assert prepared_inputs(llm, GenerationRequest(frames, "an <image> too")) is None  # the processor's path


def test_a_batch_is_encoded_by_the_processor_even_when_its_first_request_is_prepared(llm):
    prepared, other = clip(9), clip(10)
    llm.pixels.prepare(prepared)
    batch = [GenerationRequest(prepared, PROMPTS[0]), GenerationRequest(other, PROMPTS[1])]
    got, expected = llm.encode(batch), llm._encode(batch)
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)


def test_pixel_values_are_made_once_per_frames_object_and_dropped_with_it(llm):
    gc.collect()  # other tests' frames, unreachable but not yet collected, would leave during the test
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
    frames = clip(8)
    llm.prepare([GenerationRequest(frames, PROMPTS[0])])
    assert llm.pixels.get(frames) is None


class CallsByThread:
    """`inner` with the threads that call its `method` recorded (its own code runs): the processor
    (`__call__`), the grammar compiler (`compile_json_schema`)."""

    def __init__(self, inner, method: str) -> None:
        self.inner, self.method = inner, method
        self.threads: list[str] = []

    def _recorded(self, function):
        def call(*args, **kwargs):
            self.threads.append(threading.current_thread().name)
            return function(*args, **kwargs)

        return call

    def __call__(self, *args, **kwargs):
        return self._recorded(self.inner)(*args, **kwargs)

    def __getattr__(self, name: str):
        found = getattr(self.inner, name)
        return self._recorded(found) if name == self.method else found


def through_batching(llm, asked: list[GenerationRequest], params: GenerationParams, prepare: bool) -> list:
    """`asked`, each from a caller thread of its own, through the batching backend (whose thread is
    `foley-batcher`) on the continuous decoder."""
    llm.use_decoder("continuous")
    batching = BatchingVideoLLM(llm, max_batch=4, prepare=prepare)
    try:
        with ThreadPoolExecutor(len(asked)) as pool:
            return list(pool.map(lambda r: batching.generate([r], params)[0], asked))
    finally:
        batching.stop()
        llm.use_decoder("generate")


@pytest.mark.parametrize("prepare", [True, False], ids=["callers-prepare", "batching-thread-processes"])
def test_the_batching_thread_runs_no_processor_for_prepared_requests(llm, prepare):
    # new frames objects for each run: frames prepared by an earlier run would count as prepared here
    videos = [clip(50 + k) for k in range(3)]
    asked = [GenerationRequest(videos[k % 3], PROMPTS[k % 4], SCHEMA if k % 2 else None) for k in range(6)]
    params = GenerationParams(max_new_tokens=10)
    alone = [llm.generate([r], params)[0] for r in asked]
    counting = llm.processor = CallsByThread(llm.processor, "__call__")
    try:
        answers = through_batching(llm, asked, params, prepare)
    finally:
        llm.processor = counting.inner
    assert texts(answers) == texts(alone)
    in_batching_thread = counting.threads.count("foley-batcher")
    # without preparing, every new video's first question runs it there (and others alone may too)
    assert in_batching_thread == 0 if prepare else in_batching_thread >= 3


@pytest.mark.parametrize("prepare", [True, False], ids=["callers-prepare", "batching-thread-compiles"])
def test_the_batching_thread_compiles_no_grammar_for_prepared_requests(llm, prepare):
    """The chain's identify schema holds the clip's duration: clips of new durations bring new grammars,
    which the callers compile before they queue their requests."""
    durations = (3.01, 3.02, 3.03) if prepare else (3.04, 3.05, 3.06)  # not compiled by an earlier run
    limits = SchemaLimits(max_events=2, max_text_chars=12)
    asked = [
        GenerationRequest(clip(60 + k), PROMPTS[k], identify_schema(duration, limits))
        for k, duration in enumerate(durations)
    ]
    params = GenerationParams(max_new_tokens=12)
    counting = llm.grammars.compiler = CallsByThread(llm.grammars.compiler, "compile_json_schema")
    try:
        answers = through_batching(llm, asked, params, prepare)
    finally:
        llm.grammars.compiler = counting.inner
    assert texts(answers) == texts([llm.generate([r], params)[0] for r in asked])
    assert len(counting.threads) == len(durations)  # each new schema once
    assert counting.threads.count("foley-batcher") == (0 if prepare else len(durations))


def test_sampled_requests_are_not_prepared(llm):
    """They go to `generate`'s batches, whose processor run makes the pixel values anyway."""
    llm.use_decoder("continuous")
    batching = BatchingVideoLLM(llm, max_batch=2)
    frames = clip(11)  # looked up by this object: a count would move as other tests' frames are collected
    try:
        batching.generate(
            [GenerationRequest(frames, PROMPTS[0])], GenerationParams(max_new_tokens=2, temperature=0.7)
        )
        assert llm.pixels.get(frames) is None
        batching.generate([GenerationRequest(frames, PROMPTS[0])], GenerationParams(max_new_tokens=2))
        assert llm.pixels.get(frames) is not None  # a greedy one is
    finally:
        batching.stop()
        llm.use_decoder("generate")
