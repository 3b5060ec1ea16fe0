"""`TrainConfig`: every knob of a LoRA run, filled from a YAML file and/or CLI flags (TRL-style).

It maps onto `transformers.TrainingArguments` (`training_arguments`): the fields below carry the
project's names and defaults; any other `TrainingArguments` field may be set in the YAML too
(`lr_scheduler_type`, `deepspeed`, `fsdp`, `bf16`, `optim`, `save_total_limit`, ...) and lands in
`training_args`. The Trainer's own names of three fields are accepted as aliases: `num_train_epochs`
(epochs), `per_device_train_batch_size` (batch_size), `gradient_accumulation_steps` (grad_accum).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
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
    # which curated rows train (`foley curate`): approved only, all but rejected, or ignore curation;
    # a kept row with an edited script trains on the edit
    curation: str = "not-rejected"
    prompts_dir: str | None = None  # folder with simple.txt (None: the shipped one)
    eval_fraction: float = 0.1  # videos held out when the manifest gave no test/validation split
    min_events: int = 0  # drop rows whose chain found fewer events
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling numerator
    lora_dropout: float = 0.05  # dropout on the LoRA path
    target_modules: str = LANGUAGE_ATTENTION  # regex of the modules that get adapters
    learning_rate: float = 2e-4  # peak learning rate (AdamW)
    lr_scheduler_type: str = "cosine"  # after warm-up: cosine, linear, constant, ... (TrainingArguments)
    warmup_steps: int = 10  # linear warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping
    epochs: float = 3.0  # passes over the training examples (ignored when max_steps is set)
    max_steps: int | None = None  # optimizer steps in all (a resumed run counts the steps already done)
    batch_size: int = 1  # examples per forward pass, per process
    grad_accum: int = 8  # forward passes per optimizer step
    gradient_checkpointing: bool = True  # trade compute for memory (on GPU)
    save_steps: int = 50  # checkpoint every this many optimizer steps
    eval_steps: int = 50  # evaluation loss on the held-out split every this many steps (0: only at the end)
    report_to: list[str] = field(default_factory=lambda: ["csv"])  # csv (ours), tensorboard, wandb, ...
    resume: bool = True  # continue from the newest checkpoint in output_dir when there is one
    num_processes: int = 1  # data-parallel processes (GPUs): >1 launches torchrun on this machine
    seed: int = 0  # data order and initialisation
    device: str | None = None  # cuda / cpu (default: cuda when available)
    dtype: str | None = None  # bfloat16 on GPU, float32 on CPU by default
    max_eval_videos: int = 50  # evaluation cost cap (generation; the eval loss uses every held-out video)
    training_args: dict[str, Any] = field(default_factory=dict)  # any other TrainingArguments field

    def __post_init__(self) -> None:
        """Numbers no run can use are refused here, before a model loads (a flag or a YAML value)."""
        for name in ("epochs", "learning_rate"):  # YAML reads 2e-4 (no dot) as a string
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    raise InputError(f"{name} must be a number, got {value!r}") from None
        at_least_one = {
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "num_processes": self.num_processes,
            "lora_r": self.lora_r,
        }
        for name, value in at_least_one.items():
            if value is not None and not (_whole(value) and value >= 1):
                raise InputError(f"{name} must be a whole number of at least 1, got {value!r}")
        # the Trainer reads a save_steps below 1 as a fraction of the run's steps
        fraction = _number(self.save_steps) and 0 < self.save_steps < 1
        if not (fraction or (_whole(self.save_steps) and self.save_steps >= 1)):
            raise InputError(
                f"save_steps must be a whole number of at least 1 or a fraction, got {self.save_steps!r}"
            )
        for name in ("epochs", "learning_rate"):
            value = getattr(self, name)
            if not (_number(value) and value > 0):
                raise InputError(f"{name} must be above 0, got {value!r}")
        if not (_number(self.eval_fraction) and 0 <= self.eval_fraction < 1):
            raise InputError(f"eval_fraction must be at least 0 and below 1, got {self.eval_fraction!r}")
        from v2t_foley.training.data import CURATION_MODES

        if self.curation not in CURATION_MODES:
            raise InputError(f"unknown curation {self.curation!r}; use one of: {', '.join(CURATION_MODES)}")

    @classmethod
    def split_options(cls, data: dict[str, Any], source: str = "config") -> dict[str, Any]:
        """Sort a mapping of options into TrainConfig fields and `training_args` (other TrainingArguments
        fields); the Trainer's names for our fields are aliases. Unknown names are refused."""
        from v2t_foley.training.arguments import ALIASES, OURS, trainer_fields

        known = {f.name for f in fields(cls)}
        out: dict[str, Any] = {}
        extra = dict(data.get("training_args") or {})
        unknown = []
        for key, value in data.items():
            if key == "training_args":
                continue
            if key in ALIASES:
                out[ALIASES[key]] = value
            elif key in known:
                out[key] = value
            elif key in trainer_fields() and key not in OURS:
                extra[key] = value
            else:
                unknown.append(key)
        for key in list(extra):  # training_args: {learning_rate: ...} means the field itself
            if key in ALIASES or key in known:
                out.setdefault(ALIASES.get(key, key), extra.pop(key))
        bad = [k for k in extra if k not in trainer_fields() or k in OURS]
        if unknown or bad:
            raise InputError(f"{source}: unknown training option(s): {', '.join(sorted(unknown + bad))}")
        if isinstance(out.get("report_to"), str):
            out["report_to"] = [out["report_to"]]
        out["training_args"] = extra
        return out

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            reason = " ".join(str(err).split())  # YAML's message spans lines; the CLI prints one
            raise InputError(f"{path}: cannot read the training config: {reason}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: a training config is a mapping of option: value")
        data = cls.split_options(data, str(path))
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
