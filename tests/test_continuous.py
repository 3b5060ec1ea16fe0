"""Continuous batching: requests take decode slots as they free, and each answer is exactly what
`generate` answers for that request alone (greedy, token for token), constrained or free, with or
without the shared video prefix, whether it started the wave or arrived while it was decoding. On this
CPU machine the decode step runs eagerly; bench/gpu_foley.py measures it with CUDA graphs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.test_static_decode import PROMPTS, clip
from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest, load_backend
from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
from v2t_foley.foley_core.schema.decoding import SchemaLimits, reason_schema

SCHEMA = reason_schema(SchemaLimits(max_sounds=2, max_text_chars=24, max_field_chars=16))


@pytest.fixture(scope="module")
def llm():
    return load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=2))


def requests() -> list[GenerationRequest]:
    shared = clip(1)  # three questions about one video, three about others
    return [
        GenerationRequest(shared if k % 2 else clip(10 + k), PROMPTS[k % 4], SCHEMA if k % 3 else None)
        for k in range(6)
    ]


def texts(generations) -> list[tuple[str, int, bool]]:
    return [(g.text, g.new_tokens, g.finished) for g in generations]


@pytest.mark.parametrize(("share", "store"), [(False, True), (True, True), (True, False)])
def test_each_answer_is_what_generate_answers_for_that_request_alone(llm, share, store):
    """Full prompts in every row; video prefixes read from the prefix store; prefixes copied into
    every row (what models whose attention cannot read the store do)."""
    asked = requests()
    params = GenerationParams(max_new_tokens=20)
    alone = [llm.generate([r], params)[0] for r in asked]
    llm.use_decoder("continuous")
    llm.share_video_prefix = share
    llm.continuous.prefix_store = store
    try:
        together = llm.generate(asked, params)
        decoder = llm.continuous
    finally:
        llm.use_decoder("generate")
        llm.share_video_prefix = False
    assert texts(together) == texts(alone)
    assert decoder.waves == 1 and decoder.late_joins >= 4  # 2 slots, 6 requests: 4 took a freed slot
    # stored: every row read its video's prefix from the prefix store, not from a copy in its row
    assert decoder.store_steps == (decoder.steps if share and store else 0)


def test_a_request_that_arrives_while_decoding_takes_a_free_slot(llm, monkeypatch):
    """The wave's first decode step waits until the second request is queued, so that it arrives while
    the wave decodes however slowly this machine runs (it would otherwise race the wave's end)."""
    asked = requests()[:2]
    params = GenerationParams(max_new_tokens=24)
    alone = [llm.generate([r], params)[0] for r in asked]
    llm.use_decoder("continuous")
    batching = BatchingVideoLLM(llm, max_batch=2)
    decoding, queued = threading.Event(), threading.Event()
    step = llm.continuous._decode

    def first_step_waits(*args, **kwargs) -> None:
        decoding.set()
        queued.wait(120)
        step(*args, **kwargs)

    monkeypatch.setattr(llm.continuous, "_decode", first_step_waits)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(batching.generate, [asked[0]], params)
            assert decoding.wait(120), "the first request never started decoding"
            second = pool.submit(batching.generate, [asked[1]], params)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with batching._ready:
                    if batching._queue:
                        break
                time.sleep(0.01)
            queued.set()
            answers = [first.result()[0], second.result()[0]]
        decoder = llm.continuous
    finally:
        queued.set()
        batching.stop()  # the module's model stays loaded
        llm.use_decoder("generate")
    assert texts(answers) == texts(alone)
    assert decoder.waves == 1 and decoder.late_joins == 1


def test_a_request_that_cannot_run_fails_alone(llm):
    good = requests()[:2]
    too_long = GenerationRequest(clip(3), "word " * llm.max_positions)
    params = GenerationParams(max_new_tokens=12)
    alone = [llm.generate([r], params)[0] for r in good]
    llm.use_decoder("continuous")
    batching = BatchingVideoLLM(llm, max_batch=3)
    results: dict[int, object] = {}

    def ask(k: int, request: GenerationRequest) -> None:
        try:
            results[k] = batching.generate([request], params)[0]
        except Exception as error:
            results[k] = error

    try:
        threads = [
            threading.Thread(target=ask, args=(k, r)) for k, r in enumerate([good[0], too_long, good[1]])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        batching.stop()
        llm.use_decoder("generate")
    assert isinstance(results[1], ValueError) and "positions" in str(results[1])
    assert texts([results[0], results[2]]) == texts(alone)


def test_a_request_that_does_not_fit_the_wave_starts_the_next(llm, monkeypatch):
    """The first wave's cache is sized for its first request (no rounding here): a later request whose
    budget runs past it waits, with its prefill kept, and starts the next wave."""
    from v2t_foley.foley_core.backends import continuous

    monkeypatch.setattr(continuous, "LENGTH_BUCKET", 0)
    monkeypatch.setattr(continuous, "bucket_length", lambda n: n)
    short, long = requests()[:2]
    plan = [(short, GenerationParams(max_new_tokens=8)), (long, GenerationParams(max_new_tokens=40))]
    alone = [llm.generate([r], p)[0] for r, p in plan]
    llm.use_decoder("continuous")
    answers: dict[int, object] = {}
    asks = [
        llm.ask(r, p, lambda answer, k=k: answers.__setitem__(k, answer)) for k, (r, p) in enumerate(plan)
    ]
    try:
        decoder = llm.continuous
        decoder.serve(lambda: asks.pop(0) if asks else None)
    finally:
        llm.use_decoder("generate")
    assert texts([answers[0], answers[1]]) == texts(alone)
    assert decoder.waves == 2


def test_a_request_whose_answer_has_no_bound_fails_alone_in_the_batching_thread(llm):
    """A schema without length bounds and no max_new_tokens has no budget: that caller gets the error,
    the request beside it its answer, and the batching thread serves on (nobody waits forever)."""
    unbounded = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    good = GenerationRequest(clip(1), PROMPTS[0], SCHEMA)
    params = GenerationParams()
    alone = llm.generate([good], params)
    llm.use_decoder("continuous")
    batching = BatchingVideoLLM(llm, max_batch=2)
    try:
        with ThreadPoolExecutor(2) as pool:
            bad = pool.submit(batching.generate, [GenerationRequest(clip(2), "Say.", unbounded)], params)
            fine = pool.submit(batching.generate, [good], params)
            with pytest.raises(ValueError, match="maxLength"):
                bad.result(timeout=300)
            assert texts(fine.result(timeout=300)) == texts(alone)
        assert texts(batching.generate([good], params)) == texts(alone)  # still serving
    finally:
        batching.stop()
        llm.use_decoder("generate")


def side_by_side(llm, asked, params, slots: int):
    """(each request's answer alone on generate, their answers through a continuous decoder of
    `slots` slots with shared prefixes, that decoder)."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    alone = [llm.generate([r], params)[0] for r in asked]
    llm.continuous = ContinuousDecoder(llm, slots)
    llm.share_video_prefix = True
    try:
        together = llm.generate(asked, params)
        decoder = llm.continuous
    finally:
        llm.use_decoder("generate")
    return alone, together, decoder


def test_the_prefix_store_grows_with_the_videos_decoded_side_by_side(llm):
    """Six questions about six clips through six slots: the store starts with STORE_ENTRIES (4) and
    doubles, up to the slots, when a fifth video finds every entry read, in the same wave (no row
    waits for the others to finish); each answer is still generate's for that request alone."""
    from v2t_foley.foley_core.backends.prefix_store import STORE_ENTRIES

    asked = [GenerationRequest(clip(70 + k), PROMPTS[k % 4], SCHEMA if k % 2 else None) for k in range(6)]
    alone, together, decoder = side_by_side(llm, asked, GenerationParams(max_new_tokens=12), slots=6)
    assert texts(together) == texts(alone)
    assert STORE_ENTRIES == 4 and decoder.store.entries == 6
    assert decoder.waves == 1 and decoder.store_steps == decoder.steps
    held = [h for h in decoder.store.held if h is not None]
    assert len(held) == 6 and {id(h.frames) for h in held} == {id(r.frames) for r in asked}


def test_step_shapes_are_the_shapes_the_decode_step_was_given(llm):
    """`step_shapes`, which the bench reports as the CUDA-graph recordings a run needs, against what the
    step itself received: rows, columns, store entries read and grouped queries."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    decoder = ContinuousDecoder(llm, 4)
    step, seen = decoder.step, set()

    def watched(ids, positions, mask, cache, prefix=None):
        store = (prefix.keys[0].shape[0], prefix.queries.shape[0]) if prefix is not None else ()
        seen.add((ids.shape[0], mask.shape[-1], *store))
        return step(ids, positions, mask, cache, prefix)

    decoder.step = watched
    llm.continuous = decoder
    llm.share_video_prefix = True
    try:
        llm.generate(requests(), GenerationParams(max_new_tokens=16))
    finally:
        llm.use_decoder("generate")
    assert decoder.step_shapes == seen
    assert len(seen) > 1 and all(len(shape) == 4 for shape in seen)  # every step read the store


def test_a_video_the_full_store_cannot_take_waits_for_the_next_wave(llm, monkeypatch):
    """No room to grow the store (4 entries) for six clips through six slots: the fifth and sixth
    clips wait for the next wave (a copy of their prefix in their rows would widen every step by the
    video), and every answer is still generate's."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    monkeypatch.setattr(ContinuousDecoder, "_has_room", lambda self, nbytes: False)
    asked = [GenerationRequest(clip(80 + k), PROMPTS[k % 4]) for k in range(6)]
    alone, together, decoder = side_by_side(llm, asked, GenerationParams(max_new_tokens=8), slots=6)
    assert texts(together) == texts(alone)
    assert decoder.store.entries == 4 and decoder.waves == 2 and decoder.store_steps == decoder.steps


def test_a_wave_that_failed_leaves_no_entry_read_in_the_next(llm):
    """A request whose grammar cannot compile fails the wave it joins (its rows get the error); the
    next wave starts with no entry read, so the store does not fill with entries nobody reads."""
    broken = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(("}}, "required": ["a"]}
    first, bad = GenerationRequest(clip(90), PROMPTS[0]), GenerationRequest(clip(91), PROMPTS[1], broken)
    later = GenerationRequest(clip(92), PROMPTS[2])
    params = GenerationParams(max_new_tokens=8)
    alone = llm.generate([later], params)[0]
    llm.use_decoder("continuous")
    answers: dict[int, object] = {}
    asks = [llm.ask(r, params, lambda a, k=k: answers.__setitem__(k, a)) for k, r in enumerate([first, bad])]
    try:
        decoder = llm.continuous
        decoder.serve(lambda: asks.pop(0) if asks else None)
        assert isinstance(answers[1], RuntimeError) and isinstance(answers[0], RuntimeError)
        assert decoder.store.in_use()  # the failed wave's rows never left their entries
        again = llm.generate([later], params)[0]
    finally:
        llm.use_decoder("generate")
    assert texts([again]) == texts([alone])
    assert not decoder.store.in_use()


def test_the_store_is_made_anew_for_a_longer_prefix_only_when_no_row_reads_it(llm):
    from transformers import DynamicCache

    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    decoder = ContinuousDecoder(llm, 4)
    text = llm.model.config.get_text_config()
    shape = (1, text.num_key_value_heads, 200, text.hidden_size // text.num_attention_heads)
    kv = DynamicCache(config=llm.model.config)
    for layer in range(text.num_hidden_layers):
        kv.update(torch.randn(shape), torch.randn(shape), layer)
    short, long = (object(), torch.arange(70)), (object(), torch.arange(200))
    store = decoder._store_for(4, short)
    assert (store.length, store.entries) == (128, 4)
    entry = store.place(*short, kv)
    assert decoder._store_for(4, long) is None  # read by a row: kept, and the longer prefix is copied
    store.leave(entry)
    remade = decoder._store_for(4, long)
    assert remade is decoder.store and remade is not store and remade.length == 256


@pytest.mark.parametrize("room_rows", [0.5, 1, 3.2, 7.9, 8, 100])
@pytest.mark.parametrize(("need", "want"), [(512, 512), (512, 2048), (1024, 4096)])
def test_a_wave_cache_takes_as_many_rows_as_fit_before_columns(room_rows, need, want):
    """`plan_cache` against what it promises, over rooms from half a row of `need` columns to room to
    spare: it fits the room; no more rows fit at `need` columns; no longer columns fit at those rows."""
    from v2t_foley.foley_core.backends.static_decode import LENGTH_BUCKET, plan_cache

    per_column, slots = 1000, 8
    room = int(room_rows * need * per_column)
    rows, columns = plan_cache(room, per_column, slots, need, want)
    assert plan_cache(None, per_column, slots, need, want) == (slots, want)
    if rows == 0:
        assert room < need * per_column
        return
    assert rows * columns * per_column <= room and need <= columns <= want
    assert rows == slots or (rows + 1) * need * per_column > room
    assert columns == want or rows * (columns + LENGTH_BUCKET) * per_column > room


def test_a_cache_made_when_the_gpu_was_full_grows_its_rows_once_room_frees(llm, monkeypatch):
    """On the H100 (2026-11-27) the decoder's first wave came after plain generate at batch 32, whose
    freed blocks the driver still counted as used: its cache got 2 of 32 rows, and every later wave
    reused it (it was long enough), so batch 32 decoded 2 rows at a time. Now a held cache with fewer
    rows than the decoder's slots is replaced when more fit, and one with every row is reused. The GPU's
    free memory is the one thing faked here (this CPU has no such limit): `room_for_caches` reports a
    GPU with room for 3 rows of the first wave's columns beside the prefix store that the first wave
    makes (its length read off a probe decoder's store), less what the decoder holds; then one row's
    memory less (the held cache stays: a new one would have fewer rows); then plenty."""
    from v2t_foley.foley_core.backends import continuous, wave_cache
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder
    from v2t_foley.foley_core.backends.prefix_store import PREFIX_BUCKET, STORE_ENTRIES
    from v2t_foley.foley_core.backends.static_decode import kv_bytes

    asked = [GenerationRequest(clip(1), PROMPTS[k % 4], SCHEMA if k % 2 else None) for k in range(4)]
    long, short = GenerationParams(max_new_tokens=300), GenerationParams(max_new_tokens=12)
    _, _, probe = side_by_side(llm, asked[:1], short, slots=1)
    store_bytes = kv_bytes(llm.model, STORE_ENTRIES, probe.store.length + PREFIX_BUCKET)
    columns = 512  # what the first wave's question and its 300 tokens need, in LENGTH_BUCKETs
    alone = [llm.generate([r], short)[0] for r in asked]
    llm.continuous = decoder = ContinuousDecoder(llm, 4)
    gpu = [kv_bytes(llm.model, 3, columns) + store_bytes]  # its memory for caches and stores

    def holds() -> int:
        held = decoder.store.nbytes() if decoder.store is not None else 0
        return held + (
            kv_bytes(llm.model, *decoder.wave_cache.shape) if decoder.wave_cache.cache is not None else 0
        )

    def room(device, held: int = 0) -> int:  # what the decoder does not hold, and what it would replace
        return gpu[0] - holds() + held

    for module in (continuous, wave_cache):  # the store's growth asks, and the cache's plan
        monkeypatch.setattr(module, "room_for_caches", room)
    llm.share_video_prefix = True
    try:
        first = llm.generate(asked, long)
        assert decoder.wave_cache.shape == (3, columns)
        narrow = decoder.wave_cache.cache
        gpu[0] = holds() - kv_bytes(llm.model, 1, columns)  # another process took a row's memory
        again = llm.generate(asked, long)  # a new cache would have 2 rows: the held 3 stay
        assert decoder.wave_cache.cache is narrow and texts(again) == texts(first)
        gpu[0] = 100 * holds()
        second = llm.generate(asked, short)  # the held cache is long enough for these, with 2 rows
        assert decoder.wave_cache.shape[0] == 4
        cache = decoder.wave_cache.cache
        third = llm.generate(asked, short)
    finally:
        llm.use_decoder("generate")
    assert decoder.wave_cache.cache is cache  # every row: the held cache, and its graphs, stay
    assert texts(second) == texts(third) == texts(alone)


def test_a_held_cache_long_enough_for_the_first_question_is_kept_over_a_longer_new_one(llm):
    """A later wave whose questions would like more columns (to let others join) than the held cache
    has, but need no more than it has, keeps it with its rows and graphs (each new shape is CUDA-graph
    recordings on a GPU), without asking the GPU for room (a sync there); its answers are generate's."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    asked = [GenerationRequest(clip(1), PROMPTS[k % 4], SCHEMA if k % 2 else None) for k in range(4)]
    short, longer = GenerationParams(max_new_tokens=12), GenerationParams(max_new_tokens=300)
    alone = [llm.generate([r], longer)[0] for r in asked]
    llm.continuous = decoder = ContinuousDecoder(llm, 4)
    llm.share_video_prefix = True
    planned: list[tuple[int, int]] = []
    held = decoder.wave_cache
    plan = held._plan
    held._plan = lambda need, want, kept=0: planned.append((need, want)) or plan(need, want, kept)
    try:
        llm.generate(asked, short)
        cache, shape = decoder.wave_cache.cache, decoder.wave_cache.shape
        planned.clear()
        answers = llm.generate(asked, longer)
        kept = decoder.wave_cache.cache is cache and not planned
        decoder.release()  # what a wave holding no cache plans for the same questions
        llm.generate(asked[:1], longer)
    finally:
        llm.use_decoder("generate")
    assert kept and texts(answers) == texts(alone)
    assert planned[0][1] > shape[1]  # it would have liked more columns than the kept cache has
