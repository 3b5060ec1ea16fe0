"""What every exporter gets and gives back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.export.source import ExportItem, Skipped
from v2t_foley.foley_core.output_paths import check_out_folder
from v2t_foley.foley_core.safenames import safe_join, safe_name
from v2t_foley.foley_core.schema.script import Cue

TRACK_LABEL = {"foley": "FOLEY", "fx": "FX", "ambience": "AMBIENCE", "dialogue": "DIALOGUE"}
DEFAULT_FPS = 25.0


@dataclass
class ExportOptions:
    out: Path
    per_cue: bool = False  # TV2A: one segment per cue
    max_seconds: float | None = None  # TV2A: longest segment (default: the model's)
    fps: float | None = None  # timecode formats: the frame rate (default: the video's, else DEFAULT_FPS)

    def __post_init__(self) -> None:
        if self.max_seconds is not None and not self.max_seconds >= 1:
            raise InputError(f"--max-seconds must be at least 1, got {self.max_seconds}")
        if self.fps is not None and not 0 < self.fps <= 1000:
            raise InputError(f"--fps must be a frame rate above 0 (24, 25, 29.97...), got {self.fps}")
        check_out_folder(self.out)


@dataclass
class ExportReport:
    format: str
    files: list[str] = field(default_factory=list)  # written, relative to the output folder
    items: int = 0  # videos exported
    segments: int = 0  # TV2A segments written
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. which tokenizer counted

    def summary(self) -> dict:
        return {
            "format": self.format,
            "items": self.items,
            "segments": self.segments,
            "files": len(self.files),
            "skipped": [{"id": s.id, "reason": s.reason} for s in self.skipped],
            "warnings": self.warnings,
            "notes": self.notes,
        }


def out_file(options: ExportOptions, item_id: str, suffix: str) -> Path:
    """`<out>/<safe_name(id)><suffix>`: ids are untrusted."""
    return Path(safe_join(str(options.out), safe_name(item_id) + suffix))


def sorted_cues(item: ExportItem) -> list[tuple[str, int, Cue]]:
    """Every cue with its track and index in the track, by start time (then track order)."""
    order = {name: k for k, name in enumerate(TRACK_LABEL)}
    cues = [(name, k, cue) for name in TRACK_LABEL for k, cue in enumerate(item.script.track(name))]
    return sorted(cues, key=lambda c: (c[2].start, order[c[0]], c[2].end))


def item_fps(item: ExportItem, options: ExportOptions, report: ExportReport) -> float:
    if options.fps:
        return options.fps
    if item.fps:
        return item.fps
    report.warnings.append(f"{item.id}: no video and no --fps: timecode at {DEFAULT_FPS:g} fps")
    return DEFAULT_FPS


def write_text(path: Path, text: str, report: ExportReport, options: ExportOptions) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    report.files.append(str(path.relative_to(options.out)))


def write_json(path: Path, data: object, report: ExportReport, options: ExportOptions) -> None:
    write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n", report, options)
