"""A dataset store at a local directory or any fsspec URI (s3://bucket/prefix).

Layout:
    README.md                               dataset card (YAML header lists exactly the live shards)
    _card.json                              the card's settings kept between runs (license)
    data/<split>-<run>-<n>-<commit>.parquet shards, written under _tmp/ first and moved into place
    _shards/<run>-<n>-<commit>.json         marker, written last: a shard without one does not exist
    _locks/                                 leases: one marker writer at a time, one build at a time
    _cache/                                 Prefect task results (the chain's cached steps), by default
    _curation/<time>.json                   curators' decisions, append-only (foley_core.curation)

One row per (id, prompt version, model), whatever crashes, retries or overlaps: markers are written
under the store's commit lease, and a write that replaces rows supersedes their markers in the same
marker write (foley_core.store.commit). A run killed at any moment leaves at most files without a
marker; nothing reads those (the card and the skip logic go by markers), and the next run redoes their
videos; `foley verify --repair` removes them. S3 credentials and endpoint come
from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...) or `storage_options`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

import datasets
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.safenames import redact_uri
from v2t_foley.foley_core.schema.rows import FEATURES, DatasetRow, normalize_row
from v2t_foley.foley_core.store.lease import Lease
from v2t_foley.foley_core.store.markers import STORE_FORMAT, Key, ShardMarker, UnsafeStoreError

log = logging.getLogger(__name__)

CARD_SETTINGS = "_card.json"  # the card's settings that outlive a run (license)


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

    def scan(self) -> tuple[list[ShardMarker], list[str], list[str]]:
        """Every readable, safe marker (superseded ones too); a line per unreadable and per unsafe one."""
        found, unreadable, unsafe = [], [], []
        for path in sorted(self.fs.glob(self.path("_shards/*.json"))):
            where = f"{self.uri}/_shards/{path.rsplit('/', 1)[-1]}"
            raw = self.fs.cat_file(path)  # a storage error propagates: never mistaken for a bad marker
            try:
                marker = ShardMarker.model_validate_json(raw)
            except ValueError as err:  # not a marker (bad JSON, wrong fields): it marks nothing complete
                unreadable.append(f"{where}: unreadable marker ({type(err).__name__})")
                continue
            try:
                marker.check_safe(where)
            except UnsafeStoreError as err:
                unsafe.append(str(err))
                continue
            found.append(marker)
        return sorted(found, key=lambda m: (m.created_at, m.name)), unreadable, unsafe

    def markers(self) -> list[ShardMarker]:
        """The live markers (complete, not superseded), oldest first. Refuses a store with an unsafe one."""
        found, unreadable, unsafe = self.scan()
        if unsafe:
            raise UnsafeStoreError(unsafe[0])
        for problem in unreadable:
            log.warning("ignoring %s", problem)
        return live(found)

    def done(self, markers: list[ShardMarker] | None = None) -> dict[Key, tuple[str, str]]:
        """(id, prompt_version, model_key) -> (status, revision) of every row the store shows."""
        return {
            (row_id, version, model): (status, revision)
            for marker in (self.markers() if markers is None else markers)
            for row_id, version, model, status, revision in marker.keys
        }

    def done_keys(self, *, include_failed: bool = True) -> set[Key]:
        """(id, prompt_version, model_key) of every row already in complete shards."""
        return {key for key, (status, _) in self.done().items() if include_failed or status == "ok"}

    def data_files(self, markers: list[ShardMarker] | None = None) -> dict[str, list[str]]:
        """split -> store-relative paths of the complete shards' files (of `markers`, if already read)."""
        files: dict[str, list[str]] = {}
        for marker in self.markers() if markers is None else markers:
            for split, paths in marker.files.items():
                files.setdefault(split, []).extend(paths)
        return files

    def data_urls(self) -> dict[str, list[str]]:
        """split -> full URIs, for `datasets.load_dataset("parquet", data_files=...)`."""
        return {split: [self.url(p) for p in paths] for split, paths in self.data_files().items()}

    def load(self) -> datasets.DatasetDict:
        """Every complete shard as a DatasetDict (one split per manifest split).

        A store with shards of an older format (JSON-string scripts) loads too: its rows are read and
        converted in memory (`normalize_row`); `foley migrate STORE` rewrites them once for good.
        """
        markers = self.markers()
        if all(m.format >= STORE_FORMAT for m in markers):
            urls = {s: [self.url(p) for p in paths] for s, paths in self.data_files(markers).items()}
            return datasets.load_dataset(
                "parquet", data_files=urls, features=FEATURES, storage_options=self.storage_options
            )
        by_split: dict[str, list[dict[str, Any]]] = {}
        for marker in markers:
            for split, paths in marker.files.items():
                by_split.setdefault(split, []).extend(r for p in paths for r in self.read_table(p))
        return datasets.DatasetDict(
            {s: datasets.Dataset.from_list(rows, features=FEATURES) for s, rows in by_split.items()}
        )

    # writing -----------------------------------------------------------------------------------

    def write_shard(
        self, rows: list[DatasetRow], run_id: str, index: int, *, replace_failed: bool = False
    ) -> ShardMarker | None:
        """Add `rows` as one shard, keeping one row per key (see `commit`). None when nothing was new."""
        from v2t_foley.foley_core.store.commit import commit_rows

        return commit_rows(self, rows, run_id, index, replace_failed=replace_failed)

    def write_table(self, relative: str, rows: list[dict[str, Any]]) -> None:
        """One Parquet file at `relative` (staged, then moved: never half a file at that name)."""
        table = pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema)
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "shard.parquet"
            pq.write_table(table, str(local))
            self.fs.makedirs(self.path("_tmp"), exist_ok=True)
            self.fs.makedirs(self.path("data"), exist_ok=True)
            staging = self.path(f"_tmp/{uuid.uuid4().hex}.parquet")
            self.fs.put_file(str(local), staging)
            self.fs.mv(staging, self.path(relative))

    def read_table(self, relative: str) -> list[dict[str, Any]]:
        """The rows of one shard file, in the current layout whatever format wrote them."""
        with self.fs.open(self.path(relative), "rb") as handle:
            return [normalize_row(row) for row in pq.read_table(handle).to_pylist()]

    def old_markers(self, markers: list[ShardMarker] | None = None) -> list[ShardMarker]:
        """Live markers whose files an older store format wrote (`foley migrate` rewrites them)."""
        return [m for m in (self.markers() if markers is None else markers) if m.format < STORE_FORMAT]

    # card settings -----------------------------------------------------------------------------

    def card_settings(self) -> dict[str, Any]:
        """`_card.json`: what the card keeps between runs (license, ...); {} when never set."""
        path = self.path(CARD_SETTINGS)
        if not self.fs.exists(path):
            return {}
        try:
            value = json.loads(self.fs.cat_file(path))
        except ValueError:
            log.warning("ignoring %s/%s: not JSON", self.uri, CARD_SETTINGS)
            return {}
        return value if isinstance(value, dict) else {}

    def update_card_settings(self, **values: Any) -> dict[str, Any]:
        """Merge the non-None `values` into `_card.json`; the settings now."""
        settings = self.card_settings()
        changed = {k: v for k, v in values.items() if v is not None and settings.get(k) != v}
        if changed:
            settings |= changed
            self._write_text(CARD_SETTINGS, json.dumps(settings, indent=1, sort_keys=True))
        return settings

    def write_marker(self, marker: ShardMarker) -> None:
        self._write_text(f"_shards/{marker.name}.json", marker.model_dump_json(indent=1))

    def lease(self, name: str, purpose: str, ttl_s: float = 120.0) -> Lease:
        """A lease on this store (`commit`: one writer of markers at a time; `build`: one build run)."""
        return Lease(self.fs, self.path(f"_locks/{name}.json"), purpose, ttl_s)

    def check_writable(self) -> None:
        """A clear error when the store's location cannot be a store (a file, say)."""
        if self.fs.isfile(self.root):
            raise InputError(f"--store {self.uri} is a file; give a folder (it is created if missing)")

    def check_is_store(self) -> None:
        """A clear error when nothing was ever built here (commands that read a store)."""
        if not self.fs.exists(self.path("_shards")):
            raise InputError(f"{redact_uri(self.uri)} is not a store (no _shards/ folder)")

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
        return [row for marker in self.markers() for path in marker.paths() for row in self.read_table(path)]


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


def live(markers: list[ShardMarker]) -> list[ShardMarker]:
    """The markers no other marker supersedes: what the store shows."""
    superseded = {name for marker in markers for name in marker.supersedes}
    return [m for m in markers if m.name not in superseded]
