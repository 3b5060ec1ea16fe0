"""LoRA on the language model's attention, and one optimizer step: the pieces the trainer loops over
(and the GPU benchmark times on its own)."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from v2t_foley.training.config import TrainConfig


def apply_lora(model: torch.nn.Module, config: TrainConfig) -> PeftModel:
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        bias="none",
    )
    return get_peft_model(model, lora)


def training_step(
    model: torch.nn.Module,
    batches: list[dict[str, torch.Tensor]],
    optimizer,
    config: TrainConfig,
    device: str,
    dtype: torch.dtype,
) -> float:
    """One optimizer step over `batches` (gradient accumulation); returns the mean loss."""
    model.train()
    total = 0.0
    for batch in batches:
        inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        for key in ("pixel_values_videos", "pixel_values"):
            if key in inputs:
                inputs[key] = inputs[key].to(dtype)
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**inputs).loss / len(batches)
        loss.backward()
        total += float(loss.detach())
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total
