"""One video prefix per video (Video-LLaVA): the template start and the video's tokens are prefilled
once, and every question about that video continues from a copy of their K/V cache.

Only Video-LLaVA shares: its positions after the video are the token count, so a continuation's
positions are those of the full prompt. Qwen2.5-VL's 3-D rotary positions after the video are not,
so its continuation would need its own positions (not done here).
"""

from __future__ import annotations

from typing import Any

import torch


def video_prefix(model: Any, inputs) -> tuple[int, Any] | None:
    """(P, the K/V cache of the first P tokens) when every row of the processor's left-padded batch
    starts with the same P tokens (up to its last video token), has more after them, and shows the same
    frames; None otherwise, and for every other model family (see the module docstring). The vision
    tower and the prefill of those tokens run here, once."""
    if model.config.model_type != "video_llava" or "pixel_values_videos" not in inputs:
        return None
    video_id = model.config.video_token_index
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    rows = [row[m.bool()] for row, m in zip(ids, mask, strict=True)]
    where = (rows[0] == video_id).nonzero()
    if len(where) == 0:
        return None
    prefix = rows[0][: int(where[-1]) + 1]
    if any(len(r) <= len(prefix) or not torch.equal(r[: len(prefix)], prefix) for r in rows):
        return None
    pixels = inputs["pixel_values_videos"]
    if any(not torch.equal(pixels[k], pixels[0]) for k in range(1, len(pixels))):
        return None
    out = model(
        input_ids=prefix[None],
        attention_mask=torch.ones_like(prefix)[None],
        pixel_values_videos=pixels[:1],
        use_cache=True,
    )
    return len(prefix), out.cache


def continue_inputs(inputs, length: int, cache, *, pad: int, repeat: bool = True) -> dict:
    """[prefix | pads | each row's rest]: the pads sit between the shared prefix and the rest, masked
    out, so each row's positions (counted over its unmasked tokens) are those of its full prompt.
    `repeat`: give the cache a row per request (generate's dynamic cache; the static decoder copies)."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    rests = [row[m.bool()][length:] for row, m in zip(ids, mask, strict=True)]
    width = max(len(r) for r in rests)
    prefix = ids[0][mask[0].bool()][:length]
    new_ids = torch.full((len(rests), length + width), pad, dtype=ids.dtype, device=ids.device)
    new_mask = torch.zeros_like(new_ids, dtype=mask.dtype)
    for k, rest in enumerate(rests):
        new_ids[k, :length], new_mask[k, :length] = prefix, 1
        new_ids[k, length + width - len(rest) :], new_mask[k, length + width - len(rest) :] = rest, 1
    if repeat:
        cache.batch_repeat_interleave(len(rests))
    return {"input_ids": new_ids, "attention_mask": new_mask, "cache": cache}
