"""The LoRA training loop: peft adapters on the language model's attention, labels on the answer only,
gradient accumulation and checkpointing, bf16 on GPU, and resume that continues the step count.

    foley train --config cfg.yaml                         # YAML fills TrainConfig; flags override it
    foley train --store ./foley-store --output-dir ./adapter --base-model tiny-random --max-steps 20

Run again on a finished folder, it trains nothing (and says so); a larger max_steps resumes from the
newest checkpoint. Without a base model it takes the one that wrote the store's training rows.

Output folder: adapter_model.safetensors + adapter_config.json, the processor files, `splits.json`,
`train_log.jsonl`, `checkpoints/step-N/` and a model card (README.md).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
from v2t_foley.foley_core.chain.simple import load_simple_prompt
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.training.basemodel import rows_model
from v2t_foley.training.collate import SFTCollator
from v2t_foley.training.config import TrainConfig
from v2t_foley.training.data import SFTExample, examples_from_rows, read_store, split_examples, training_rows
from v2t_foley.training.lora import apply_lora, training_step

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: str  # where the adapter is
    steps: int  # optimizer steps done in all (resumed runs included)
    first_loss: float | None  # loss of the first step of this run (None: no step ran)
    last_loss: float | None  # loss of the last step of this run
    train_examples: int
    eval_examples: int
    data_version: dict[str, Any]  # store, rows, prompt version
    base_model: str = ""  # the model trained (the config's, or the one that wrote the store's rows)
    steps_run: int = 0  # steps this run took; 0 when the folder had already trained max_steps
    # what this run read: shards, their ok rows, the (id, prompt_version, model) keys of its examples
    used: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingData:
    splits: dict[str, list[SFTExample]]  # train / eval
    version: dict[str, Any]  # for the card: store, rows, examples, prompt versions
    used: dict[str, Any]  # for _training/last.json: see TrainResult.used
    base_model: str


def latest_checkpoint(output: Path) -> Path | None:
    found = sorted((output / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


# LoRA never touches the embeddings here, so peft's "auto" check (which looks the base model's name up
# on the Hub when it is no local folder, e.g. `tiny-random`) is skipped on every save.


def save_checkpoint(model: PeftModel, optimizer, scheduler, step: int, output: Path) -> Path:
    folder = output / "checkpoints" / f"step-{step}"
    model.save_pretrained(folder, save_embedding_layers=False)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": random.getstate(),
            "torch_rng": torch.get_rng_state(),
        },
        folder / "trainer_state.pt",
    )
    return folder


def load_checkpoint(model: PeftModel, optimizer, scheduler, folder: Path) -> int:
    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def load_examples(config: TrainConfig, output: Path) -> TrainingData:
    """Examples, split, and the record of what they came from, all from one read of the store."""
    read = read_store(DatasetStore(config.store))
    prompts = load_simple_prompt(config.prompts_dir)
    chosen = training_rows(
        read.rows, prompt_version=config.prompt_version, include_adapter_rows=config.include_adapter_rows
    )
    examples = examples_from_rows(
        chosen, prompts, min_events=config.min_events, include_adapter_rows=config.include_adapter_rows
    )
    if not examples:
        hint = ""
        if not config.include_adapter_rows and any(r["status"] == "ok" and r["adapter"] for r in read.rows):
            hint = "; adapters' own rows are left out unless include_adapter_rows is set"
        raise InputError(
            f"{config.store}: no usable ok rows to train on (prompt version "
            f"{config.prompt_version or 'newest'}, min_events {config.min_events}){hint}"
        )
    base_model = config.base_model or rows_model(chosen, config.store)
    splits = split_examples(examples, config.eval_fraction, config.seed, output / "splits.json")
    if not splits["train"]:
        raise InputError("every example is held out for evaluation; lower eval_fraction or add videos")
    version = {
        "store": config.store,
        "rows": len(read.rows),
        "examples": len(examples),
        "prompt_version": examples[0].key[1],
        "simple_prompt_version": prompts.step_version("simple"),
    }
    used = {
        "markers": list(read.markers),
        "ok_rows": read.ok_rows,
        "examples": len(examples),
        "keys": [list(e.key) for e in examples],
        # every ok row the read saw: a later marker may carry these rows again (a store write that
        # replaces rows supersedes markers), so "new" is decided by key, not by marker name
        "seen": sorted(
            {(r["id"], r["prompt_version"], _model_key(r)) for r in read.rows if r["status"] == "ok"}
        ),
    }
    return TrainingData(splits, version, used, base_model)


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) a LoRA fine-tuning as `config` says; write the adapter and its card."""
    from v2t_foley.training.card import write_model_card

    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    data = load_examples(config, output)
    config = replace(config, base_model=data.base_model)
    splits = data.splits
    train_set = splits["train"]
    per_step = config.batch_size * config.grad_accum
    max_steps = config.max_steps or math.ceil(config.epochs * len(train_set) / per_step)
    checkpoint = latest_checkpoint(output) if config.resume else None
    result = TrainResult(
        output_dir=str(output),
        steps=0,
        first_loss=None,
        last_loss=None,
        train_examples=len(train_set),
        eval_examples=len(splits["eval"]),
        data_version=data.version,
        base_model=data.base_model,
        used=data.used,
    )
    if (
        checkpoint is not None
        and checkpoint_step(checkpoint) >= max_steps
        and (output / "adapter_model.safetensors").exists()
    ):
        # a finished folder: loading the model to run no step would only cost time (and rewrite the card)
        log.info("%s already trained %d steps", output, checkpoint_step(checkpoint))
        return replace(result, steps=checkpoint_step(checkpoint))
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    llm = TransformersVideoLLM(config.base_model, device=config.device, dtype=config.dtype, batch_size=1)
    device, dtype = llm.device, llm.dtype
    model = apply_lora(llm.model, config)
    # peft records the folder the base was loaded from (for tiny-random, a machine-specific cache path);
    # record the name it was asked for, so `foley script --adapter A` alone finds the base again
    for adapter_config in model.peft_config.values():
        adapter_config.base_model_name_or_path = config.base_model
    if config.gradient_checkpointing and device.startswith("cuda"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    llm.model = model
    collate = SFTCollator(llm)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup_steps))
    )
    step = 0
    if checkpoint is not None:
        step = load_checkpoint(model, optimizer, scheduler, checkpoint)
        log.info("resuming from %s at step %d", checkpoint, step)
    start = step
    logfile = (output / "train_log.jsonl").open("a")
    first_loss = last_loss = None
    order: list[SFTExample] = []
    cursor = step * per_step
    while step < max_steps:
        batches = []
        for _ in range(config.grad_accum):
            chunk = []
            for _ in range(config.batch_size):
                epoch, position = divmod(cursor, len(train_set))
                if position == 0 or not order:
                    order = train_set[:]
                    random.Random(config.seed + epoch).shuffle(order)
                chunk.append(order[position])
                cursor += 1
            batches.append(collate(chunk))
        started = time.perf_counter()
        loss = training_step(model, batches, optimizer, config, device, dtype)
        scheduler.step()
        step += 1
        first_loss = loss if first_loss is None else first_loss
        last_loss = loss
        record = {
            "step": step,
            "loss": round(loss, 5),
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - started, 3),
        }
        logfile.write(json.dumps(record) + "\n")
        logfile.flush()
        log.info("step %d/%d loss %.4f", step, max_steps, loss)
        if step % config.save_steps == 0 or step == max_steps:
            save_checkpoint(model, optimizer, scheduler, step, output)
    logfile.close()
    model.save_pretrained(output, save_embedding_layers=False)
    llm.processor.save_pretrained(output)
    result = replace(result, steps=step, steps_run=step - start, first_loss=first_loss, last_loss=last_loss)
    write_model_card(output, config, result)
    return result


def _model_key(row: dict[str, Any]) -> str:
    return f"{row['model_id']}@{row['adapter']}" if row.get("adapter") else row["model_id"]
