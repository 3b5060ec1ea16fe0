"""`foley`: the command line over foley_core and the flows.

    foley script clip.mp4                      # the real Video-LLaVA (downloads ~14 GB once)
    foley script clip.mp4 --model tiny-random  # the offline random test model: meaningless text
    foley smoke                                # the whole chain offline, on a generated clip

Exit codes: 0 ok, 2 bad input (the message says what and why), 1 anything else.
Progress and messages go to stderr; the script goes to stdout or --out.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler

from foley_core.backends.base import DEFAULT_MODEL
from foley_core.errors import FoleyError, InputError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Multi-track foley scripts from videos, with a video-LLM chain of thought.",
)
err = Console(stderr=True)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", help="Hub id, local folder, served model name, or 'tiny-random' (offline test model)."
    ),
]
BackendOpt = Annotated[str, typer.Option("--backend", help="transformers (in-process) or openai (a server).")]
BaseUrlOpt = Annotated[
    str | None, typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
]
AdapterOpt = Annotated[
    str | None, typer.Option("--adapter", help="LoRA adapter folder; uses the simple prompt.")
]
PromptsOpt = Annotated[
    Path | None, typer.Option("--prompts", help="Folder of prompt templates (default: shipped).")
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cuda, cuda:1, cpu (default: cuda if available).")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")]
TimingOpt = Annotated[
    str,
    typer.Option(
        "--timing",
        help="measured: cue times from measured cuts/motion/onsets/speech (default); model: the model's own.",
    ),
]


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )
    # transformers' own progress bars and warnings are noise on this CLI's stderr
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def quiet_transformers() -> None:
    """transformers' own progress bars would tear through this CLI's progress display."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def fail(error: BaseException) -> NoReturn:
    """Print the error the way a user can act on it and exit with the documented code."""
    if os.environ.get("FOLEY_DEBUG"):
        raise error
    code = 2 if isinstance(error, InputError) else 1
    label = "bad input" if code == 2 else "error"
    err.print(f"[bold red]{label}:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(run: Callable[[], None]) -> None:
    try:
        run()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except FoleyError as error:
        fail(error)
    except Exception as error:  # the last line of defence: a message, not a traceback
        fail(RuntimeError(f"{type(error).__name__}: {error} (set FOLEY_DEBUG=1 for the traceback)"))


def warn_if_tiny(model: str | None) -> None:
    from foley_core.backends.tiny import is_tiny

    if model and is_tiny(model):
        err.print(
            f"[yellow]warning:[/] {model!r} is a tiny random-weight test model: it exercises every code "
            "path, but its descriptions are meaningless. Use the default model for real scripts.",
            highlight=False,
        )


def write_json(data: object, out: Path | None) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")


def script_video(
    video: str,
    *,
    model: str | None,
    backend: str,
    base_url: str | None,
    adapter: str | None,
    prompts_dir: Path | None,
    device: str | None,
    timing: str = "measured",
):
    """Open the video (failing fast), load the model, run the chain with a progress display."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from foley_core.backends import BackendSpec, load_backend
    from foley_core.chain import ChainConfig, run_chain
    from foley_core.prompts import load_prompts
    from foley_core.video import open_video

    opened = open_video(video)  # a bad video fails here, before any model is loaded
    config = ChainConfig(timing=timing)
    prompts = load_prompts(prompts_dir)
    spec = BackendSpec(
        backend=backend, model=model or DEFAULT_MODEL, adapter=adapter, base_url=base_url, device=device
    )
    quiet_transformers()
    warn_if_tiny(model)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"loading {model or 'the default model'}", total=None)
        llm = load_backend(spec)
        progress.update(
            task, description=f"{'one pass (adapter)' if adapter else 'chain'}: {Path(video).name}"
        )
        if adapter:  # an adapter was trained to answer the simple prompt in one pass
            from foley_core.chain.simple import load_simple_prompt, run_simple

            return run_simple(opened, llm, load_simple_prompt(prompts_dir), config)
        result = run_chain(
            opened,
            llm,
            prompts,
            config,
            on_step=lambda step: progress.update(task, description=f"{step}: {Path(video).name}"),
        )
    return result


@app.command()
def script(
    video: Annotated[str, typer.Argument(help="Video file or fsspec URI (s3://, gs://, https://).")],
    model: ModelOpt = None,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    adapter: AdapterOpt = None,
    prompts: PromptsOpt = None,
    device: DeviceOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the script here (default: stdout).")
    ] = None,
    trace: Annotated[Path | None, typer.Option("--trace", help="Write the full chain trace here.")] = None,
    timing: TimingOpt = "measured",
    verbose: VerboseOpt = False,
) -> None:
    """Write the multi-track foley script of one video (JSON, seed format plus start/end/event)."""
    setup_logging(verbose)

    def run() -> None:
        result = script_video(
            video,
            model=model,
            backend=backend,
            base_url=base_url,
            adapter=adapter,
            prompts_dir=prompts,
            device=device,
            timing=timing,
        )
        write_json(result.script.model_dump(), out)
        if trace:
            write_json(result.trace.model_dump(), trace)
        cues = len(result.script.cues())
        err.print(
            f"{cues} cue(s) in {len(result.trace.events)} event(s)"
            + (f"; script: {out}" if out else "")
            + (f"; trace: {trace}" if trace else "")
        )

    guarded(run)


@app.command()
def smoke(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where the clip, script and trace go.")] = Path(
        "foley-smoke"
    ),
    verbose: VerboseOpt = False,
) -> None:
    """Run the whole chain offline: the tiny random model on a generated clip. Checks an install."""
    setup_logging(verbose)

    def run() -> None:
        from foley_core.backends.tiny import TINY_VIDEO_LLAVA, tiny_model_path
        from foley_core.synthetic import write_scene_video

        out_dir.mkdir(parents=True, exist_ok=True)
        with err.status("building the tiny offline model (once)"):
            tiny_model_path(TINY_VIDEO_LLAVA)
        clip = write_scene_video(out_dir / "clip.mp4")
        result = script_video(
            str(clip),
            model=TINY_VIDEO_LLAVA,
            backend="transformers",
            base_url=None,
            adapter=None,
            prompts_dir=None,
            device=None,
        )
        write_json(result.script.model_dump(), out_dir / "script.json")
        write_json(result.trace.model_dump(), out_dir / "trace.json")
        err.print(
            f"[green]smoke ok:[/] the chain ran offline ({len(result.trace.calls)} model calls, "
            f"{len(result.script.cues())} cues; the text is meaningless by design).\n"
            f"  clip:   {clip}\n  script: {out_dir / 'script.json'}\n  trace:  {out_dir / 'trace.json'}",
            highlight=False,
        )

    guarded(run)


def quiet_prefect(verbose: bool) -> None:
    """Prefect's INFO logs would bury the progress bar; its telemetry cannot leave this machine anyway."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


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
        str | None, typer.Option("--work-pool", help="Run shards as deployment runs of process-shard/<pool>.")
    ] = None,
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
    verbose: VerboseOpt = False,
) -> None:
    """Run the build-dataset flow here (no server to start): manifest in, Parquet shards out."""
    setup_logging(verbose)
    quiet_prefect(verbose)

    def run() -> None:
        nonlocal manifest, store, model
        if demo:
            from flows.demo import make_demo

            manifest = manifest or make_demo(demo_dir / "videos")
            store = store or str((demo_dir / "store").resolve())
            model = model or "tiny-random"
        if not manifest or not store:
            raise InputError("give --manifest and --store (or --demo)")
        warn_if_tiny(model)
        summary = run_build(
            manifest,
            store,
            model=model or DEFAULT_MODEL,
            backend=backend,
            base_url=base_url,
            adapter=adapter,
            prompts_dir=str(prompts) if prompts else None,
            device=device,
            shard_size=shard_size,
            limit=limit,
            batch_size=batch_size,
            result_storage=result_storage,
            work_pool=work_pool,
            retry_failed=retry_failed,
            timing=timing,
        )
        print_summary(summary, demo)

    guarded(run)


