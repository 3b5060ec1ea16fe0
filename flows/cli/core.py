"""`foley script` and `foley smoke`: the chain over one video."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    quiet_transformers,
    setup_logging,
    warn_if_tiny,
    write_json,
)
from v2t_foley.foley_core.backends.base import DEFAULT_MODEL
from v2t_foley.foley_core.errors import InputError


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
    concurrency: int = 16,
    chunk_seconds: float | None = 30.0,
    partial_ok: bool = False,
    decoder: str = "generate",
):
    """Open the video (failing fast), load the model, run the chain with a progress display."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from v2t_foley.foley_core.backends import BackendSpec, load_backend
    from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
    from v2t_foley.foley_core.chain import ChainConfig, run_chain
    from v2t_foley.foley_core.prompts import load_prompts
    from v2t_foley.foley_core.video import open_video

    opened = open_video(video)  # a bad video fails here, before any model is loaded
    served = backend == "openai" and adapter  # the server applies the adapter (vLLM --lora-modules)
    if served and not model:
        raise InputError(
            "with --backend openai, --model names the served adapter (vllm serve BASE --enable-lora "
            "--lora-modules NAME=ADAPTER); --adapter only selects the one-pass prompt"
        )
    if adapter and not model:  # the adapter's own base model, as peft's AutoPeftModel reads it
        from v2t_foley.training.basemodel import adapter_base_model

        model = adapter_base_model(adapter)
    config = ChainConfig(timing=timing, chunk_seconds=chunk_seconds or None, partial_ok=partial_ok)
    prompts = load_prompts(prompts_dir)
    spec = BackendSpec(
        backend=backend,
        model=model or DEFAULT_MODEL,
        adapter=None if served else adapter,
        base_url=base_url,
        device=device,
        concurrency=concurrency,
        decoder=decoder,
    )
    quiet_transformers()
    warn_if_tiny(model)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"loading {model or 'the default model'}", total=None)
        llm = load_backend(spec)
        if spec.backend == "transformers":  # as a worker's: the events' questions side by side, so the
            llm = BatchingVideoLLM(llm, max_batch=spec.batch_size)  # chain waits for its longest answer
        progress.update(
            task, description=f"{'one pass (adapter)' if adapter else 'chain'}: {Path(video).name}"
        )
        try:
            if adapter:  # an adapter was trained to answer the simple prompt in one pass
                from v2t_foley.foley_core.chain.simple import load_simple_prompt, run_simple

                return run_simple(opened, llm, load_simple_prompt(prompts_dir), config)
            return run_chain(
                opened,
                llm,
                prompts,
                config,
                on_step=lambda step: progress.update(task, description=f"{step}: {Path(video).name}"),
            )
        finally:
            if isinstance(llm, BatchingVideoLLM):
                llm.stop()  # its thread; the model goes with the process


@app.command()
def script(
    video: Annotated[str, typer.Argument(help="Video file or fsspec URI (s3://, gs://, https://).")],
    model: ModelOpt = None,
    backend: BackendOpt = "transformers",
    base_url: BaseUrlOpt = None,
    concurrency: ConcurrencyOpt = 16,
    decoder: DecoderOpt = "generate",
    adapter: AdapterOpt = None,
    prompts: PromptsOpt = None,
    device: DeviceOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the script here (default: stdout).")
    ] = None,
    trace: Annotated[Path | None, typer.Option("--trace", help="Write the full chain trace here.")] = None,
    timing: TimingOpt = "measured",
    chunk_seconds: ChunkSecondsOpt = 30.0,
    partial_ok: PartialOkOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write the multi-track foley script of one video (JSON, seed format plus start/end/event)."""
    setup_logging(verbose)

    def run() -> None:
        from v2t_foley.foley_core.output_paths import check_out_file

        check_out_file(out, "--out")
        check_out_file(trace, "--trace")
        result = script_video(
            video,
            model=model,
            backend=backend,
            base_url=base_url,
            adapter=adapter,
            prompts_dir=prompts,
            device=device,
            timing=timing,
            concurrency=concurrency,
            chunk_seconds=chunk_seconds,
            partial_ok=partial_ok,
            decoder=decoder,
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
        from v2t_foley.foley_core.backends.tiny import TINY_VIDEO_LLAVA, tiny_model_path
        from v2t_foley.foley_core.output_paths import check_out_folder
        from v2t_foley.foley_core.synthetic import write_scene_video

        check_out_folder(out_dir, "--out-dir")
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
