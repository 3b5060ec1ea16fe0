"""`foley build-dataset` and `foley publish`: the dataset factory and its Hub upload."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from v2t_foley.flows.cli.common import (
    AdapterOpt,
    BackendOpt,
    BaseUrlOpt,
    ChunkSecondsOpt,
    ConcurrencyOpt,
    DecoderOpt,
    DeviceOpt,
    ModelOpt,
    PartialOkOpt,
    PromptsOpt,
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


@app.command("build-dataset")
def build_dataset_command(
    manifest: Annotated[
        str | None, typer.Option("--manifest", help="CSV / Parquet / JSONL with a 'video' column.")
    ] = None,
    store: Annotated[
        str | None, typer.Option("--store", help="Dataset folder or s3://bucket/prefix.")
    ] = None,
    model: ModelOpt = None,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = 16,
    decoder: DecoderOpt = "generate",
    adapter: AdapterOpt = None,
    prompts: PromptsOpt = None,
    device: DeviceOpt = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Videos per Parquet shard.")] = 64,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Process at most this many new videos.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Requests per model batch.")] = 8,
    result_storage: Annotated[
        str | None,
        typer.Option("--result-storage", help="Where cached chain steps live (default: <store>/_cache)."),
    ] = None,
    work_pool: Annotated[
        str | None,
        typer.Option("--work-pool", help="Run the shards as deployment runs of process-shards/<pool>."),
    ] = None,
    shard_runs: Annotated[
        int,
        typer.Option(
            "--shard-runs",
            help="With --work-pool: deal the shards to this many runs, each loading the model once for "
            "the shards it takes (e.g. the number of GPU workers); 0: a run per shard, of which those "
            "that workers start take the others' shards.",
        ),
    ] = 0,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Process videos whose earlier row failed again.")
    ] = False,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Generate a few clips and a manifest; run offline with tiny-random."),
    ] = False,
    demo_dir: Annotated[
        Path, typer.Option("--demo-dir", help="Where --demo puts its clips and store.")
    ] = Path("foley-demo"),
    timing: TimingOpt = "measured",
    chunk_seconds: ChunkSecondsOpt = 30.0,
    partial_ok: PartialOkOpt = False,
    wait_for_store: Annotated[
        float,
        typer.Option(
            "--wait-for-store",
            help="Seconds to wait when another build holds the store (default: leave it, exit 0).",
        ),
    ] = 0.0,
    allow_root: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-root",
            help="Only read local videos under this folder (repeatable); for manifests others wrote.",
        ),
    ] = None,
    license_id: Annotated[
        str | None,
        typer.Option(
            "--license",
            help="License of the scripts for the dataset card (a Hub license id, e.g. cc-by-4.0); kept in "
            "the store's _card.json for later runs. Until set, the card says: unknown.",
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the build-dataset flow here (no server to start): manifest in, Parquet shards out."""
    setup_logging(verbose)
    quiet_prefect(verbose)

    def run() -> None:
        nonlocal manifest, store, model
        if demo:
            from v2t_foley.flows.demo import make_demo

            manifest = manifest or make_demo(demo_dir / "videos")
            store = store or str((demo_dir / "store").resolve())
            model = model or "tiny-random"
        if not manifest or not store:
            raise InputError("give --manifest and --store (or --demo)")
        if adapter and not model:  # the adapter's own base model, as peft's AutoPeftModel reads it
            from v2t_foley.training.basemodel import adapter_base_model

            model = adapter_base_model(adapter)
        options = dict(
            model=model or DEFAULT_MODEL,
            backend=backend,
            base_url=base_url,
            adapter=adapter,
            prompts_dir=str(prompts) if prompts else None,
            device=device,
            shard_size=shard_size,
            limit=limit,
            batch_size=batch_size,
            concurrency=concurrency,
            decoder=decoder,
            result_storage=result_storage,
            work_pool=work_pool,
            shard_runs=shard_runs,
            retry_failed=retry_failed,
            timing=timing,
            chunk_seconds=chunk_seconds,
            partial_ok=partial_ok,
            wait_for_store_s=wait_for_store,
            allow_roots=allow_root or None,
            license_id=license_id,
        )
        check_build_inputs(manifest, store, **options)
        warn_if_tiny(model)
        summary = run_build(manifest, store, **options)
        if summary.busy:
            err.print(
                f"[yellow]store busy:[/] {summary.busy} is building {summary.store}; this run wrote "
                "nothing. Run again later, or pass --wait-for-store SECONDS.",
                highlight=False,
            )
            return
        print_summary(summary, demo)

    guarded(run)


def check_build_inputs(manifest: str, store: str, **options: object) -> None:
    """The user's mistakes, named before Prefect starts (so no flow-run traceback precedes the message):
    the options the flow checks again (by the build-dataset flow's names; what is not given takes the
    flow's default), the store's location, the manifest."""
    import inspect

    from v2t_foley.flows.build_dataset import build_dataset, check_build_options
    from v2t_foley.foley_core.backends import BackendSpec
    from v2t_foley.foley_core.chain import ChainConfig
    from v2t_foley.foley_core.manifest import read_manifest
    from v2t_foley.foley_core.store import DatasetStore
    from v2t_foley.foley_core.store.card import check_license_id

    defaults = inspect.signature(build_dataset.fn).parameters
    given: dict[str, Any] = {name: options.get(name, defaults[name].default) for name in defaults}
    spec = ("backend", "model", "adapter", "base_url", "device", "batch_size", "concurrency", "decoder")
    BackendSpec(**{name: given[name] for name in spec})
    ChainConfig(timing=given["timing"], chunk_seconds=given["chunk_seconds"] or None)
    check_build_options(
        shard_size=given["shard_size"],
        limit=given["limit"],
        wait_for_store_s=given["wait_for_store_s"],
        shard_runs=given["shard_runs"],
        work_pool=given["work_pool"],
    )
    if given["license_id"]:
        check_license_id(given["license_id"])
    DatasetStore(store).check_writable()
    read_manifest(manifest)


