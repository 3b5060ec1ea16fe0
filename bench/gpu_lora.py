"""The GPU benchmark's LoRA section (bench/gpu_foley.py): optimizer steps of the trainer on the model the
decoders measured, with their time and peak memory. Bench instrumentation only."""

from __future__ import annotations

import json
import time

import torch
from gpu_counters import peak_gib
from gpu_run import DEVICE, DTYPE, TINY, log, sync


def lora_steps(model, llm, frames) -> None:
    """Optimizer steps of training/lora.py on one (clip, script) example, gradient checkpointing on."""
    from v2t_foley.foley_core.backends.base import GenerationRequest
    from v2t_foley.training.collate import SFTCollator
    from v2t_foley.training.config import TrainConfig
    from v2t_foley.training.lora import apply_lora, training_step

    cfg = TrainConfig(lora_r=16, lora_alpha=32, learning_rate=1e-4)
    peft_model = apply_lora(model, cfg)
    if DEVICE == "cuda":
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.enable_input_require_grads()
    llm.model = peft_model
    llm.use_decoder("generate")  # the static decoder held the model before LoRA wrapped it
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
    for i in range(3 if not TINY else 1):
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
