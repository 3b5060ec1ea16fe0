"""SRT and WebVTT: one caption per cue, its track in the text (`[FOLEY] A door creaks open.`)."""

from __future__ import annotations

from v2t_foley.foley_core.export.base import (
    TRACK_LABEL,
    ExportOptions,
    ExportReport,
    out_file,
    sorted_cues,
    write_text,
)
from v2t_foley.foley_core.export.source import ExportItem

MIN_CAPTION_S = 0.5  # a zero-length cue (an instant) is shown this long, within the video


def caption_times(item: ExportItem, start: float, end: float) -> tuple[float, float]:
    if end - start >= 1e-3:
        return start, end
    shown = start + MIN_CAPTION_S
    return start, min(shown, item.duration) if item.duration and item.duration > start else shown


def _clock(seconds: float, sep: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def _text(track: str, description: str) -> str:
    return f"[{TRACK_LABEL[track]}] {' '.join(description.split())}"


def render_srt(item: ExportItem) -> str:
    blocks = []
    for number, (track, _, cue) in enumerate(sorted_cues(item), 1):
        start, end = caption_times(item, cue.start, cue.end)
        blocks.append(
            f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{_text(track, cue.description)}\n"
        )
    return "\n".join(blocks)


def render_vtt(item: ExportItem) -> str:
    blocks = ["WEBVTT\n"]
    for number, (track, _, cue) in enumerate(sorted_cues(item), 1):
        start, end = caption_times(item, cue.start, cue.end)
        blocks.append(
            f"{number}\n{_clock(start, '.')} --> {_clock(end, '.')}\n{_text(track, cue.description)}\n"
        )
    return "\n".join(blocks)


def export_srt(items: list[ExportItem], options: ExportOptions, report: ExportReport) -> None:
    for item in items:
        write_text(out_file(options, item.id, ".srt"), render_srt(item), report, options)
        report.items += 1


def export_vtt(items: list[ExportItem], options: ExportOptions, report: ExportReport) -> None:
    for item in items:
        write_text(out_file(options, item.id, ".vtt"), render_vtt(item), report, options)
        report.items += 1