def run_build(manifest: str, store: str, **options):
    """The build-dataset flow with a progress bar fed by the flow's progress reports."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows import progress as flow_progress

    quiet_transformers()
    from flows.build_dataset import build_dataset

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("starting Prefect", total=None)

        def listener(kind: str, data: dict) -> None:
            if kind == "planned":
                bar.update(task, total=data["total"], description=f"videos ({data['skipped']} already done)")
            elif kind == "video":
                bar.advance(task)

        flow_progress.listen(listener)
        try:
            return build_dataset(manifest=manifest, store=store, **options)
        finally:
            flow_progress.stop_listening(listener)


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


@app.command("eval")
def eval_command(
    pred: Annotated[str, typer.Option("--pred", help="Folder of <id>.json scripts, or a dataset store.")],
    ref: Annotated[str, typer.Option("--ref", help="Folder of <id>.json reference scripts.")],
    tolerance: Annotated[float, typer.Option("--tolerance", help="Onset tolerance in seconds.")] = 0.5,
    out: Annotated[Path, typer.Option("--out", help="Where the JSON report and the PNGs go.")] = Path(
        "foley-eval"
    ),
    videos: Annotated[
        Path | None, typer.Option("--videos", help="Folder with <id>.<ext> videos for plots.")
    ] = None,
    similarity: Annotated[
        bool, typer.Option(help="Score description similarity (sentence embeddings).")
    ] = True,
    plots: Annotated[bool, typer.Option(help="Write one PNG per video.")] = True,
    verbose: VerboseOpt = False,
) -> None:
    """Score predicted scripts against references: event F1 per track, IoU, similarity, validity."""
    setup_logging(verbose)

    def run() -> None:
        from foley_core.evaluation import load_predictions, load_references
        from foley_core.metrics import EmbeddingSimilarity, score_corpus

        references = load_references(ref)
        predictions = load_predictions(pred)
        quiet_transformers()
        pairs = {
            vid: (predictions[vid].script if vid in predictions else None, script)
            for vid, script in references.items()
        }
        with err.status("scoring"):
            corpus = score_corpus(pairs, tolerance, EmbeddingSimilarity() if similarity else None)
        out.mkdir(parents=True, exist_ok=True)
        report = corpus.summary() | {"tolerance_s": tolerance, "pred": pred, "ref": ref}
        (out / "report.json").write_text(json.dumps(report, indent=1))
        print_scores(corpus)
        if plots:
            written = write_plots(pairs, predictions, videos, out)
            err.print(f"{written} plot(s) in {out}")
        err.print(f"report: {out / 'report.json'}")

    guarded(run)


def print_scores(corpus) -> None:
    from rich.table import Table

    table = Table(title=f"{corpus.videos} video(s); valid predictions {corpus.json_validity:.0%}")
    for column in ("track", "P", "R", "F1", "tp/fp/fn", "mean IoU", "onset err (s)", "similarity"):
        table.add_column(column)
    for name, score in [*corpus.tracks.items(), ("overall", corpus.overall)]:
        s = score.summary()

        def fmt(v):
            return "-" if v is None else f"{v:.3f}"

        table.add_row(
            name,
            fmt(s["precision"]),
            fmt(s["recall"]),
            fmt(s["f1"]),
            f"{s['tp']}/{s['fp']}/{s['fn']}",
            fmt(s["mean_iou"]),
            fmt(s["mean_onset_error_s"]),
            fmt(s["description_similarity"]),
        )
    Console().print(table)


def write_plots(pairs, predictions, videos: Path | None, out: Path) -> int:
    from foley_core.evalplot import plot_video
    from foley_core.video import VideoError, open_video

    for vid, (predicted, reference) in pairs.items():
        source = predictions[vid].video if vid in predictions else None
        if videos is not None:
            source = next((str(p) for p in sorted(videos.glob(f"{vid}.*"))), source)
        frames, duration = None, None
        if source:
            try:
                video = open_video(source, max_side=160)
                strip = video.uniform(8)
                frames, duration = (strip.images, strip.times), video.info.duration
            except VideoError:
                pass
        plot_video(vid, reference, predicted, out / f"{vid}.png", duration, frames)
    return len(pairs)


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of TrainConfig fields.")] = None,
    store: Annotated[str | None, typer.Option("--store", help="Dataset store to train on.")] = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir", help="Adapter folder.")] = None,
    base_model: Annotated[str | None, typer.Option("--base-model", help="Model the adapter is for.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Optimizer steps in all.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs")] = None,
    evaluate: Annotated[bool, typer.Option(help="Evaluate on the held-out videos afterwards.")] = True,
    reference: Annotated[
        str | None, typer.Option("--reference", help="Ground-truth <id>.json folder.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """LoRA-train a model to write the chain's script from one simple prompt (resumes when it can)."""
    setup_logging(verbose)

    def run() -> None:
        from training.config import TrainConfig
        from training.trainer import train as run_training

        overrides = {
            "store": store,
            "output_dir": output_dir,
            "base_model": base_model,
            "max_steps": max_steps,
            "learning_rate": learning_rate,
            "epochs": epochs,
        }
        cfg = (
            TrainConfig.from_yaml(config, **overrides)
            if config
            else TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
        )
        if not cfg.store:
            raise InputError("give --store (or store: in --config)")
        warn_if_tiny(cfg.base_model)
        quiet_transformers()
        with err.status(f"training a LoRA adapter on {cfg.store}"):
            result = run_training(cfg)
        err.print(
            f"adapter: {result.output_dir} ({result.steps} steps; loss {result.first_loss:.4f} -> "
            f"{result.last_loss:.4f}; {result.train_examples} train / {result.eval_examples} eval videos)"
        )
        if evaluate and result.eval_examples:
            from training.evaluate import default_similarity, evaluate_adapter

            with err.status("evaluating on the held-out videos"):
                evaluate_adapter(cfg, result.output_dir, reference, default_similarity())
            err.print(Path(result.output_dir, "eval.md").read_text())

    guarded(run)


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
    verbose: VerboseOpt = False,
) -> None:
    """Push the store's complete shards and card to a Hugging Face Hub dataset repo (token: HF_TOKEN)."""
    setup_logging(verbose)
    quiet_prefect(verbose)

    def run() -> None:
        from flows.publish_dataset import publish_dataset

        result = publish_dataset(
            store=store, repo_id=repo_id, dry_run=dry_run, private=not public, token_secret=token_secret
        )
        verb = "would upload" if dry_run else "uploaded"
        for line in result["files"]:
            err.print(f"{verb} {line}", highlight=False, soft_wrap=True)
        if not dry_run:
            err.print(f"commit: {result['commit']}")

    guarded(run)


if __name__ == "__main__":
    app()
