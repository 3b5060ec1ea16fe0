"""`foley export`: scripts out to text-video-to-audio models and post-production tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from v2t_foley.flows.cli.common import VerboseOpt, app, err, guarded, setup_logging


@app.command("export")
def export_command(
    source: Annotated[str, typer.Argument(help="A dataset store (its ok rows), or one script JSON file.")],
    format_name: Annotated[
        str,
        typer.Option(
            "--format",
            help="hunyuan, mmaudio, thinksound, srt, vtt, spotting, otio, edl, fcp7, reaper, premiere.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder the files go to.")],
    video: Annotated[
        str | None, typer.Option("--video", help="The video of a script file (path or URI).")
    ] = None,
    per_cue: Annotated[bool, typer.Option("--per-cue", help="TV2A: one segment per cue.")] = False,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", help="TV2A: longest segment (default: the model's).")
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Store: only this split.")] = None,
    ids: Annotated[str | None, typer.Option("--ids", help="Store: only these ids, comma-separated.")] = None,
    fps: Annotated[
        float | None,
        typer.Option("--fps", help="Timecode frame rate (default: the video's, or 25 without a video)."),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Export foley scripts for a TV2A model or a post-production tool; prints a JSON summary."""
    setup_logging(verbose)

    def run() -> None:
        from v2t_foley.foley_core.errors import InputError
        from v2t_foley.foley_core.export import (
            ExportOptions,
            get_format,
            item_from_file,
            items_from_store,
            run_export,
        )

        get_format(format_name)  # an unknown format, a bad option or --out fail before anything is read
        options = ExportOptions(out=out, per_cue=per_cue, max_seconds=max_seconds, fps=fps)
        path = Path(source)
        is_file = path.is_file() or source.endswith(".json")
        if is_file:
            if split or ids:
                raise InputError("--split and --ids narrow a store, not a script file")
            items, skipped, strict = [item_from_file(path, video)], [], True
        else:
            if video:
                raise InputError("--video goes with a script file; a store's rows name their videos")
            wanted = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
            items, skipped = items_from_store(source, split=split, ids=wanted)
            strict = False
        report = run_export(items, format_name, options, skipped, strict=strict)
        for line in report.warnings:
            err.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
        for skip in report.skipped:
            err.print(f"[yellow]skipped:[/] {skip.id}: {skip.reason}", highlight=False, soft_wrap=True)
        for note in dict.fromkeys(report.notes):
            err.print(f"note: {note}", highlight=False, soft_wrap=True)
        err.print(
            f"{report.items} video(s), {report.segments} segment(s), {len(report.files)} file(s) in {out}",
            highlight=False,
        )
        print(json.dumps(report.summary()))
        if report.items == 0:  # from a file or a store: the user asked for files and got none
            if report.skipped:
                reasons = "; ".join(dict.fromkeys(s.reason for s in report.skipped))
                raise InputError(f"nothing exported: {len(report.skipped)} skipped ({reasons})")
            narrowed = " that --split/--ids select" if split or ids else ""
            raise InputError(f"nothing exported: no ok rows{narrowed} in {source}")

    guarded(run)
