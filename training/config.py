"""`TrainConfig`: every knob of a LoRA run, filled from a YAML file and/or CLI flags (TRL-style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from v2t_foley.foley_core.errors import InputError

# LoRA on the language model's attention projections only; the vision tower and projector stay frozen.
LANGUAGE_ATTENTION = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


@dataclass
class TrainConfig:
    """A LoRA run. `foley train --config cfg.yaml --max-steps 100` fills it (flags win over the file)."""

    store: str = ""  # dataset store (local or s3://) whose ok rows are the training data
    output_dir: str = (
        "foley-adapter"  # adapter, checkpoints, logs, report (local or s3:// for the final copy)
    )
    # the model the adapter is for (Hub id, folder, tiny-random); None: the one that wrote the store's
    # training rows (refused when they come from several)
    base_model: str | None = None
    prompt_version: str | None = None  # train on rows of this prompt version only (None: the newest)
    include_adapter_rows: bool = False  # also learn from adapters' own one-pass rows (not just chains)
    prompts_dir: str | None = None  # folder with simple.txt (None: the shipped one)
    eval_fraction: float = 0.1  # videos held out when the manifest gave no test/validation split
    min_events: int = 0  # drop rows whose chain found fewer events
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator
    lora_dropout: float = 0.05  # dropout on the LoRA path
    target_modules: str = LANGUAGE_ATTENTION  # regex of the modules that get adapters
    learning_rate: float = 2e-4  # peak learning rate (AdamW)
    warmup_steps: int = 10  # linear warm-up, then constant
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping
    epochs: float = 3.0  # passes over the training examples (ignored when max_steps is set)
    max_steps: int | None = None  # optimizer steps in all (a resumed run counts the steps already done)
    batch_size: int = 1  # examples per forward pass
    grad_accum: int = 8  # forward passes per optimizer step
    gradient_checkpointing: bool = True  # trade compute for memory (on GPU)
    save_steps: int = 50  # checkpoint every this many optimizer steps
    resume: bool = True  # continue from the newest checkpoint in output_dir when there is one
    seed: int = 0  # data order and initialisation
    device: str | None = None  # cuda / cpu (default: cuda when available)
    dtype: str | None = None  # bfloat16 on GPU, float32 on CPU by default
    max_eval_videos: int = 50  # evaluation cost cap

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise InputError(f"{path}: cannot read the training config: {err}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: a training config is a mapping of option: value")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"{path}: unknown training option(s): {', '.join(sorted(unknown))}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
