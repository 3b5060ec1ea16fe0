"""A request's model inputs without the processor's whole run (Video-LLaVA): the prompt's ids from the
tokenizer alone, and the video's pixel values made once per frames object, in the thread that asks.

The continuous decoder's thread prefills the requests that join its wave one at a time, and every
row of the wave waits while it does. For each request the processor ran over the video's 8 frames
(10.7 ms on this workplace's CPU, bench/results/README.md) and tokenized the prompt with the video
placeholder written 2,056 times (0.1 ms from the tokenizer alone). Now:

- `prompt_ids`: the tokenizer's ids with the placeholder expanded as the processor expands it
  (tests compare the two over odd prompts); the decoder's join prefill uses it for questions about
  stored video prefixes (backends/join_prefill.py);
- `PreparedPixels`: the batching backend's callers (a shard's task threads) `prepare` their requests'
  frames before they queue them (backends/batching.py), so that the decoder's thread finds the pixel
  values made and `prepared_inputs` builds what the processor would give from them and `prompt_ids`.
  A frames object's pixel values (4.8 MB in float32 for 8 frames at 224 pixels) are dropped with it.

Only Video-LLaVA (its processor's video output is the frames' alone, and its placeholder expands to
the video's token count that the budgets use too, backends/context.py); other families keep the
processor's one call.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch
from transformers import BatchFeature


def prompt_ids(llm: Any, prompt: str, video_tokens: int) -> torch.Tensor | None:
    """The ids the processor would give for `prompt` with a video of `video_tokens` tokens, from the
    tokenizer alone (the processor writes its video token that many times, and an added token is
    tokenized on its own wherever it stands); None unless the text holds the video token once and no
    image token (which the processor refuses without images: the request then takes the processor's
    path, and fails there as it would in `generate`)."""
    config = llm.model.config
    with llm._tokenizer_lock:  # callers' threads tokenize at the same time
        ids = llm.tokenizer(llm.format_prompt(prompt), return_tensors="pt")["input_ids"][0]
    where = (ids == config.video_token_index).nonzero()
    if len(where) != 1 or bool((ids == config.image_token_index).any()):
        return None
    at = int(where[0])
    return torch.cat([ids[:at], ids.new_full((video_tokens,), config.video_token_index), ids[at + 1 :]])


class PreparedPixels:
    """Each prepared frames object's pixel values (`pixel_values_videos`, one video), made by the
    processor's video processor once and dropped when the frames object is."""

    def __init__(self, video_processor: Any) -> None:
        self._video_processor = video_processor
        self._made: dict[int, torch.Tensor] = {}  # by the frames object's id, while it lives
        self._lock = threading.Lock()

    def prepare(self, frames: Any) -> None:
        """Make the pixel values of `frames` unless they are made (two threads may both make them once;
        the first kept wins)."""
        key = id(frames)
        if key in self._made:
            return
        pixels = self._video_processor(videos=[frames.images], return_tensors="pt")["pixel_values_videos"]
        with self._lock:
            if key not in self._made:
                # registered first: a frames object that cannot be weakly referenced is never kept
                weakref.finalize(frames, self._made.pop, key, None)  # runs before its id can be reused
                self._made[key] = pixels

    def get(self, frames: Any) -> torch.Tensor | None:
        """The pixel values of `frames` when they are prepared."""
        return self._made.get(id(frames))

    def __len__(self) -> int:
        return len(self._made)


def prepared_inputs(llm: Any, request: Any) -> BatchFeature | None:
    """What `llm.processor` gives for `request` alone, when its frames' pixel values are prepared and
    its prompt's ids can come from the tokenizer alone; None otherwise."""
    pixels = llm.pixels.get(request.frames)
    if pixels is None:
        return None
    ids = prompt_ids(llm, request.prompt, llm.context_of(request.frames).video_tokens)
    if ids is None:
        return None
    mask = torch.ones_like(ids)
    return BatchFeature({"input_ids": ids[None], "attention_mask": mask[None], "pixel_values_videos": pixels})
