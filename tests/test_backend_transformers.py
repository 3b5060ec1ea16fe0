"""The transformers backend with the tiny random Video-LLaVA and Qwen2.5-VL, loaded through the same
from_pretrained path as the real models. Their text is meaningless; the structure is what is tested."""

from __future__ import annotations

import pytest

from v2t_foley.foley_core.backends.base import GenerationParams, GenerationRequest
from v2t_foley.foley_core.chain import ChainConfig, run_chain
from v2t_foley.foley_core.chain.ask import parse_answer
from v2t_foley.foley_core.errors import ChainError, ModelNotFoundError
from v2t_foley.foley_core.schema import (
    IdentifyAnswer,
    ReasonAnswer,
    SchemaLimits,
    identify_schema,
    max_output_bytes,
    reason_schema,
    validate_script,
)
from v2t_foley.foley_core.video import open_video


def test_mixed_batch_constrained_and_free(tiny_llm, scene_video):
    video = open_video(str(scene_video))
    frames = video.uniform(8)
    limits = SchemaLimits()
    requests = [
        GenerationRequest(frames, "List the events.", identify_schema(video.info.duration, limits)),
        GenerationRequest(
            frames, "Describe the main event in much more detail, please.", reason_schema(limits)
        ),
        GenerationRequest(frames, "Say anything.", None),
    ]
    out = tiny_llm.generate(requests, GenerationParams(max_new_tokens=None))
    events = parse_answer(out[0], IdentifyAnswer)
    assert all(0 <= e.start <= video.info.duration for e in events.events)
    parse_answer(out[1], ReasonAnswer)
    assert out[0].constrained and out[1].constrained and not out[2].constrained
    assert out[0].finished and out[1].finished


def test_token_budget_is_the_schema_bound(tiny_llm, scene_video):
    frames = open_video(str(scene_video)).uniform(8)
    schema = reason_schema(SchemaLimits())
    request = GenerationRequest(frames, "x", schema)
    assert tiny_llm.token_budget([request], GenerationParams()) == max_output_bytes(schema) + 1
    assert tiny_llm.token_budget([request], GenerationParams(max_new_tokens=7)) == 7
    free = tiny_llm.generate([GenerationRequest(frames, "x")], GenerationParams(max_new_tokens=5))[0]
    assert free.new_tokens <= 5


def test_greedy_decoding_is_reproducible(tiny_llm, scene_video):
    frames = open_video(str(scene_video)).uniform(8)
    request = GenerationRequest(frames, "List the events.", identify_schema(4.0, SchemaLimits()))
    first = tiny_llm.generate([request], GenerationParams())[0].text
    assert tiny_llm.generate([request], GenerationParams())[0].text == first


def test_chain_with_tiny_video_llava_is_valid(tiny_llm, scene_video):
    video = open_video(str(scene_video))
    result = run_chain(video, tiny_llm, config=ChainConfig(timing="model"))
    validate_script(result.script, video.info.duration)
    trace = result.trace
    assert trace.calls[0].step == "identify"
    assert trace.calls[-1].step == "synthesize"
    assert sum(c.step == "reason" for c in trace.calls) == len(trace.events) >= 1
    assert all(c.constrained and c.answer is not None and c.raw for c in trace.calls)
    assert len(trace.frame_times) == 8 and trace.model["model_id"] == "tiny-random"
    assert set(trace.step_seconds) == {"identify", "reason", "synthesize", "validate"}


def test_unconstrained_random_model_fails_clearly(tiny_llm, scene_video):
    """The random model's free text is garbage: one repair, then a ChainError that says so."""
    config = ChainConfig(constrained=False, params=GenerationParams(max_new_tokens=24), timing="model")
    with pytest.raises(ChainError, match=r"identify: unusable answer.*after one repair"):
        run_chain(open_video(str(scene_video)), tiny_llm, config=config)


def test_tiny_qwen2_5_vl_runs_the_chain(scene_video):
    from v2t_foley.foley_core.backends.transformers_backend import load_transformers_model

    llm = load_transformers_model("tiny-random-qwen2.5-vl")
    assert llm.family == "qwen2_5_vl" and llm.frame_policy.kind == "fps"
    video = open_video(str(scene_video))
    result = run_chain(video, llm, config=ChainConfig(timing="model"))
    validate_script(result.script, video.info.duration)
    assert result.trace.frame_times[:3] == [0.0, 0.5, 1.0]  # 2 fps: the model sees absolute time


def test_unknown_model_is_a_clear_input_error(tmp_path):
    from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM

    with pytest.raises(ModelNotFoundError, match="cannot load model"):
        TransformersVideoLLM(str(tmp_path / "no-such-model"))
