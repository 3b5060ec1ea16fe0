"""Spotting sheets: one row per cue with SMPTE timecode at the video's own frame rate.

Timecode is HH:MM:SS:FF; 29.97 and 59.94 fps use drop-frame (HH:MM:SS;FF): frame labels 0 and 1
(0-3 at 59.94) are skipped at the start of every minute except each tenth. Other NTSC rates
(23.976) count non-drop at their nominal rate, as editors do.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from fractions import Fraction

from v2t_foley.foley_core.export.base import (
    ExportOptions,
    ExportReport,
    item_fps,
    out_file,
    sorted_cues,
    write_text,
)
from v2t_foley.foley_core.export.source import ExportItem

COLUMNS = ["Cue", "Track", "TC In", "TC Out", "Duration", "Description", "Event"]


@dataclass(frozen=True)
class Rate:
    exact: Fraction  # frames per second
    nominal: int  # frames counted per timecode second
    drop: int  # frame labels dropped per minute (0: non-drop)

    @property
    def label(self) -> str:
        return f"{float(self.exact):.3f}".rstrip("0").rstrip(".") + (" DF" if self.drop else "")


def timecode_rate(fps: float) -> Rate:
    """The timecode rate of a video's frame rate: NTSC rates recognised, drop-frame for 29.97/59.94."""
    for nominal in (24, 30, 48, 60, 120):
        ntsc = Fraction(nominal * 1000, 1001)
        if abs(fps - float(ntsc)) < 0.005:
            drop = {30: 2, 60: 4}.get(nominal, 0)
            return Rate(ntsc, nominal, drop)
    exact = Fraction(fps).limit_denominator(1001)
    return Rate(exact, max(1, round(fps)), 0)


def frame_of(seconds: float, rate: Rate) -> int:
    return round(seconds * rate.exact)


def timecode(frame: int, rate: Rate) -> str:
    """SMPTE label of frame `frame` (0 = 00:00:00:00)."""
    n = frame
    if rate.drop:
        per_10min = round(rate.exact * 600)
        per_min = rate.nominal * 60 - rate.drop
        tens, rest = divmod(n, per_10min)
        n += rate.drop * 9 * tens
        if rest > rate.drop:
            n += rate.drop * ((rest - rate.drop) // per_min)
    frames = n % rate.nominal
    seconds = n // rate.nominal
    sep = ";" if rate.drop else ":"
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}{sep}{frames:02d}"


def render_spotting(item: ExportItem, fps: float) -> str:
    rate = timecode_rate(fps)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for number, (track, _, cue) in enumerate(sorted_cues(item), 1):
        first, last = frame_of(cue.start, rate), frame_of(cue.end, rate)
        writer.writerow(
            [
                number,
                track,
                timecode(first, rate),
                timecode(last, rate),
                timecode(last - first, rate),
                " ".join(cue.description.split()),
                "" if cue.event is None else cue.event,
            ]
        )
    return buffer.getvalue()


def export_spotting(items: list[ExportItem], options: ExportOptions, report: ExportReport) -> None:
    for item in items:
        fps = item_fps(item, options, report)
        write_text(out_file(options, item.id, ".spotting.csv"), render_spotting(item, fps), report, options)
        report.notes.append(f"{item.id}: timecode at {timecode_rate(fps).label} fps")
        report.items += 1
