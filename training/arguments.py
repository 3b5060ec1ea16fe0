"""`TrainConfig` -> `transformers.TrainingArguments`: the project's fields under the Trainer's names, the
YAML's other TrainingArguments fields as they are, and what the collator needs fixed.

Checkpoints are the Trainer's (`<output>/checkpoints/checkpoint-N/`: adapter, optimizer, scheduler,
RNG state per process, `trainer_state.json`); tensorboard logs go to `<output>/checkpoints/runs/`.
"""

from __future__ import annotations

import dataclasses
import os
from functools import cache
from pathlib import Path
from typing import Any

from v2t_foley.foley_core.errors import InputError

# the Trainer's names of three TrainConfig fields
ALIASES = {
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
}
# TrainingArguments fields the project sets itself: the collator's batches need them as they are
OURS = frozenset({"remove_unused_columns", "label_names"})
# report_to entries the project handles itself (not transformers integrations)
OWN_REPORTS = frozenset({"csv", "jsonl"})


@cache
def trainer_fields() -> frozenset[str]:
    from transformers import TrainingArguments

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments) if f.init)


def world_size() -> int:
    """Processes of this run, as torchrun / accelerate launch set them (1 when launched plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def use_cpu(config) -> bool:
    import torch

    return config.device == "cpu" or not torch.cuda.is_available()


def training_arguments(config, output: Path, *, max_steps: int, has_eval: bool):
    """The TrainingArguments of a run of `config` writing under `output`."""
    from transformers import TrainingArguments

    cpu = use_cpu(config)
    reports = [r for r in config.report_to if r not in OWN_REPORTS and r != "none"]
    values: dict[str, Any] = {
        "output_dir": str(output / "checkpoints"),
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "num_train_epochs": config.epochs,
        "max_steps": max_steps,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "eval_strategy": "steps" if has_eval and config.eval_steps else "no",
        "eval_steps": config.eval_steps or None,
        "logging_steps": 1,
        "report_to": reports or "none",
        "seed": config.seed,
        "use_cpu": cpu,
        "bf16": config.dtype in ("bfloat16", "bf16") or (config.dtype is None and not cpu),
        "fp16": config.dtype in ("float16", "fp16"),
        "ddp_find_unused_parameters": False,  # every LoRA weight gets a gradient
        "dataloader_pin_memory": not cpu,
        "disable_tqdm": True,
        "save_safetensors": True,
        "prediction_loss_only": True,
    }
    if cpu and world_size() > 1:
        values["ddp_backend"] = "gloo"
    values = {k: v for k, v in values.items() if k in trainer_fields()}  # across transformers versions
    values.update(config.training_args)
    values.update({"remove_unused_columns": False, "label_names": ["labels"]})
    try:
        return TrainingArguments(**values)
    except (TypeError, ValueError) as err:
        raise InputError(f"training arguments: {err}") from None
