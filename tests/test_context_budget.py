"""Every chain step's longest possible answer fits the model's context, prompt and video included.

The real models' shapes are built offline from their configs (no weights): Video-LLaVA-7B (4,096
positions, 8 frames x 257 tokens) and Qwen2.5-VL-7B (128,000 positions, frames at 2 fps). A fake model
answers every question with the longest answer its schema allows, so the later prompts (synthesize
quotes every event and its reasoning) are as long as they can get. Prompt tokens are counted with the
tiny models' tokenizers (600-token byte-level BPE: more tokens per text than the real 32k/150k ones).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgrammar as xgr

from v2t_foley.foley_core.backends.base import Generation, GenerationParams, VideoLLM
from v2t_foley.foley_core.backends.context import video_tokens
from v2t_foley.foley_core.backends.tiny import TINY_QWEN_VL, TINY_VIDEO_LLAVA, tiny_model_path
from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
from v2t_foley.foley_core.chain.steps import Clip, StepSettings, identify, reason, synthesize
from v2t_foley.foley_core.errors import ChainError
from v2t_foley.foley_core.prompts import load_prompts
from v2t_foley.foley_core.schema.decoding import SchemaLimits, max_output_bytes, synthesize_schema
from v2t_foley.foley_core.schema.fitting import fit_limits
from v2t_foley.foley_core.video.reader import Frames


def video_llava_7b_config():
    from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=1024, num_attention_heads=16, image_size=224, patch_size=14, num_hidden_layers=24
    )
    text = LlamaConfig(hidden_size=4096, num_hidden_layers=32, vocab_size=32064, max_position_embeddings=4096)
    return VideoLlavaConfig(vision_config=vision, text_config=text, vision_feature_select_strategy="default")


def qwen2_5_vl_7b_config():
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={"hidden_size": 3584, "vocab_size": 152064, "max_position_embeddings": 128000},
        vision_config={"patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
    )


def planner(family: str) -> TransformersVideoLLM:
    from transformers import AutoProcessor, Qwen2VLVideoProcessor

    if family == "video_llava":
        processor = AutoProcessor.from_pretrained(tiny_model_path(TINY_VIDEO_LLAVA))
        return TransformersVideoLLM.for_planning(video_llava_7b_config(), processor, "Video-LLaVA-7B")
    processor = AutoProcessor.from_pretrained(tiny_model_path(TINY_QWEN_VL))
    processor.video_processor = Qwen2VLVideoProcessor()  # the stock pixel bounds, not the tiny ones
    return TransformersVideoLLM.for_planning(qwen2_5_vl_7b_config(), processor, "Qwen2.5-VL-7B")


def longest_answer(schema: dict, char: str) -> object:
    """An instance of `schema` as long as the schema allows (strings of `char`)."""
    kind = schema["type"]
    if kind == "object":
        return {k: longest_answer(v, char) for k, v in schema["properties"].items()}
    if kind == "array":
        return [longest_answer(schema["items"], char) for _ in range(schema["maxItems"])]
    if kind == "string":
        return char * schema["maxLength"]
    if kind == "integer":
        return -1 if schema["minimum"] < 0 else schema["maximum"]
    return schema["maximum"] - 0.000001  # the most digits a number may have


class Longest(VideoLLM):
    """Answers every question with the longest answer its schema allows; checks the context on each."""

    supports_json_schema = True

    def __init__(self, planner: TransformersVideoLLM, char: str = "a") -> None:
        self.planner, self.char, self.checked = planner, char, []

    def answer_room(self, frames, prompt):
        return self.planner.answer_room(frames, prompt)

    def generate(self, requests, params):
        answers = []
        for r in requests:
            bound = max_output_bytes(r.json_schema) + 1
            room = self.answer_room(r.frames, r.prompt)
            text = json.dumps(
                longest_answer(r.json_schema, self.char), ensure_ascii=False, separators=(",", ":")
            )
            self.checked.append((bound, room, len(self.planner.tokenizer(text)["input_ids"]) + 1))
            answers.append(Generation(text=text, new_tokens=bound, finished=True, constrained=True))
        return answers


def frames(n: int, height: int, width: int, duration: float) -> Frames:
    times = tuple(float(t) for t in np.linspace(0, duration, n, endpoint=False))
    images = [np.zeros((height, width, 3), np.uint8) for _ in range(n)]
    return Frames(images=images, times=times, indices=tuple(range(n)))


CASES = {
    # family: (frames, height, width, clip seconds, video tokens, context)
    "video_llava": (8, 720, 1280, 10.0, 8 * 257, 4096),
    "qwen2_5_vl": (32, 720, 1280, 16.0, None, 128000),
}


@pytest.mark.parametrize("family", list(CASES))
@pytest.mark.parametrize("char", ["a", "😀"])
def test_every_step_fits_the_real_models_context(family, char):
    n, h, w, duration, expected_video, context = CASES[family]
    plan = planner(family)
    window = plan.context_of(frames(n, h, w, duration))
    assert window.max_positions == context
    if expected_video is not None:
        assert window.video_tokens == expected_video
    llm = Longest(plan, char)
    clip = Clip("clip.mp4", "0" * 64, duration, frames(n, h, w, duration))
    s = StepSettings(llm, load_prompts(), GenerationParams(), SchemaLimits())
    found = identify(clip, s)
    thought = reason(clip, found.value, s)
    drafted = synthesize(clip, found.value, thought.value, s)
    for bound, room, actual in llm.checked:
        assert actual <= bound <= room  # the longest answer within its bound, the bound within the room
    notes = found.notes + thought.notes + drafted.notes
    if family == "video_llava":  # 4,096 positions: the bounds had to be cut, and the trace says so
        assert any(n.startswith("identify: answer bounds cut") for n in notes)
        assert any(n.startswith("synthesize:") for n in notes)
    else:  # 128k positions: nothing to cut
        assert notes == [] or all("cut" not in n for n in notes)


def test_video_tokens_match_the_processor():
    """The config-only count equals what the processor actually inserts, for both tiny models."""
    from v2t_foley.foley_core.backends import BackendSpec, load_backend
    from v2t_foley.foley_core.backends.base import GenerationRequest

    for name in (TINY_VIDEO_LLAVA, TINY_QWEN_VL):
        llm = load_backend(BackendSpec(model=name, device="cpu"))
        clip = frames(8, 120, 160, 4.0)
        prompt = "What happens? Answer with JSON."
        inputs = llm.encode([GenerationRequest(clip, prompt)])
        assert llm.answer_room(clip, prompt) == llm.max_positions - inputs["input_ids"].shape[1]
        assert (
            video_tokens(llm.config, 8, 120, 160, llm.processor.video_processor)
            == llm.context_of(clip).video_tokens
        )


def test_the_bound_covers_what_xgrammar_can_emit():
    """xgrammar's length-bounded strings take no escapes (no backslash), so a character costs at most its
    4 UTF-8 bytes; a 4-byte character and the longest numbers reach the bound exactly."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path(TINY_VIDEO_LLAVA))
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgr.GrammarCompiler(info)
    schema = synthesize_schema(10.0, 3, SchemaLimits(max_cues_per_track=2, max_text_chars=5))
    grammar = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
    longest = json.dumps(longest_answer(schema, "😀"), ensure_ascii=False, separators=(",", ":"))
    assert xgr.GrammarMatcher(grammar).accept_string(longest)
    assert len(longest.encode()) <= max_output_bytes(schema)
    escaped = longest.replace("😀", "\\u00e9", 1)
    assert not xgr.GrammarMatcher(grammar).accept_string(escaped)


def test_fit_limits_cuts_in_order_and_says_so():
    limits = SchemaLimits()
    fitted, note = fit_limits("identify", limits, lambda lim: (lim.max_events * lim.max_text_chars, 500))
    assert fitted.max_events * fitted.max_text_chars <= 500
    assert note and "max_events 8->" in note and "max_text_chars 160->" in note
    same, none = fit_limits("identify", limits, lambda lim: (10, None))
    assert (same, none) == (limits, None)


def test_a_context_too_small_fails_the_step():
    plan = planner("video_llava")
    plan.max_positions = 2100  # the video alone nearly fills it
    plan.config.text_config.max_position_embeddings = 2100
    plan._windows.clear()
    clip = Clip("clip.mp4", "0" * 64, 4.0, frames(8, 120, 160, 4.0))
    s = StepSettings(Longest(plan), load_prompts(), GenerationParams(), SchemaLimits())
    with pytest.raises(ChainError, match="context"):
        identify(clip, s)
