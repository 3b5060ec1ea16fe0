"""LoRA training on `transformers.Trainer`: peft adapters on the language model's attention, the
project's collator (labels on the answer only, frames as the chain saw them), `TrainingArguments` from
`TrainConfig` (schedules, evaluation loss on the held-out split every `eval_steps`, `report_to`), the
Trainer's checkpoints and resume, and whatever distributed setup accelerate gives it (DDP, DeepSpeed,
FSDP) when launched with several processes.

    foley train --config cfg.yaml                         # YAML fills TrainConfig; flags override it
    foley train --store ./foley-store --output-dir ./adapter --base-model tiny-random --max-steps 20
    foley train --config cfg.yaml --num-processes 4       # torchrun on this machine, one process per GPU
    accelerate launch --num_processes 4 -m training --config cfg.yaml   # or DeepSpeed/FSDP configs

Run again on a finished folder, it trains nothing (and says so); a larger max_steps resumes from the
newest checkpoint. Without a base model it takes the one that wrote the store's training rows.

With several processes, rank 0 reads the store once and sends the examples to the others (every rank
trains on the same read); the Trainer's sampler gives each rank its own examples. Only rank 0 writes
the adapter folder; the other ranks write nothing but their own RNG state into the Trainer's
checkpoints (`checkpoint-N/rng_state_<rank>.pth`, what resume needs).

Output folder: adapter_model.safetensors + adapter_config.json, the processor files, `splits.json`,
`train_log.jsonl` (one line per step: loss, learning rate, grad norm), `eval_log.jsonl` (evaluation
loss), `train_log.csv` (report_to csv), `checkpoints/checkpoint-N/` and a model card (README.md).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
from v2t_foley.foley_core.chain.simple import load_simple_prompt
from v2t_foley.foley_core.curation import latest_decisions
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.training.arguments import training_arguments, world_size
from v2t_foley.training.basemodel import rows_model
from v2t_foley.training.collate import SFTCollator
from v2t_foley.training.config import TrainConfig
from v2t_foley.training.data import (
    SFTExample,
    curate_rows,
    examples_from_rows,
    read_store,
    split_examples,
    training_rows,
)
from v2t_foley.training.lora import apply_lora

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
    eval_loss: float | None = None  # loss on the held-out split after the last step (None: no eval split)
    eval_losses: list[dict[str, float]] = field(default_factory=list)  # {step, eval_loss} of this run
    processes: int = 1  # data-parallel processes that trained


@dataclass
class TrainingData:
    splits: dict[str, list[SFTExample]]  # train / eval
    version: dict[str, Any]  # for the card: store, rows, examples, prompt versions
    used: dict[str, Any]  # for _training/last.json: see TrainResult.used
    base_model: str


def latest_checkpoint(output: Path) -> Path | None:
    """The Trainer's newest `checkpoint-N` under `<output>/checkpoints` (None: none yet)."""
    folder = output / "checkpoints"
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return Path(found) if found else None


def checkpoint_step(folder: Path) -> int:
    """The optimizer steps a Trainer checkpoint holds (its trainer_state.json, else its name)."""
    state = folder / "trainer_state.json"
    if state.exists():
        return int(json.loads(state.read_text())["global_step"])
    return int(folder.name.rsplit("-", 1)[1])


class ExampleDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[SFTExample]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> SFTExample:
        return self.examples[index]


class TrainerCollator:
    """The project's collator, with the vision inputs in the model's dtype (bf16 weights on GPU)."""

    def __init__(self, collate: SFTCollator, dtype: torch.dtype) -> None:
        self.collate, self.dtype = collate, dtype

    def __call__(self, examples: list[SFTExample]) -> dict[str, torch.Tensor]:
        batch = self.collate(examples)
        for key in ("pixel_values_videos", "pixel_values"):
            if key in batch and batch[key].is_floating_point():
                batch[key] = batch[key].to(self.dtype)
        return batch


