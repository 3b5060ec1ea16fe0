"""Hand-off: foley scripts out to text-video-to-audio models and to post-production tools.

`FORMATS` maps each format name to its exporter; `run_export` prepares the items (video facts, cues
clipped to the video) and runs one. Sources: `items_from_store` (ok rows) or `item_from_file`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.export.base import ExportOptions, ExportReport
from v2t_foley.foley_core.export.source import (
    ExportItem,
    Skipped,
    clip_to_video,
    item_from_file,
    items_from_store,
    load_script,
    with_video_info,
)

__all__ = [
    "FORMATS",
    "ExportItem",
    "ExportOptions",
    "ExportReport",
    "Format",
    "get_format",
    "item_from_file",
    "items_from_store",
    "load_script",
    "run_export",
]


@dataclass(frozen=True)
class Format:
    name: str
    help: str
    run: Callable[[list[ExportItem], ExportOptions, ExportReport], None]
    needs_video: bool = False  # cuts the video itself (TV2A)


def _tv2a(model: str):
    def run(items, options, report):
        from v2t_foley.foley_core.export.tv2a import export_tv2a

        export_tv2a(model, items, options, report)

    return run


def _lazy(module: str, name: str, *args):
    def run(items, options, report):
        import importlib

        # relative to this package, whatever name it was imported under (never a hard-coded root)
        function = getattr(importlib.import_module(f".{module}", __name__), name)
        function(*args, items, options, report)

    return run


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "hunyuan",
            "HunyuanVideo-Foley: hunyuan.csv (index,video,prompt) + 1-15 s segments",
            _tv2a("hunyuan"),
            True,
        ),
        Format(
            "mmaudio",
            "MMAudio: mmaudio.tsv/json (name -> caption) + segments <= --max-seconds",
            _tv2a("mmaudio"),
            True,
        ),
        Format(
            "thinksound",
            "ThinkSound: thinksound.csv (id,caption,caption_cot) + equal segments",
            _tv2a("thinksound"),
            True,
        ),
        Format("srt", "SubRip captions, one per cue", _lazy("subtitles", "export_srt")),
        Format("vtt", "WebVTT captions, one per cue", _lazy("subtitles", "export_vtt")),
        Format("spotting", "spotting sheet CSV with SMPTE timecode", _lazy("spotting", "export_spotting")),
        Format("otio", "OpenTimelineIO timeline", _lazy("timeline", "export_otio")),
        Format("edl", "CMX 3600 EDL through OTIO's adapter", _lazy("timeline", "export_adapter", "edl")),
        Format(
            "fcp7", "Final Cut Pro 7 XML through OTIO's adapter", _lazy("timeline", "export_adapter", "fcp7")
        ),
        Format("reaper", "REAPER region CSV", _lazy("daw", "export_reaper")),
        Format("premiere", "Premiere Pro marker list (tab-separated)", _lazy("daw", "export_premiere")),
    )
}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise InputError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def run_export(
    items: list[ExportItem],
    format_name: str,
    options: ExportOptions,
    skipped: list[Skipped] | None = None,
    *,
    strict: bool = False,
) -> ExportReport:
    """Export `items`; a video that cannot be read skips its item (raises when `strict`, one file)."""
    fmt = get_format(format_name)
    report = ExportReport(fmt.name, skipped=list(skipped or []))
    made = [p for p in (options.out, *options.out.parents) if not p.exists()]  # innermost first
    options.out.mkdir(parents=True, exist_ok=True)
    try:
        ready: list[ExportItem] = []
        for item in items:
            try:
                item = with_video_info(item)
            except InputError as error:
                if strict:
                    raise
                report.skipped.append(Skipped(item.id, str(error)))
                continue
            item, warnings = clip_to_video(item)
            report.warnings += warnings
            ready.append(item)
        fmt.run(ready, options, report)
    finally:
        for folder in made:  # an export that wrote nothing leaves nothing
            if any(folder.iterdir()):
                break
            folder.rmdir()
    return report
