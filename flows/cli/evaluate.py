"""`foley eval`: score predicted scripts against references, with plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from v2t_foley.flows.cli.common import (
    VerboseOpt,
    app,
    err,
    guarded,
    quiet_transformers,
    setup_logging,
)


@app.command("eval")
def eval_command(
    pred: Annotated[str, typer.Option("--pred", help="Folder of <id>.json scripts, or a dataset store.")],
    ref: Annotated[
        str | None,
        typer.Option(
            "--ref",
            help="Folder of <id>.json reference scripts that YOU provide (hand-written or corrected); "
            "nothing is generated for you. Start one with --init-ref.",
        ),
    ] = None,
    init_ref: Annotated[
        Path | None,
        typer.Option(
            "--init-ref",
            help="Write editable reference templates (<id>.json, the predictions' scripts) into this "
            "folder, then stop; existing files are kept. Correct them, then pass the folder as --ref.",
        ),
    ] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Onset collar, seconds (sed_eval).")] = 0.5,
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
    """Score predicted scripts against references: event F1 per track, IoU, similarity, validity.

    References come from you, never from the tool: a folder of <id>.json foley scripts (the four tracks
    of {timestamp, start, end, description} cues) for the videos you checked by hand. `--init-ref DIR`
    writes one template per predicted video to start from.
    """
    setup_logging(verbose)

    def run() -> None:
        from v2t_foley.foley_core.evaluation import init_references, load_predictions, load_references
        from v2t_foley.foley_core.metrics import EmbeddingSimilarity, score_corpus
        from v2t_foley.foley_core.output_paths import check_out_folder

        if init_ref is not None:
            written = init_references(pred, init_ref)
            err.print(f"{written} reference template(s) in {init_ref}; edit them, then --ref {init_ref}")
            return
        check_out_folder(out)
        if ref is None:
            from v2t_foley.foley_core.errors import InputError

            raise InputError("give --ref DIR (your reference scripts), or --init-ref DIR to start them")
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
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    console.print(table)


def write_plots(pairs, predictions, videos: Path | None, out: Path) -> int:
    from v2t_foley.foley_core.evalplot import plot_path, plot_video
    from v2t_foley.foley_core.evaluation import find_video
    from v2t_foley.foley_core.video import VideoError, open_video

    for vid, (predicted, reference) in pairs.items():
        source = predictions[vid].video if vid in predictions else None
        if videos is not None:
            source = find_video(videos, vid) or source
        frames, duration = None, None
        if source:
            try:
                video = open_video(source, max_side=160)
                strip = video.uniform(8)
                frames, duration = (strip.images, strip.times), video.info.duration
            except VideoError:
                pass
        plot_video(vid, reference, predicted, plot_path(out, vid), duration, frames)
    return len(pairs)
