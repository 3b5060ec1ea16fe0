"""`foley experiment`: the same videos through several prompt sets, and one comparison report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from v2t_foley.flows.cli.common import (
    BackendOpt,
    BaseUrlOpt,
    DeviceOpt,
    ModelOpt,
    TimingOpt,
    VerboseOpt,
    app,
    err,
    guarded,
    quiet_prefect,
    quiet_transformers,
    setup_logging,
    warn_if_tiny,
)
from v2t_foley.foley_core.backends.base import DEFAULT_MODEL
from v2t_foley.foley_core.errors import InputError


@app.command("experiment")
def experiment_command(
    manifest: Annotated[str, typer.Option("--manifest", help="CSV / Parquet / JSONL with a 'video' column.")],
    store: Annotated[str, typer.Option("--store", help="Dataset folder or s3://bucket/prefix.")],
    prompts: Annotated[
        list[Path],
        typer.Option("--prompts", help="A folder of prompt templates; give two or more (the first is A)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where report.md, report.json and the plot go.")] = Path(
        "foley-experiment"
    ),
    ref: Annotated[
        str | None, typer.Option("--ref", help="Folder of <id>.json reference scripts: score every version.")
    ] = None,
    model: ModelOpt = None,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Requests per model batch.")] = 8,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N videos.")] = None,
    timing: TimingOpt = "measured",
    similarity: Annotated[
        bool, typer.Option(help="Score description similarity (sentence embeddings, offline).")
    ] = True,
    verbose: VerboseOpt = False,
) -> None:
    """Run the manifest through each prompt set (one build each, into one store), then compare them:
    validity, events, cues per track, description length and vocabulary, cost per video, and the
    agreement of each version with the first (event F1, IoU, description similarity)."""
    setup_logging(verbose)
    quiet_prefect(verbose)

    def run() -> None:
        from v2t_foley.flows.cli.factory import check_build_inputs
        from v2t_foley.foley_core.output_paths import check_out_folder

        check_out_folder(out)

        if len(prompts) < 2:
            raise InputError("give at least two --prompts folders")
        for folder in prompts:
            if not folder.is_dir():
                raise InputError(f"--prompts {folder}: not a folder")
        options = dict(
            model=model or DEFAULT_MODEL,
            backend=backend,
            base_url=base_url,
            device=device,
            batch_size=batch_size,
            limit=limit,
            timing=timing,
        )
        check_build_inputs(manifest, store, **options)
        warn_if_tiny(model)
        quiet_transformers()
        from v2t_foley.flows.experiment import experiment

        with err.status(f"running {len(prompts)} prompt sets over {manifest}"):
            result = experiment(
                manifest=manifest,
                store=store,
                prompts_dirs=[str(p) for p in prompts],
                out=str(out),
                ref=ref,
                similarity=similarity,
                **options,
            )
        print(Path(result["paths"]["markdown"]).read_text())
        versions = result["versions"]
        err.print(
            f"report: {result['paths']['markdown']} (+ report.json, experiment.png); side by side: "
            f"foley review {store} --out review --compare {versions[0]} {versions[1]}",
            highlight=False,
            soft_wrap=True,
        )

    guarded(run)