class FoleyTrainer(Trainer):
    """The Trainer, saving adapters as the project does: without embedding layers (LoRA never touches
    them; peft's "auto" check would look the base model's name up on the Hub), no processor in
    checkpoints (the adapter folder gets it once), nothing from ranks other than 0."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model.save_pretrained(output_dir, state_dict=state_dict, save_embedding_layers=False)


class LogCallback(TrainerCallback):
    """`train_log.jsonl` (+ `train_log.csv` with report_to csv) and `eval_log.jsonl`, written by rank 0;
    keeps this run's losses for the result and the card."""

    FIELDS = ("step", "loss", "lr", "grad_norm", "epoch", "seconds")

    def __init__(self, output: Path, csv_log: bool) -> None:
        self.output, self.csv_log = output, csv_log
        self.losses: list[float] = []
        self.eval_losses: list[dict[str, float]] = []
        self.started = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.losses.append(float(logs["loss"]))
            record = {
                "step": state.global_step,
                "loss": round(float(logs["loss"]), 5),
                "lr": logs.get("learning_rate"),
                "grad_norm": None if logs.get("grad_norm") is None else round(float(logs["grad_norm"]), 5),
                "epoch": logs.get("epoch"),
                "seconds": round(time.perf_counter() - self.started, 3),
            }
            self._write("train_log.jsonl", record, state)
            if self.csv_log and state.is_world_process_zero:
                path = self.output / "train_log.csv"
                new = not path.exists()
                with path.open("a", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=self.FIELDS)
                    if new:
                        writer.writeheader()
                    writer.writerow(record)
            log.info("step %d/%d loss %.4f", state.global_step, state.max_steps, record["loss"])
        if "eval_loss" in logs:
            record = {"step": state.global_step, "eval_loss": round(float(logs["eval_loss"]), 5)}
            self.eval_losses.append(record)
            self._write("eval_log.jsonl", record, state)
            log.info("step %d eval loss %.4f", state.global_step, record["eval_loss"])

    def _write(self, name: str, record: dict[str, Any], state) -> None:
        if state.is_world_process_zero:
            with (self.output / name).open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def load_examples(config: TrainConfig, output: Path) -> TrainingData:
    """Examples, split, and the record of what they came from, all from one read of the store."""
    read = read_store(DatasetStore(config.store))
    prompts = load_simple_prompt(config.prompts_dir)
    chosen = training_rows(
        read.rows, prompt_version=config.prompt_version, include_adapter_rows=config.include_adapter_rows
    )
    chosen, curation = curate_rows(chosen, latest_decisions(DatasetStore(config.store)), config.curation)
    examples = examples_from_rows(
        chosen, prompts, min_events=config.min_events, include_adapter_rows=config.include_adapter_rows
    )
    if not examples:
        hint = ""
        if not config.include_adapter_rows and any(r["status"] == "ok" and r["adapter"] for r in read.rows):
            hint = "; adapters' own rows are left out unless include_adapter_rows is set"
        raise InputError(
            f"{config.store}: no usable ok rows to train on (prompt version "
            f"{config.prompt_version or 'newest'}, min_events {config.min_events}, curation "
            f"{config.curation}){hint}"
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
        "curation": curation,
    }
    used = {
        "markers": list(read.markers),
        "ok_rows": read.ok_rows,
        "examples": len(examples),
        "keys": [list(e.key) for e in examples],
        "curation": curation,  # rows of each kind the curation mode kept or left out
        # every ok row the read saw: a later marker may carry these rows again (a store write that
        # replaces rows supersedes markers), so "new" is decided by key, not by marker name
        "seen": sorted(
            {(r["id"], r["prompt_version"], _model_key(r)) for r in read.rows if r["status"] == "ok"}
        ),
    }
    return TrainingData(splits, version, used, base_model)


