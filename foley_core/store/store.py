"""A dataset store at a local directory or any fsspec URI (s3://bucket/prefix).

Layout:
    README.md                       dataset card (YAML header lists exactly the complete shards)
    data/<split>-<run>-<n>.parquet  shards, written under _tmp/ first and moved into place
    _shards/<run>-<n>.json          stats marker, written last: a shard without one does not exist
    _cache/                         Prefect task results (the chain's cached steps), by default

A run killed at any moment leaves at most files without a marker; nothing reads those (the card and
the skip logic go by markers), and the next run redoes their videos. S3 credentials and endpoint come
from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) or `storage_options`.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import datasets
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from foley_core.schema.rows import FEATURES, DatasetRow

log = logging.getLogger(__name__)


class ShardMarker(BaseModel):
    """Written after a shard's files are in place; its presence makes the shard exist."""

    run_id: str  # build run that wrote the shard
    index: int  # shard number within the run
    files: dict[str, str]  # split -> path of the Parquet file, relative to the store root
    rows: int  # rows in all files
    split_rows: dict[str, int]  # split -> rows
    ok: int  # rows with status ok
    failed: int  # rows with status failed
    keys: list[tuple[str, str, str, str]]  # (id, prompt_version, model_key, status) of every row
    created_at: str  # ISO 8601, UTC

    @property
    def name(self) -> str:
        return f"{self.run_id}-{self.index:05d}"


class DatasetStore:
    """Reads and writes one store. Cheap to construct; holds no open files."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.storage_options = storage_options or {}
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **self.storage_options)
        self.root = self.root.rstrip("/")

    def path(self, relative: str) -> str:
        """Filesystem path of a store-relative path."""
        return f"{self.root}/{relative}"

    def url(self, relative: str) -> str:
        """Full URI of a store-relative path (for data_files)."""
        return f"{self.uri}/{relative}"

    @property
    def cache_uri(self) -> str:
        """Default home of the Prefect results of the chain's cached steps."""
        return self.url("_cache")

    # reading -----------------------------------------------------------------------------------

    def markers(self) -> list[ShardMarker]:
        """Every complete shard, oldest first."""
        pattern = self.path("_shards/*.json")
        found = []
        for path in sorted(self.fs.glob(pattern)):
            try:
                found.append(ShardMarker.model_validate_json(self.fs.cat_file(path)))
            except Exception as err:  # a marker we cannot read marks nothing complete
                log.warning("ignoring unreadable shard marker %s: %s", path, err)
        return sorted(found, key=lambda m: (m.created_at, m.name))

    def done_keys(self, *, include_failed: bool = True) -> set[tuple[str, str, str]]:
        """(id, prompt_version, model_key) of every row already in complete shards."""
        return {
            (row_id, version, model)
            for marker in self.markers()
            for row_id, version, model, status in marker.keys
            if include_failed or status == "ok"
        }

    def data_files(self, markers: list[ShardMarker] | None = None) -> dict[str, list[str]]:
        """split -> store-relative paths of the complete shards' files (of `markers`, if already read)."""
        files: dict[str, list[str]] = {}
        for marker in self.markers() if markers is None else markers:
            for split, relative in marker.files.items():
                files.setdefault(split, []).append(relative)
        return files

    def data_urls(self) -> dict[str, list[str]]:
        """split -> full URIs, for `datasets.load_dataset("parquet", data_files=...)`."""
        return {split: [self.url(p) for p in paths] for split, paths in self.data_files().items()}

    def load(self) -> datasets.DatasetDict:
        """Every complete shard as a DatasetDict (one split per manifest split)."""
        return datasets.load_dataset(
            "parquet", data_files=self.data_urls(), features=FEATURES, storage_options=self.storage_options
        )

    # writing -----------------------------------------------------------------------------------

    def write_shard(self, rows: list[DatasetRow], run_id: str, index: int) -> ShardMarker:
        """Write `rows` as one shard (a file per split), then its marker. Idempotent per (run, index)."""
        if not rows:
            raise ValueError("a shard needs at least one row")
        by_split: dict[str, list[DatasetRow]] = {}
        for row in rows:
            by_split.setdefault(row.split, []).append(row)
        files: dict[str, str] = {}
        self.fs.makedirs(self.path("_tmp"), exist_ok=True)
        self.fs.makedirs(self.path("data"), exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            for split, split_rows in sorted(by_split.items()):
                relative = f"data/{split}-{run_id}-{index:05d}.parquet"
                local = Path(scratch) / f"{split}.parquet"
                table = pa.Table.from_pylist(
                    [r.model_dump() for r in split_rows], schema=FEATURES.arrow_schema
                )
                pq.write_table(table, str(local))
                staging = self.path(f"_tmp/{uuid.uuid4().hex}.parquet")
                self.fs.put_file(str(local), staging)
                self.fs.mv(staging, self.path(relative))
                files[split] = relative
        marker = ShardMarker(
            run_id=run_id,
            index=index,
            files=files,
            rows=len(rows),
            split_rows={split: len(split_rows) for split, split_rows in by_split.items()},
            ok=sum(r.status == "ok" for r in rows),
            failed=sum(r.status == "failed" for r in rows),
            keys=[(*r.done_key(), r.status) for r in rows],
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._write_text(f"_shards/{marker.name}.json", marker.model_dump_json(indent=1))
        return marker

    def write_card(self, text: str) -> None:
        self._write_text("README.md", text)

    def _write_text(self, relative: str, text: str) -> None:
        """Write via a staging name and a move, so readers never see half a file."""
        target = self.path(relative)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        staging = self.path(f"_tmp/{uuid.uuid4().hex}.txt")
        self.fs.makedirs(self.path("_tmp"), exist_ok=True)
        with self.fs.open(staging, "w") as handle:
            handle.write(text)
        self.fs.mv(staging, target)

    def read_rows(self) -> list[dict[str, Any]]:
        """All rows of complete shards as dicts (small stores; use `load` for big ones)."""
        rows: list[dict[str, Any]] = []
        for marker in self.markers():
            for relative in marker.files.values():
                with self.fs.open(self.path(relative), "rb") as handle:
                    rows.extend(pq.read_table(handle).to_pylist())
        return rows


def stats(markers: list[ShardMarker]) -> dict[str, Any]:
    """Counts for the card and summaries."""
    keys = [k for m in markers for k in m.keys]
    return {
        "shards": len(markers),
        "rows": sum(m.rows for m in markers),
        "ok": sum(m.ok for m in markers),
        "failed": sum(m.failed for m in markers),
        "prompt_versions": sorted({k[1] for k in keys}),
        "models": sorted({k[2] for k in keys}),
    }
