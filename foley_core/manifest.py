r"""Video manifests: CSV, Parquet or JSONL, local or any fsspec URI.

A manifest needs a `video` column (path or URI). Optional: `id` (default: derived from the URI),
`split` (default: train); every other column is carried into the row's `metadata`. The whole manifest
fails for what makes it ambiguous (unreadable, no `video` column, duplicate ids); a bad row fails alone
and becomes a `failed` row.

Split names must match `\w+` (letters, digits and `_`, unicode letters included: the Hugging Face Hub's
rule), because a split names shard folders and Hub files; a blank split is the default. A row with any
other split (`../../x`, `a/b`, `train-2`) fails alone: its `problem` names the value and the rule, and
its split is set to the default `train`, so it becomes a failed row there while the rest of the
manifest runs. Ids are not restricted; whatever names a file after one goes through
`foley_core.safenames.safe_name`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pandas as pd

from v2t_foley.foley_core.errors import ManifestError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
RESERVED = ("video", "id", "split")
DEFAULT_SPLIT = "train"
SPLIT_NAME = re.compile(r"\w+")  # the Hub's rule for split names; matched whole (fullmatch)


@dataclass(frozen=True)
class ManifestEntry:
    """One video to process."""

    id: str  # unique within the manifest
    video: str  # path or URI
    split: str = DEFAULT_SPLIT  # dataset split, always a `\w+` name
    metadata: dict[str, Any] = field(default_factory=dict)  # the manifest's extra columns
    problem: str | None = None  # why this row cannot run (it becomes a failed row), None when fine

    def metadata_json(self) -> str:
        return json.dumps(self.metadata, ensure_ascii=False, sort_keys=True, default=str)


def derive_id(video: str) -> str:
    """A stable id from the URI, for manifests without an id column."""
    return hashlib.sha1(video.encode()).hexdigest()[:16]


def _read_frame(uri: str) -> pd.DataFrame:
    suffix = "." + uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
    kind = FORMATS.get(suffix)
    if kind is None:
        raise ManifestError(
            f"{uri}: unknown manifest format {suffix or '(no suffix)'}; use .csv, .parquet or .jsonl"
        )
    try:
        with fsspec.open(uri, "rb") as handle:
            if kind == "csv":
                return pd.read_csv(handle, dtype=str, keep_default_na=False)
            if kind == "parquet":
                return pd.read_parquet(handle)
            return pd.read_json(handle, lines=True, dtype=False)
    except FileNotFoundError:
        raise ManifestError(f"{uri}: manifest not found") from None
    except Exception as err:  # pandas raises a zoo of parser errors
        raise ManifestError(f"{uri}: cannot read the manifest as {kind}: {err}") from None


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def read_manifest(uri: str) -> list[ManifestEntry]:
    """Entries in manifest order. Raises ManifestError when the manifest as a whole is unusable."""
    frame = _read_frame(uri)
    if "video" not in frame.columns:
        raise ManifestError(
            f"{uri}: no 'video' column (columns: {', '.join(map(str, frame.columns)) or 'none'})"
        )
    extras = [c for c in frame.columns if c not in RESERVED]
    entries: list[ManifestEntry] = []
    for number, record in enumerate(frame.to_dict(orient="records"), start=1):
        video = _clean(record.get("video"))
        problem = None
        if not isinstance(video, str) or not video.strip():
            problem = f"manifest row {number}: empty or non-text 'video' value ({video!r})"
            video = "" if video is None else str(video)
        video = video.strip()
        given_id = _clean(record.get("id"))
        entry_id = (
            str(given_id).strip() if given_id not in (None, "") else derive_id(video or f"row-{number}")
        )
        split = str(_clean(record.get("split")) or "").strip() or DEFAULT_SPLIT
        if not SPLIT_NAME.fullmatch(split):
            split_problem = (
                f"manifest row {number}: split {split!r} is not a valid split name (letters, digits and"
                f" '_' only, the Hub's \\w+ rule); the row is recorded as failed in {DEFAULT_SPLIT!r}"
            )
            problem = f"{problem}; {split_problem}" if problem else split_problem
            split = DEFAULT_SPLIT
        metadata = {c: _clean(record[c]) for c in extras}
        entries.append(ManifestEntry(entry_id, video, split, metadata, problem))
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.id] = counts.get(entry.id, 0) + 1
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        shown = ", ".join(duplicates[:5]) + (" ..." if len(duplicates) > 5 else "")
        raise ManifestError(f"{uri}: duplicate ids ({len(duplicates)}): {shown}; ids must be unique")
    return entries


def write_manifest(entries: list[dict[str, Any]], uri: str) -> str:
    """Write dicts with at least `video` as a manifest; the format follows the suffix."""
    frame = pd.DataFrame(entries)
    suffix = "." + uri.rsplit(".", 1)[-1].lower()
    with fsspec.open(uri, "wb") as handle:
        if FORMATS.get(suffix) == "parquet":
            frame.to_parquet(handle, index=False)
        elif FORMATS.get(suffix) == "csv":
            handle.write(frame.to_csv(index=False).encode())
        else:
            handle.write(frame.to_json(orient="records", lines=True).encode())
    return uri


def write_entries(entries: list[ManifestEntry], uri: str) -> str:
    """Entries as JSON lines (a shard's own small manifest, written by the build into its store)."""
    from dataclasses import asdict

    lines = "".join(json.dumps(asdict(e), ensure_ascii=False, default=str) + "\n" for e in entries)
    with fsspec.open(uri, "w", encoding="utf-8") as handle:
        handle.write(lines)
    return uri


def read_entries(uri: str) -> list[ManifestEntry]:
    """What `write_entries` wrote."""
    with fsspec.open(uri, "r", encoding="utf-8") as handle:
        return [ManifestEntry(**json.loads(line)) for line in handle if line.strip()]
