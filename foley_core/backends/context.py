"""How many tokens a model's context leaves for an answer: derived from its config, no weights.

A question's input is the chat template, the rendered prompt and the video's tokens; what is left of
`max_position_embeddings` (the language model's, `text_config`) is the room for the answer. The chain
shrinks its answer bounds (`SchemaLimits`) to fit that room (`foley_core.schema.fitting`), so a model
decoding under a bounded schema always finishes inside its context.

Video tokens per family:
- Video-LLaVA: every frame is one CLIP image, `(image_size / patch_size)^2 + 1` tokens (257 at 224 px
  and patch 14), so 8 frames take 2,056 of its 4,096 positions.
- Qwen2.5-VL: frames are resized (`smart_resize` within the video processor's pixel bounds), cut into
  `patch_size` patches, pairs of frames merged in time and `merge_size^2` patches merged in space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Tokens the chat template and special tokens may add around a prompt, when no tokenizer can count them.
TEMPLATE_SLACK = 32


@dataclass(frozen=True)
class ContextWindow:
    """The language model's positions and what one video of `n_frames` frames takes of them."""

    max_positions: int  # the text model's max_position_embeddings
    video_tokens: int  # tokens the video's frames expand to in the prompt

    def room(self, prompt_tokens: int) -> int:
        """Tokens left for the answer after the video and `prompt_tokens` of text."""
        return self.max_positions - self.video_tokens - prompt_tokens


def max_positions(config: Any) -> int:
    """The language model's context length (`text_config.max_position_embeddings`)."""
    text = getattr(config, "text_config", None) or config
    value = getattr(text, "max_position_embeddings", None) or getattr(config, "max_position_embeddings", None)
    if not value:
        raise ValueError(f"{type(config).__name__} has no max_position_embeddings")
    return int(value)


def video_tokens(
    config: Any, n_frames: int, height: int, width: int, video_processor: Any | None = None
) -> int:
    """Tokens `n_frames` frames of `height` x `width` pixels take in the prompt of the model `config`.

    `video_processor` (Qwen2.5-VL: its pixel bounds decide the resize) defaults to the family's stock one.
    """
    family = getattr(config, "model_type", "")
    if family == "video_llava":
        vision = config.vision_config
        per_frame = (vision.image_size // vision.patch_size) ** 2 + 1  # patches + CLS
        return n_frames * per_frame
    if family.startswith("qwen2") and "vl" in family:
        if video_processor is None:
            from transformers import Qwen2VLVideoProcessor

            video_processor = Qwen2VLVideoProcessor()
        patches = video_processor.get_num_of_video_patches(n_frames, height, width, {})
        merge = getattr(config.vision_config, "spatial_merge_size", video_processor.merge_size)
        return patches // (merge * merge)
    raise ValueError(f"unknown video token count for model type {family!r}")


def context_window(
    config: Any, n_frames: int, height: int, width: int, video_processor: Any | None = None
) -> ContextWindow:
    """The context of model `config` with one video of `n_frames` frames of `height` x `width` pixels."""
    return ContextWindow(
        max_positions(config), video_tokens(config, n_frames, height, width, video_processor)
    )


def text_tokens_upper_bound(text: str) -> int:
    """A tokenizer-free upper bound on the tokens of `text` plus a chat template: every token of a
    byte-level or byte-fallback tokenizer is at least one byte."""
    return len(text.encode()) + TEMPLATE_SLACK