def run_build(manifest: str, store: str, **options):
    """The build-dataset flow, its progress shown as it runs: a live bar on a terminal (videos done/total,
    ok/failed, rate, ETA), one line per shard otherwise (logs, CI)."""
    from v2t_foley.flows import progress as flow_progress
    from v2t_foley.flows.progress import BuildProgress

    quiet_transformers()
    from v2t_foley.flows.build_dataset import build_dataset

    tracker = BuildProgress()
    if err.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task("starting Prefect", total=None, ok=0, failed=0, rate="")

            def listener(kind: str, data: dict) -> None:
                tracker.update(kind, data)
                if kind == "planned":
                    bar.update(
                        task, total=data["total"], description=f"videos ({data['skipped']} already done)"
                    )
                elif kind == "video":
                    bar.update(
                        task,
                        completed=tracker.done,
                        ok=tracker.ok,
                        failed=tracker.failed,
                        rate=tracker.rate(),
                    )

            flow_progress.listen(listener)
            try:
                return build_dataset(manifest=manifest, store=store, **options)
            finally:
                flow_progress.stop_listening(listener)

    def line_listener(kind: str, data: dict) -> None:
        tracker.update(kind, data)
        if kind in ("planned", "shard"):
            err.print(tracker.line(kind, data), highlight=False, soft_wrap=True)

    flow_progress.listen(line_listener)
    try:
        return build_dataset(manifest=manifest, store=store, **options)
    finally:
        flow_progress.stop_listening(line_listener)


def per_step(seconds: dict[str, float]) -> str:
    """Each step task's wall time (the model's steps are one task), slowest first: where a build's time
    went."""
    ranked = sorted(seconds.items(), key=lambda item: -item[1])
    return ", ".join(f"{step} {s:.1f}" for step, s in ranked) or "-"


def print_summary(summary, demo: bool) -> None:
    from rich.table import Table

    table = Table(title=f"build-dataset run {summary.run_id}", show_header=False)
    for label, value in (
        ("new rows", f"{summary.new_rows} ({summary.new_ok_rows} ok, {summary.new_failed_rows} failed)"),
        ("skipped (already in the store)", str(summary.skipped)),
        ("shards written", str(summary.shards)),
        (
            "chain steps computed / cached",
            f"{sum(summary.computed.values())} / {sum(summary.cached.values())}",
        ),
        ("seconds per step task", per_step(summary.step_seconds)),
        ("prompt version", summary.prompt_version),
        ("store", summary.store),
        ("seconds", f"{summary.seconds:.1f}"),
    ):
        table.add_row(label, value)
    err.print(table)
    err.print(
        f'load it: datasets.load_dataset("{summary.store}")  (failed rows name their reason in "error")'
    )
    if demo:
        err.print(
            "[yellow]demo:[/] the descriptions come from a tiny random-weight model and are meaningless; one "
            "clip is truncated on purpose to show a failed row. For real scripts: "
            "foley build-dataset --manifest videos.csv --store ./store  (Video-LLaVA-7B by default).",
            highlight=False,
        )


@app.command()
def publish(
    store: Annotated[str, typer.Option("--store", help="Dataset store to publish.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repo, org/name.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be uploaded, upload nothing.")
    ] = False,
    public: Annotated[
        bool, typer.Option("--public", help="Create the repo public (default private).")
    ] = False,
    token_secret: Annotated[
        str | None, typer.Option("--token-secret", help="Prefect Secret block name.")
    ] = None,
    curation_column: Annotated[
        bool,
        typer.Option(
            "--curation-column",
            help="Add a `curation` column (latest decision per row) and publish edited scripts.",
        ),
    ] = False,
    exclude_rejected: Annotated[
        bool, typer.Option("--exclude-rejected", help="Leave rows a curator rejected out of the upload.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Push the store's complete shards and card to a Hugging Face Hub dataset repo (token: HF_TOKEN).
    The store itself is never changed: curated uploads are rewritten copies."""
    setup_logging(verbose)
    quiet_prefect(verbose)

    def run() -> None:
        import os

        from v2t_foley.flows.publish_dataset import publish_dataset
        from v2t_foley.foley_core.publish import check_repo_id

        check_repo_id(repo_id)
        if not dry_run and not token_secret and not os.environ.get("HF_TOKEN"):
            raise InputError("no Hub token: set HF_TOKEN, or pass --token-secret <Prefect Secret block name>")

        result = publish_dataset(
            store=store,
            repo_id=repo_id,
            dry_run=dry_run,
            private=not public,
            token_secret=token_secret,
            curation_column=curation_column,
            exclude_rejected=exclude_rejected,
        )
        verb = "would upload" if dry_run else "uploaded"
        for line in result["files"]:
            err.print(f"{verb} {line}", highlight=False, soft_wrap=True)
        if not dry_run:
            err.print(f"commit: {result['commit']}")

    guarded(run)
