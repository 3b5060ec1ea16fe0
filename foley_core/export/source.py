"""What an export reads: scripts (from a store's ok rows or one JSON file), their videos and events.

`load_script` is the one place that turns a stored script into a `FoleyScript`: today the store keeps it
as a JSON string, tomorrow as a nested struct (a dict); both, and a `FoleyScript`, are accepted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.safenames import redact_uri
from v2t_foley.foley_core.schema.script import TRACKS, Cue, FoleyScript


class ScriptFormatError(InputError):
    """A stored or given script is not a foley script."""


def load_script(value: str | dict | FoleyScript) -> FoleyScript:
    """A `FoleyScript` from a JSON string, a dict (a nested struct column) or a `FoleyScript`."""
    if isinstance(value, FoleyScript):
        return value
    if isinstance(value, (str, bytes)):
        if not str(value).strip():
            raise ScriptFormatError("the script is empty")
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ScriptFormatError(f"the script is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ScriptFormatError(f"a script is a JSON object of four tracks, not {type(value).__name__}")
    # a struct column may hold None for an empty track, and carry extra null fields per cue
    tracks = {
        name: [{k: v for k, v in dict(cue).items() if v is not None or k == "event"} for cue in value[name]]
        for name in TRACKS
        if value.get(name) is not None
    }
    extra = set(value) - set(TRACKS)
    if extra:
        raise ScriptFormatError(f"unknown script fields: {', '.join(sorted(extra))}")
    try:
        return FoleyScript.model_validate(tracks)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        raise ScriptFormatError(f"not a valid foley script: {problems}") from None


def _json_value(value: Any, default: Any) -> Any:
    if value is None or value == "":
        return default
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return default
    return value


@dataclass(frozen=True)
class ExportItem:
    """One video's script and what the exporters need around it."""

    id: str  # the row's id (untrusted: file names go through safe_name)
    video: str | None  # the video's path or URI as the row or the user gave it (may carry credentials)
    script: FoleyScript
    duration: float | None = None  # seconds; None when unknown (no video and no row)
    fps: float | None = None  # frames per second of the video stream
    events: list[dict] = field(default_factory=list)  # the chain's events, each with its `reasoning`
    cuts: list[float] = field(default_factory=list)  # measured shot boundaries (seconds)
    split: str = "train"

    @property
    def shown_video(self) -> str:
        """The video URI fit for an output file: credentials and query values redacted."""
        return redact_uri(self.video) if self.video else ""


@dataclass
class Skipped:
    id: str
    reason: str


def items_from_store(
    uri: str, *, split: str | None = None, ids: list[str] | None = None
) -> tuple[list[ExportItem], list[Skipped]]:
    """The ok rows of a store (narrowed by split and ids) as items; failed or unreadable rows skipped."""
    from v2t_foley.foley_core.store import DatasetStore

    store = DatasetStore(uri)
    try:
        rows = store.read_rows()
    except FileNotFoundError:
        rows = []
    if not rows:
        raise InputError(f"{redact_uri(uri)} holds no rows (not a store, or an empty one)")
    wanted = set(ids) if ids else None
    items: list[ExportItem] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for row in sorted(rows, key=lambda r: (r["id"], r.get("model_id", ""), r.get("prompt_version", ""))):
        if split and row.get("split") != split:
            continue
        if wanted is not None and row["id"] not in wanted:
            continue
        seen.add(row["id"])
        if row.get("status") != "ok":
            reason = row.get("error") or row.get("error_kind") or "failed row"
            skipped.append(Skipped(row["id"], f"failed row: {reason}"))
            continue
        try:
            script = load_script(row.get("script"))
        except InputError as error:
            skipped.append(Skipped(row["id"], str(error)))
            continue
        trace = _json_value(row.get("trace"), {}) or {}
        items.append(
            ExportItem(
                id=row["id"],
                video=row.get("video") or None,
                script=script,
                duration=float(row["duration"]) if row.get("duration") else None,
                fps=float(row["fps"]) if row.get("fps") else None,
                events=list(_json_value(row.get("events"), []) or []),
                cuts=_cuts(trace),
                split=row.get("split") or "train",
            )
        )
    for missing in sorted((wanted or set()) - seen):
        skipped.append(Skipped(missing, "no such id in the store"))
    return items, skipped


def _cuts(trace: dict) -> list[float]:
    proposals = trace.get("proposals") if isinstance(trace, dict) else None
    if not isinstance(proposals, dict):
        return []
    return sorted(
        float(c["start"]) for c in proposals.get("cuts") or [] if isinstance(c, dict) and "start" in c
    )


def item_from_file(path: str | Path, video: str | None = None) -> ExportItem:
    """One script JSON file (and, optionally, its video) as an item; its id is the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such script file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read it ({error})") from None
    try:
        script = load_script(text)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    stem = path.name.removesuffix(".json").removesuffix(".foley")
    return ExportItem(id=stem or "script", video=video, script=script)


def with_video_info(item: ExportItem) -> ExportItem:
    """Fill duration and fps from the video itself when the item has a local video and lacks them."""
    if item.video is None or (item.duration and item.fps):
        return item
    from v2t_foley.foley_core.video.probe import probe
    from v2t_foley.foley_core.video.source import fetch

    local = fetch(item.video)
    info, _ = probe(local.path, uri=redact_uri(item.video))
    return replace(item, duration=item.duration or info.duration, fps=item.fps or info.fps)


def clip_to_video(item: ExportItem) -> tuple[ExportItem, list[str]]:
    """Cues clipped to the video's duration: a cue starting at or after the end is dropped, one running
    past it is cut. Returns the item and one warning line per changed cue."""
    if item.duration is None or not math.isfinite(item.duration):
        return item, []
    end = item.duration
    warnings: list[str] = []
    tracks: dict[str, list[Cue]] = {}
    for name in TRACKS:
        kept = []
        for k, cue in enumerate(item.script.track(name)):
            if cue.start >= end:
                warnings.append(
                    f"{item.id}: {name}[{k}] starts at {cue.start} s, after the video ({end:.3f} s): dropped"
                )
                continue
            if cue.end > end + 1e-3:
                warnings.append(
                    f"{item.id}: {name}[{k}] ends at {cue.end} s, after the video ({end:.3f} s): clipped"
                )
                cue = Cue.at(cue.start, min(cue.end, end), cue.description, cue.event)
            kept.append(cue)
        tracks[name] = kept
    if not warnings:
        return item, []
    return replace(item, script=FoleyScript(**tracks)), warnings
