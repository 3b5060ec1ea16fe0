"""GPU benchmark of v2t-foley's own paths on Video-LLaVA-7B shapes with random weights (no download).

    PYTHONPATH=. python bench/gpu_foley.py               # on an H100/H200
    SCALE=tiny PYTHONPATH=. python bench/gpu_foley.py    # the same code on CPU in seconds

Run it in the same call as ../shared/bench/gpu_videollava_baseline.py (plain generate + a plain LoRA
step) and gpu_videollava_static_compile.py, so the numbers come from the same card. One JSON line per
measurement:
- generate: the transformers backend (left-padded batches, xgrammar JSON-Schema decoding) at batch 1
  and 32, tokens/s, against an unconstrained batch of the same size;
- chain: identify -> reason -> synthesize for one clip, and for 32 clips at once through the batching
  backend (the factory's path), with tokens and wall time; and a one-pass caption of the clip for the
  "chain costs at most 2x a caption" target;
- lora_step: one optimizer step of training/lora.py on one (clip, script) example built by the
  trainer's own collator, gradient checkpointing on, peak memory.
The model's tokenizer is the tiny offline one (the real one cannot be downloaded there); the model's
shapes, the 8 x 257 video tokens and the processor are the real model's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

TINY = os.environ.get("SCALE") == "tiny"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


def log(**fields) -> None:
    print(json.dumps(fields), flush=True)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 1) if DEVICE == "cuda" else None


def build_model(processor):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        VideoLlavaConfig,
        VideoLlavaForConditionalGeneration,
    )

    tok = processor.tokenizer
    if TINY:
        vision = CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=224,
            patch_size=14,
        )
        text = LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=32064,
        )
    else:  # LanguageBind/Video-LLaVA-7B-hf shapes
        vision = CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=768,
        )
        text = LlamaConfig(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32064,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
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


def main() -> None:
    from transformers import AutoProcessor

    from v2t_foley.foley_core.backends.base import GenerationParams, GenerationRequest
    from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
    from v2t_foley.foley_core.backends.tiny import tiny_model_path
    from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
    from v2t_foley.foley_core.chain import ChainConfig, run_chain
    from v2t_foley.foley_core.schema import SchemaLimits, identify_schema
    from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
    from v2t_foley.foley_core.video import open_video

    work = Path(tempfile.mkdtemp(prefix="foley-gpu-"))
    os.environ.setdefault("FOLEY_CACHE_DIR", str(work / "cache"))
    processor = AutoProcessor.from_pretrained(tiny_model_path("tiny-random"))
    started = time.perf_counter()
    model = build_model(processor)
    sync()
    log(
        step="init",
        s=round(time.perf_counter() - started, 2),
        device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        params_b=round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
    )
    llm = TransformersVideoLLM.from_parts(model, processor, "random-video-llava-7b-shapes", batch_size=32)
    clip = write_scene_video(
        work / "clip.mp4",
        SceneSpec(duration=30.0 if not TINY else 4.0, fps=12.0, cuts=(10.0, 20.0), motions=((3.0, 6.0),)),
    )
    video = open_video(str(clip), max_side=512)
    frames = video.uniform(8)
    limits = SchemaLimits(
        max_events=3, max_sounds=3, max_cues_per_track=2, max_text_chars=48, max_field_chars=24
    )
    schema = identify_schema(video.info.duration, limits)

    def generate(batch: int, constrained: bool, new_tokens: int | None) -> None:
        requests = [GenerationRequest(frames, "List the events.", schema if constrained else None)] * batch
        params = GenerationParams(max_new_tokens=new_tokens)
        llm.generate(requests[:1], GenerationParams(max_new_tokens=2))  # warm-up
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        out = llm.generate(requests, params)
        sync()
        seconds = time.perf_counter() - t0
        tokens = sum(o.new_tokens for o in out)
        log(
            step="generate",
            batch=batch,
            constrained=constrained,
            new_tokens=tokens,
            s=round(seconds, 3),
            tok_s_total=round(tokens / seconds, 1),
            peak_gib=peak_gib(),
        )

    for batch in (1, 32) if not TINY else (1, 2):
        generate(batch, constrained=True, new_tokens=None)
        generate(batch, constrained=False, new_tokens=128)

    config = ChainConfig(limits=limits)
    t0 = time.perf_counter()
    caption = llm.generate(
        [GenerationRequest(frames, "Describe the clip.")], GenerationParams(max_new_tokens=128)
    )
    sync()
    caption_s = time.perf_counter() - t0
    log(step="caption", new_tokens=caption[0].new_tokens, s=round(caption_s, 3))
    t0 = time.perf_counter()
    result = run_chain(video, llm, config=config)
    sync()
    chain_s = time.perf_counter() - t0
    tokens = sum(c.new_tokens for c in result.trace.calls)
    log(
        step="chain_one_clip",
        calls=len(result.trace.calls),
        new_tokens=tokens,
        s=round(chain_s, 3),
        over_caption=round(chain_s / caption_s, 2),
        steps=result.trace.step_seconds,
    )

    n_clips = 32 if not TINY else 4
    shared = BatchingVideoLLM(llm, max_batch=32, max_wait_s=0.02)
    results: list = [None] * n_clips

    def one(k: int) -> None:
        results[k] = run_chain(open_video(str(clip), max_side=512), shared, config=config)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n_clips)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sync()
    seconds = time.perf_counter() - t0
    tokens = sum(c.new_tokens for r in results if r for c in r.trace.calls)
    log(
        step="chain_concurrent",
        clips=n_clips,
        batches=shared.batches,
        requests=shared.requests,
        new_tokens=tokens,
        s=round(seconds, 3),
        tok_s_total=round(tokens / seconds, 1),
        clips_per_hour=round(3600 * n_clips / seconds),
    )
    shared.close()

    from v2t_foley.training.collate import SFTCollator
    from v2t_foley.training.config import TrainConfig
    from v2t_foley.training.lora import apply_lora, training_step

    cfg = TrainConfig(lora_r=16, lora_alpha=32, learning_rate=1e-4)
    peft_model = apply_lora(model, cfg)
    if DEVICE == "cuda":
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.enable_input_require_grads()
    llm.model = peft_model
    target = json.dumps(
        {
            "foley": [{"start": 1.0, "end": 2.0, "description": "footsteps on gravel " * 8}] * 4,
            "fx": [],
            "ambience": [],
            "dialogue": [],
        }
    )
    batch = SFTCollator(llm).batch([GenerationRequest(frames, "Write the foley script.")], [target])
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=cfg.learning_rate
    )
    answer_tokens = int((batch["labels"] != -100).sum())
    for i in range(3):
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        loss = training_step(peft_model, [batch], optimizer, cfg, DEVICE, DTYPE)
        sync()
        log(
            step="lora_step",
            i=i,
            s=round(time.perf_counter() - t0, 3),
            loss=round(loss, 3),
            seq_len=int(batch["input_ids"].shape[1]),
            answer_tokens=answer_tokens,
            peak_gib=peak_gib(),
        )


if __name__ == "__main__":
    sys.exit(main())
