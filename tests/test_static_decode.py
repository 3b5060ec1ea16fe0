"""The static-cache decoder (the GPU fast path) answers exactly what `generate` answers: greedy, token for
token, constrained and free, with and without the shared video prefix, at batch sizes that fill a shape
bucket and ones that do not. On this CPU machine the decode step runs eagerly (no CUDA graphs); what the
graphs buy is measured by bench/gpu_foley.py on a GPU."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest, load_backend
from v2t_foley.foley_core.backends.static_decode import bucket_batch, bucket_length
from v2t_foley.foley_core.schema.decoding import SchemaLimits, reason_schema
from v2t_foley.foley_core.video.reader import Frames

PROMPTS = ["What makes a sound?", "Where does it happen, and on what surface exactly?", "Sounds?", "Who?"]


@pytest.fixture(scope="module")
def llm():
    return load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=8))


def clip(seed: int) -> Frames:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(8)]
    return Frames(images=images, times=tuple(0.5 * k for k in range(8)), indices=tuple(range(8)))


def answers(llm, decoder: str, requests, params, share: bool = False):
    llm.use_decoder(decoder)
    llm.share_video_prefix = share
    try:
        return [(g.text, g.new_tokens, g.finished) for g in llm.generate(requests, params)]
    finally:
        llm.use_decoder("generate")
        llm.share_video_prefix = False


@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("rows", [1, 3])
def test_static_decoding_writes_the_tokens_generate_writes(llm, constrained, rows):
    schema = reason_schema(SchemaLimits(max_sounds=2, max_text_chars=24, max_field_chars=16))
    videos = [clip(k) for k in range(rows)]  # one video per row: no shared prefix here
    requests = [
        GenerationRequest(videos[k], PROMPTS[k], schema if constrained else None) for k in range(rows)
    ]
    params = GenerationParams(max_new_tokens=None if constrained else 24)
    plain = answers(llm, "generate", requests, params)
    assert answers(llm, "static", requests, params) == plain
    assert all(tokens > 0 for _, tokens, _ in plain)


@pytest.mark.parametrize("constrained", [True, False])
def test_static_decoding_continues_a_shared_video_prefix_like_full_prompts(llm, constrained):
    video = clip(7)
    schema = reason_schema(SchemaLimits(max_sounds=2, max_text_chars=24, max_field_chars=16))
    requests = [GenerationRequest(video, p, schema if constrained else None) for p in PROMPTS[:3]]
    params = GenerationParams(max_new_tokens=None if constrained else 20)
    plain = answers(llm, "generate", requests, params)
    assert answers(llm, "static", requests, params, share=True) == plain


def test_a_cache_is_kept_for_its_shape_bucket_and_reused(llm):
    requests = [GenerationRequest(clip(1), p) for p in PROMPTS[:3]]
    params = GenerationParams(max_new_tokens=8)
    llm.use_decoder("static")
    try:
        llm.generate(requests, params)
        ((key, first),) = llm.static.caches.items()
        llm.generate(requests, params)  # the same bucket: the same cache, reset
        assert llm.static.caches == {key: first} and llm.static.caches[key] is first
        llm.generate(requests[:2], params)  # 2 rows: another bucket replaces it (one is kept)
        assert list(llm.static.caches) == [(2, key[1])]
        assert key[0] == bucket_batch(3) == 4
    finally:
        llm.use_decoder("generate")


def test_sampling_keeps_generate(llm):
    requests = [GenerationRequest(clip(2), PROMPTS[0])]
    params = GenerationParams(max_new_tokens=12, temperature=0.8, seed=3)
    assert answers(llm, "static", requests, params) == answers(llm, "generate", requests, params)


def test_shape_buckets():
    assert [bucket_batch(n) for n in (1, 2, 3, 5, 17, 32)] == [1, 2, 4, 8, 32, 32]
    assert [bucket_length(n) for n in (1, 512, 513, 2100)] == [512, 512, 1024, 2560]


def test_an_unknown_decoder_is_bad_input():
    from v2t_foley.foley_core.errors import InputError

    with pytest.raises(InputError, match="unknown decoder"):
        BackendSpec(decoder="fast")


@pytest.mark.skipif(
    not shutil.which("g++") and not shutil.which("c++"), reason="inductor needs a C++ compiler"
)
def test_the_compiled_decode_step_has_no_graph_break_and_writes_the_same_tokens(llm):
    """What CUDA graphs need of the step: one graph, no break. Inductor compiles it here on the CPU (the
    GPU adds `reduce-overhead`'s graph capture, measured by bench/gpu_foley.py)."""
    import torch

    from v2t_foley.foley_core.backends.static_decode import StaticDecoder

    requests = [GenerationRequest(clip(k), PROMPTS[k]) for k in range(3)]
    params = GenerationParams(max_new_tokens=12)
    plain = answers(llm, "generate", requests, params)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    llm.static = StaticDecoder(
        llm.model, pad_id=llm.tokenizer.pad_token_id, eos_id=llm.tokenizer.eos_token_id, compile=True
    )
    try:
        compiled = [(g.text, g.new_tokens, g.finished) for g in llm.generate(requests, params)]
    finally:
        llm.use_decoder("generate")
    assert compiled == plain
    assert not torch._dynamo.utils.counters["graph_break"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1


def test_a_fast_decoder_is_part_of_the_models_identity_and_generate_keeps_the_old_keys(llm):
    from v2t_foley.foley_core.chain.graph import _model_key

    before = _model_key(llm.describe())
    llm.use_decoder("static")
    try:
        fast = llm.describe()
    finally:
        llm.use_decoder("generate")
    assert fast["decoder"] == "static" and "decoder" not in llm.describe()
    assert _model_key(fast) != before == _model_key(llm.describe())
    assert set(before) == {"backend", "model_id", "revision", "adapter", "adapter_revision"}