def _shared_data(config: TrainConfig, output: Path, args) -> TrainingData:
    """Rank 0 reads the store (and writes splits.json); the other ranks get its read."""
    if args.world_size <= 1 or not torch.distributed.is_initialized():
        return load_examples(config, output)
    box: list[Any] = [None]
    if args.process_index == 0:
        try:
            box[0] = load_examples(config, output)
        except InputError as err:
            box[0] = err
    torch.distributed.broadcast_object_list(box, src=0)
    if isinstance(box[0], InputError):
        raise box[0]
    return box[0]


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) a LoRA fine-tuning as `config` says; write the adapter and its card.

    Launched by torchrun / accelerate launch, every process calls this; rank 0 writes."""
    from v2t_foley.training.card import write_model_card

    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    processes = world_size()
    # the arguments first: with several processes they set up the process group the data goes through
    args = training_arguments(config, output, max_steps=1, has_eval=True)
    _ = args.device  # sets up the process group (torchrun / accelerate launch)
    data = _shared_data(config, output, args)
    config = replace(config, base_model=data.base_model)
    splits = data.splits
    train_set, eval_set = splits["train"], splits["eval"]
    per_step = config.batch_size * config.grad_accum * processes
    max_steps = config.max_steps or math.ceil(config.epochs * len(train_set) / per_step)
    args = training_arguments(config, output, max_steps=max_steps, has_eval=bool(eval_set))
    checkpoint = latest_checkpoint(output) if config.resume else None
    result = TrainResult(
        output_dir=str(output),
        steps=0,
        first_loss=None,
        last_loss=None,
        train_examples=len(train_set),
        eval_examples=len(eval_set),
        data_version=data.version,
        base_model=data.base_model,
        used=data.used,
        processes=processes,
    )
    if (
        checkpoint is not None
        and checkpoint_step(checkpoint) >= max_steps
        and (output / "adapter_model.safetensors").exists()
    ):
        # a finished folder: loading the model to run no step would only cost time (and rewrite the card)
        log.info("%s already trained %d steps", output, checkpoint_step(checkpoint))
        return replace(result, steps=checkpoint_step(checkpoint))
    torch.manual_seed(config.seed)
    device = "cpu" if args.use_cpu else str(args.device)
    llm = TransformersVideoLLM(config.base_model, device=device, dtype=config.dtype, batch_size=1)
    model = apply_lora(llm.model, config)
    # peft records the folder the base was loaded from (for tiny-random, a machine-specific cache path);
    # record the name it was asked for, so `foley script --adapter A` alone finds the base again
    for adapter_config in model.peft_config.values():
        adapter_config.base_model_name_or_path = config.base_model
    if config.gradient_checkpointing and device.startswith("cuda"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    llm.model = model
    logs = LogCallback(output, csv_log="csv" in config.report_to)
    trainer = FoleyTrainer(
        model=model,
        args=args,
        data_collator=TrainerCollator(SFTCollator(llm), llm.dtype),
        train_dataset=ExampleDataset(train_set),
        eval_dataset=ExampleDataset(eval_set) if eval_set else None,
        callbacks=[logs],
    )
    trainer.remove_callback(PrinterCallback)  # the log callback reports (logging, train_log.jsonl)
    resume = config.training_args.get("resume_from_checkpoint") or (str(checkpoint) if checkpoint else None)
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    steps = trainer.state.global_step
    start = checkpoint_step(Path(resume)) if resume else 0
    eval_loss = None
    if eval_set:
        if logs.eval_losses and logs.eval_losses[-1]["step"] == steps:
            eval_loss = logs.eval_losses[-1]["eval_loss"]
        else:  # the evaluation loss after the last step always lands in the card
            eval_loss = round(float(trainer.evaluate()["eval_loss"]), 5)
    trainer.save_model(str(output))  # every rank takes part (sharded setups gather); rank 0 writes
    result = replace(
        result,
        steps=steps,
        steps_run=steps - start,
        first_loss=logs.losses[0] if logs.losses else None,
        last_loss=logs.losses[-1] if logs.losses else None,
        eval_loss=eval_loss,
        eval_losses=logs.eval_losses,
    )
    if args.should_save:
        llm.processor.save_pretrained(output)
        write_model_card(output, config, result)
    if args.world_size > 1:
        trainer.accelerator.wait_for_everyone()
    return result


def _model_key(row: dict[str, Any]) -> str:
    return f"{row['model_id']}@{row['adapter']}" if row.get("adapter") else row["model_id"]
