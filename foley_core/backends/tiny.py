"""Tiny random-weight vision-language models, built offline, loadable through `from_pretrained`.

They exist so tests, `foley smoke` and `--demo` runs exercise every code path of the real models
(processor, video tokens, generation, constrained decoding, LoRA) without a download. Their text is
meaningless. The reserved model name `tiny-random` resolves to the Video-LLaVA one, built once into
the cache folder and reused; `tiny-random-qwen2.5-vl` to the Qwen2.5-VL one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from v2t_foley.foley_core.video.source import default_cache_dir

TINY_VIDEO_LLAVA = "tiny-random"
TINY_QWEN_VL = "tiny-random-qwen2.5-vl"
TINY_NAMES = (TINY_VIDEO_LLAVA, TINY_QWEN_VL)
# Bump when a builder changes, so stale cached models are rebuilt rather than reused.
BUILD_VERSION = "1"

# Text the tokenizers learn their merges from: what the prompts and scripts are made of.
_CORPUS = """
You are a sound designer spotting a film clip for foley. List every audio-visual event with its time
window in seconds. What is the main object, what is its primary action, where does it happen, and
what sounds result? Footsteps on gravel, a door slams shut, a glass is set down on a wooden table,
a car passes on a wet road, wind in the trees, room tone, birds chirp, a man speaks, a woman laughs,
cloth rustles, keys jingle, a key turns in a lock, rain on a window, an engine starts, a dog barks.
{"events":[{"start":0.5,"end":1.25,"what":"a ball bounces"}]}
{"main_object":"ball","action":"bounces","context":"gym floor","sounds":["thud","squeak"]}
{"foley":[{"event":0,"start":0.0,"end":1.0,"description":"A ball hits the floor."}],"fx":[],
"ambience":[{"event":-1,"start":0.0,"end":4.0,"description":"Quiet room tone."}],"dialogue":[]}
0 1 2 3 4 5 6 7 8 9 00:05 01:30 USER: ASSISTANT: frame at s
"""


def is_tiny(name: str) -> bool:
    return name in TINY_NAMES


def tiny_model_path(name: str = TINY_VIDEO_LLAVA, cache_dir: str | Path | None = None) -> Path:
    """Folder of the named tiny model, built on first use (safe when several processes race)."""
    builders: dict[str, Callable[[Path], None]] = {
        TINY_VIDEO_LLAVA: build_tiny_video_llava,
        TINY_QWEN_VL: build_tiny_qwen2_5_vl,
    }
    if name not in builders:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(builders)}")
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "models"
    target = root / f"{name}-v{BUILD_VERSION}"
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        if (target / "config.json").exists():
            return target
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
        try:
            builders[name](staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _train_tokenizer(special: list[str], vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text can be written
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _round_up(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


VIDEO_LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}<image>\n{% elif item['type'] == 'video' %}<video>\n{% endif %}"
    "{% endfor %}{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_video_llava(path: Path, seed: int = 0) -> None:
    """Save a tiny Video-LLaVA (CLIP vision tower, Llama language model) with its processor to `path`.

    Same image size (224), patch size (14) and so the same 257 tokens a frame as the real model;
    only the widths and depths are tiny.
    """
    import torch
    from tokenizers import processors
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        PreTrainedTokenizerFast,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
        VideoLlavaImageProcessor,
        VideoLlavaProcessor,
        VideoLlavaVideoProcessor,
    )

    special = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>"]
    raw = _train_tokenizer(special)
    bos = raw.token_to_id("<s>")
    raw.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=224,
        patch_size=14,
        projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=_round_up(len(tokenizer)),
        max_position_embeddings=4096,
        bos_token_id=bos,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = VideoLlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = VideoLlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = bos
    processor = VideoLlavaProcessor(
        image_processor=VideoLlavaImageProcessor(),
        video_processor=VideoLlavaVideoProcessor(),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VIDEO_LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)


QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}"
    "{% elif item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2_5_vl(path: Path, seed: int = 0) -> None:
    """Save a tiny Qwen2.5-VL with its processor (image and video processors, chat template).

    Frames are resized to at most 112x112 pixels so a video costs a few dozen tokens.
    """
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    special = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(special),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": special[1:]})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in special}
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": _round_up(len(tokenizer)),
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels),
        video_processor=Qwen2VLVideoProcessor(size=pixels),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
