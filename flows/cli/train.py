"""`foley train`: LoRA-train the one-pass foley-script writer, then evaluate it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from v2t_foley.flows.cli.common import (
    VerboseOpt,
    app,
    err,
    guarded,
    quiet_transformers,
    setup_logging,
    warn_if_tiny,
)
from v2t_foley.foley_core.errors import InputError


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of TrainConfig fields.")] = None,
    store: Annotated[str | None, typer.Option("--store", help="Dataset store to train on.")] = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir", help="Adapter folder.")] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "--base-model",
            help="Model the adapter is for (default: the model that wrote the store's rows).",
        ),
    ] = None,
    prompt_version: Annotated[
        str | None,
        typer.Option("--prompt-version", help="Train on this prompt version's rows (default: newest)."),
    ] = None,
    include_adapter_rows: Annotated[
        bool,
        typer.Option(
            "--include-adapter-rows", help="Also learn from adapters' one-pass rows, not just the chain's."
        ),
    ] = False,
    curation: Annotated[
        str | None,
        typer.Option(
            "--curation",
            help="Which curated rows train (foley curate): approved, not-rejected (default: all but "
            "rejected), or ignore; a kept row with an edited script trains on the edit.",
        ),
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Optimizer steps in all.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs")] = None,
    num_processes: Annotated[
        int | None,
        typer.Option(
            "--num-processes", help="Data-parallel processes (one per GPU) through torchrun on this machine."
        ),
    ] = None,
    evaluate: Annotated[bool, typer.Option(help="Evaluate on the held-out videos afterwards.")] = True,
    reference: Annotated[
        str | None, typer.Option("--reference", help="Ground-truth <id>.json folder.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """LoRA-train a model to write the chain's script from one simple prompt (resumes when it can)."""
    setup_logging(verbose)

    def run() -> None:
        from v2t_foley.training.config import TrainConfig
        from v2t_foley.training.launch import run_training

        overrides = {
            "store": store,
            "output_dir": output_dir,
            "base_model": base_model,
            "max_steps": max_steps,
            "learning_rate": learning_rate,
            "epochs": epochs,
            "prompt_version": prompt_version,
            "curation": curation,
            "include_adapter_rows": include_adapter_rows or None,  # None: the config file's value
            "num_processes": num_processes,
        }
        cfg = (
            TrainConfig.from_yaml(config, **overrides)
            if config
            else TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
        )
        if not cfg.store:
            raise InputError("give --store (or store: in --config)")
        from v2t_foley.foley_core.store import DatasetStore

        DatasetStore(cfg.store).check_is_store()
        quiet_transformers()
        with err.status(f"training a LoRA adapter on {cfg.store}"):
            result = run_training(cfg)
        if result.steps_run == 0:
            err.print(
                f"{result.output_dir}: already trained {result.steps} steps; pass --max-steps larger "
                f"than {result.steps} to continue",
                highlight=False,
                soft_wrap=True,  # one line, whatever the terminal's width
            )
            return
        warn_if_tiny(result.base_model)  # after: without --model it is the store's, known once read
        cfg = replace(cfg, base_model=result.base_model)
        eval_loss = "" if result.eval_loss is None else f"; eval loss {result.eval_loss:.4f}"
        err.print(
            f"adapter: {result.output_dir} ({result.steps} steps; loss {result.first_loss:.4f} -> "
            f"{result.last_loss:.4f}{eval_loss}; {result.train_examples} train / {result.eval_examples} "
            "eval videos)"
        )
        if evaluate and result.eval_examples:
            from v2t_foley.training.evaluate import default_similarity, evaluate_adapter

            with err.status("evaluating on the held-out videos"):
                evaluate_adapter(cfg, result.output_dir, reference, default_similarity())
            err.print(Path(result.output_dir, "eval.md").read_text())

    guarded(run)
