"""The GPU benchmark's model: Video-LLaVA-7B's shapes with random weights (nothing can be downloaded on
the device), or tiny ones with SCALE=tiny, on the bench's device and dtype. Bench code only."""

from __future__ import annotations

import torch

# beside bench/gpu_foley.py, which puts bench/ first on sys.path
from gpu_run import DEVICE, DTYPE, TINY

# (vision tower, language model) widths and depths; both keep the real model's 224-pixel frames in
# 14-pixel patches (257 tokens a frame), its 32,064-token vocabulary and its 4,096 positions
SHAPES = {
    "tiny": (
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
    ),
    "7b": (  # LanguageBind/Video-LLaVA-7B-hf
        {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "projection_dim": 768,
        },
        {
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "rms_norm_eps": 1e-5,
        },
    ),
}


def build_model(processor):
    """A random-weight Video-LLaVA for `processor`'s tokenizer (its special tokens and ids), in eval mode,
    of the 7B's shapes (tiny ones with SCALE=tiny)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
    )

    tok = processor.tokenizer
    vision_shape, text_shape = SHAPES["tiny" if TINY else "7b"]
    vision = CLIPVisionConfig(**vision_shape, image_size=224, patch_size=14)
    text = LlamaConfig(
        **text_shape,
        num_key_value_heads=text_shape["num_attention_heads"],
        vocab_size=32064,
        max_position_embeddings=4096,
    )
    text.eos_token_id, text.pad_token_id = tok.eos_token_id, tok.pad_token_id
    config = VideoLlavaConfig(
        vision_config=vision,
        text_config=text,
        vision_feature_layer=-2,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
    )
    with torch.device(DEVICE):
        model = VideoLlavaForConditionalGeneration._from_config(config, dtype=DTYPE)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval()
