"""Shard markers: the store's table of contents, and the rules every marker must pass to be trusted.

A marker (`_shards/<name>.json`) is written last, once its Parquet files are in place; its presence
makes them part of the dataset. A marker may *supersede* older markers: it then carries their rows that
survive (rewritten into its own files, or the same files by reference), and readers ignore the markers
it names. So every change of the visible rows is one marker write, and a crash on either side of it
leaves one consistent view.

Markers are data from storage, not code: one that names a file outside the store's `data/` folder, an
absolute path or a URI is refused, by name, before anything reads that file.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, field_validator

from v2t_foley.foley_core.errors import InputError

# 1: one file per split, 4-part keys; 2: file lists, revisions, supersedes; 3: nested script/events
# columns (a format-3 marker never names a file an older format wrote: those are rewritten when carried)
STORE_FORMAT = 3

_FILE = re.compile(r"^data/[A-Za-z0-9][A-Za-z0-9_.-]*\.parquet$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SPLIT = re.compile(r"^\w+$")

Key = tuple[str, str, str]  # (id, prompt_version, model_key): one row per key in a store


class UnsafeStoreError(InputError):
    """A marker names a file outside the store's data/ folder (tampered or foreign); nothing reads it."""


class ShardMarker(BaseModel):
    """Written after a shard's files are in place; its presence makes the shard exist."""

    run_id: str  # build run that wrote the shard
    index: int  # shard number within the run
    commit: str = ""  # unique per write (format 2); part of the name, so a retried shard never collides
    files: dict[str, list[str]]  # split -> store-relative Parquet files (format 1 had one str per split)
    rows: int  # rows in all files
    split_rows: dict[str, int]  # split -> rows
    ok: int  # rows with status ok
    failed: int  # rows with status failed
    keys: list[tuple[str, str, str, str, str]]  # (id, prompt_version, model_key, status, revision)
    created_at: str  # ISO 8601, UTC
    supersedes: list[str] = []  # markers whose surviving rows this one carries; readers ignore those
    added_ok: int = 0  # ok rows this write added (not carried from superseded markers)
    added_failed: int = 0  # failed rows this write added
    dropped: int = 0  # rows offered that the store already had (same key, nothing better)
    format: int = 1  # store format of the writer

    @field_validator("files", mode="before")
    @classmethod
    def _files_as_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {split: [paths] if isinstance(paths, str) else paths for split, paths in value.items()}
        return value

    @field_validator("keys", mode="before")
    @classmethod
    def _keys_with_revision(cls, value: Any) -> Any:
        if isinstance(value, list):  # format 1 keys had no revision: "" means unknown
            return [list(k) + [""] * (5 - len(k)) for k in value]
        return value

    @property
    def name(self) -> str:
        base = f"{self.run_id}-{self.index:05d}"
        return f"{base}-{self.commit}" if self.commit else base

    def paths(self) -> list[str]:
        return [p for paths in self.files.values() for p in paths]

    def check_safe(self, where: str) -> None:
        """Refuse a marker whose files or names could reach outside the store's data/ folder."""
        for split, paths in self.files.items():
            if not _SPLIT.match(split):
                raise UnsafeStoreError(f"{where}: marker names an invalid split {split!r}; run foley verify")
            for path in paths:
                if not _FILE.match(path) or ".." in path:
                    raise UnsafeStoreError(
                        f"{where}: marker names {path!r}, outside the store's data/ folder; nothing was "
                        "read from it. Remove the marker (foley verify STORE --repair)"
                    )
        for part in (self.run_id, self.commit or "x"):
            if not _NAME.match(part):
                raise UnsafeStoreError(f"{where}: marker has an invalid name part {part!r}; run foley verify")
        for name in self.supersedes:
            if not _NAME.match(name):
                raise UnsafeStoreError(f"{where}: marker supersedes an invalid name {name!r}")


def check_split(split: str) -> None:
    if not _SPLIT.match(split):
        raise InputError(f"split {split!r} is not a valid split name (letters, digits and _ only)")


def check_run_id(run_id: str) -> None:
    if not _NAME.match(run_id):
        raise InputError(f"run id {run_id!r} is not a valid name (letters, digits, '.', '_' and '-' only)")
