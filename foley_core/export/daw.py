"""DAW and NLE marker lists.

- `reaper`: a region CSV as REAPER's Region/Marker Manager imports and exports it: `#,Name,Start,End,Length`,
  `#` = `R1`, `R2`..., times as minutes:seconds (`1:05.250`), UTF-8 without BOM.
- `premiere`: Premiere Pro's tab-separated marker list: `Marker Name, Description, In, Out, Duration,
  Marker Type` with SMPTE timecode at the video's rate (`;` drop-frame at 29.97/59.94), type `Comment`.
"""

from __future__ import annotations

import csv
import io

from v2t_foley.foley_core.export.base import (
    TRACK_LABEL,
    ExportOptions,
    ExportReport,
    item_fps,
    out_file,
    sorted_cues,
    write_text,
)
from v2t_foley.foley_core.export.source import ExportItem
from v2t_foley.foley_core.export.spotting import frame_of, timecode, timecode_rate

REAPER_COLUMNS = ["#", "Name", "Start", "End", "Length"]
PREMIERE_COLUMNS = ["Marker Name", "Description", "In", "Out", "Duration", "Marker Type"]


def minutes_seconds(seconds: float) -> str:
    millis = round(seconds * 1000)
    minutes, rest = divmod(millis, 60_000)
    return f"{minutes}:{rest // 1000:02d}.{rest % 1000:03d}"


def render_reaper(item: ExportItem) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REAPER_COLUMNS)
    for number, (track, _, cue) in enumerate(sorted_cues(item), 1):
        name = f"[{TRACK_LABEL[track]}] {' '.join(cue.description.split())}"
        writer.writerow(
            [
                f"R{number}",
                name,
                minutes_seconds(cue.start),
                minutes_seconds(cue.end),
                minutes_seconds(cue.end - cue.start),
            ]
        )
    return buffer.getvalue()


def render_premiere(item: ExportItem, fps: float) -> str:
    rate = timecode_rate(fps)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(PREMIERE_COLUMNS)
    for track, _, cue in sorted_cues(item):
        first, last = frame_of(cue.start, rate), frame_of(cue.end, rate)
        text = " ".join(cue.description.split())
        writer.writerow(
            [
                f"[{TRACK_LABEL[track]}] {text}",
                text,
                timecode(first, rate),
                timecode(last, rate),
                timecode(last - first, rate),
                "Comment",
            ]
        )
    return buffer.getvalue()


def export_reaper(items: list[ExportItem], options: ExportOptions, report: ExportReport) -> None:
    for item in items:
        write_text(out_file(options, item.id, ".regions.csv"), render_reaper(item), report, options)
        report.items += 1


def export_premiere(items: list[ExportItem], options: ExportOptions, report: ExportReport) -> None:
    for item in items:
        fps = item_fps(item, options, report)
        write_text(out_file(options, item.id, ".markers.txt"), render_premiere(item, fps), report, options)
        report.items += 1
