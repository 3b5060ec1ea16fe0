"""One video prefix per video: the questions about one video continue from one prefill of the template
start and the video's tokens, and answer exactly what full prompts answer (greedy, token for token)."""

from __future__ import annotations

import numpy as np
import pytest

from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest, load_backend
from v2t_foley.foley_core.schema.decoding import SchemaLimits, reason_schema
from v2t_foley.foley_core.video.reader import Frames


@pytest.fixture(scope="module")
def llm():
    return load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=8))


def frames() -> Frames:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(8)]
    return Frames(images=images, times=tuple(0.5 * k for k in range(8)), indices=tuple(range(8)))


@pytest.mark.parametrize("constrained", [True, False])
def test_shared_prefix_answers_like_full_prompts(llm, constrained):
    clip = frames()
    schema = reason_schema(SchemaLimits(max_sounds=2, max_text_chars=24, max_field_chars=16))
    prompts = ["What makes a sound?", "Where does it happen, and on what surface exactly?", "Sounds?"]
    requests = [GenerationRequest(clip, p, schema if constrained else None) for p in prompts]
    params = GenerationParams(max_new_tokens=None if constrained else 24)
    calls = []
    original = llm.model.forward

    def counting(*args, **kwargs):
        if kwargs.get("pixel_values_videos") is not None:
            calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    llm.share_video_prefix = False
    full = llm.generate(requests, params)
    llm.model.forward = counting
    try:
        llm.share_video_prefix = True
        shared = llm.generate(requests, params)
    finally:
        llm.share_video_prefix = False
        del llm.model.forward
    assert [g.text for g in shared] == [g.text for g in full]
    assert [g.new_tokens for g in shared] == [g.new_tokens for g in full]
    assert calls == [1]  # the vision tower ran once, for the one prefix of the three questions
