"""Adding rows to a store so that it never shows two rows for one (id, prompt version, model).

Every marker write happens under the store's `commit` lease. Inside it the writer reads the live
markers and decides, per offered row, against the row the store already shows for the same key:

- no row yet: added;
- the store's row came from another model revision (a moved Hub revision, a retrained adapter): the new
  row replaces it, so the store shows what the model now says;
- the store's row failed and the new one is ok, or `replace_failed` (`--retry-failed`): replaced;
- otherwise (an overlapping or retried run offering the same result): the new row is dropped.

Replacing is one marker write: the new marker carries the new rows and every surviving row of the
markers it touches (their files rewritten without the replaced rows, or kept by reference), and names
those markers in `supersedes`. Markers of an older store format are always touched, and their files
always rewritten (rows converted by `normalize_row` on reading): so the first write with this version
migrates a store, and a current marker never names a file in an older layout (`migrate` does it alone).
A store that shows a key twice (written before the commit lease) is migrated after `foley verify
--repair` has removed the duplicates, never before: carried together, the two rows could not be told
apart.

Then the card is rewritten, then the superseded markers and files that
nothing references are deleted. A crash before the marker write leaves unmarked files (invisible); after
it, the new view is complete and the leftovers are only garbage for `foley verify --repair`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from v2t_foley.foley_core.backends.provenance import join_revisions
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.store.markers import STORE_FORMAT, Key, ShardMarker, check_run_id, check_split
from v2t_foley.foley_core.store.store import DatasetStore, live

log = logging.getLogger(__name__)

COMMIT_WAIT_S = 900.0  # a commit takes seconds; waiting long covers a slow S3 rewrite of big shards


class StoreDamaged(InputError):
    """The store has a marker that cannot be read; nothing is written until `foley verify` has looked."""


def superseded_by(touched: list[ShardMarker]) -> list[str]:
    """The markers a new marker supersedes: the touched ones and, carried forward, what they superseded
    (a crash can leave those on storage; if nothing named them any more they would come back)."""
    return sorted({m.name for m in touched} | {n for m in touched for n in m.supersedes})


def row_key(row: dict[str, Any]) -> Key:
    model = f"{row['model_id']}@{row['adapter']}" if row.get("adapter") else row["model_id"]
    return (row["id"], row["prompt_version"], model)


def row_revision(row: dict[str, Any]) -> str:
    """Model revision plus adapter revision, as rows and markers record it ("" when unknown)."""
    return join_revisions(row.get("model_revision") or "", row.get("adapter_revision") or "")


def replaces(new: tuple[str, str], old: tuple[str, str], replace_failed: bool) -> bool:
    """Does a new row (status, revision) replace the store's row for the same key?"""
    (new_status, new_rev), (old_status, old_rev) = new, old
    if new_rev and old_rev and new_rev != old_rev:
        return True  # "" is a row written before revisions were recorded: the same, as far as we know
    if old_status == "failed":
        return new_status == "ok" or replace_failed
    return False


def is_done(shown: tuple[str, str] | None, revision: str, retry_failed: bool) -> bool:
    """Does the store's row (status, revision) for a key spare a run with this model revision the work?"""
    if shown is None:
        return False
    status, old_revision = shown
    if revision and old_revision and revision != old_revision:
        return False
    return status == "ok" or not retry_failed


def commit_rows(
    store: DatasetStore,
    rows: list[DatasetRow],
    run_id: str,
    index: int,
    *,
    replace_failed: bool = False,
    wait_s: float = COMMIT_WAIT_S,
) -> ShardMarker | None:
    """Add `rows` as shard `index` of run `run_id`; the marker written, or None when nothing was new."""
    if not rows:
        raise ValueError("a shard needs at least one row")
    check_run_id(run_id)
    for row in rows:
        check_split(row.split)
    offered = [row.model_dump() for row in rows]
    with store.lease("commit", f"shard {run_id}/{index}").hold(wait_s) as lease:
        markers = store.markers()
        if store.scan()[1]:  # a marker we cannot read might hold any of these keys
            raise StoreDamaged(f"{store.uri} has an unreadable shard marker; run foley verify {store.uri}")
        shown = store.done(markers)
        added, remove, dropped = [], set(), 0
        for row in offered:
            key = row_key(row)
            mine = (row["status"], row_revision(row))
            if key not in shown:
                added.append(row)
            elif replaces(mine, shown[key], replace_failed):
                added.append(row)
                remove.add(key)
            else:
                dropped += 1
                continue
            shown[key] = mine  # a key offered twice in one call goes in once
        if not added:
            log.info("shard %s/%d: all %d rows were already in the store", run_id, index, dropped)
            return None
        marker = _write(store, markers, added, remove, run_id, index, dropped, fence=lease.check)
        log.info(
            "shard %s/%d: %d rows added (%d replacing older rows), %d already in the store",
            run_id,
            index,
            len(added),
            len(remove),
            dropped,
        )
        return marker


def rewrite(
    store: DatasetStore,
    markers: list[ShardMarker],
    remove_from: dict[str, set[Key]],
    run_id: str,
) -> ShardMarker | None:
    """Drop keys from named markers (a repair); the caller holds the commit lease."""
    touched = [m for m in markers if m.name in remove_from]
    if not touched:
        return None
    return _write(store, markers, [], set(), run_id, 0, 0, remove_from)


def duplicated(markers: list[ShardMarker]) -> bool:
    """Do live markers show a key twice? (Only stores written before the commit lease can.)"""
    keys = [k[:3] for m in markers for k in m.keys]
    return len(keys) != len(set(keys))


def migrate(store: DatasetStore, wait_s: float = COMMIT_WAIT_S) -> ShardMarker | None:
    """Rewrite every shard of an older store format in the current layout, in one marker write.

    None when there was nothing to migrate. Safe like any commit: under the commit lease, new files
    first, the superseding marker last; a crash leaves the old view or the new one.
    """
    with store.lease("commit", "foley migrate").hold(wait_s):
        markers = store.markers()
        old = store.old_markers(markers)
        if not old:
            return None
        if duplicated(markers):
            raise InputError(
                f"{store.uri} shows some rows twice (a store from before the commit lease); "
                f"run `foley verify {store.uri} --repair` first, then migrate"
            )
        marker = migrate_locked(store, markers)
        log.info("migrated %d marker(s), %d rows, to store format %d", len(old), marker.rows, STORE_FORMAT)
        return marker


def migrate_locked(store: DatasetStore, markers: list[ShardMarker]) -> ShardMarker:
    """`migrate`'s write, for a caller that holds the commit lease and checked for duplicates."""
    old = {m.name: set() for m in store.old_markers(markers)}
    return _write(store, markers, [], set(), "migrate", 0, 0, old)


def _write(
    store: DatasetStore,
    markers: list[ShardMarker],
    added: list[dict[str, Any]],
    remove: set[Key],
    run_id: str,
    index: int,
    dropped: int,
    remove_from: dict[str, set[Key]] | None = None,
    fence: Callable[[], None] | None = None,
) -> ShardMarker:
    """Write the new files, one marker superseding every touched marker, the card; then clean up.

    `fence` runs just before the marker write (the commit point): the lease's check, so a holder that
    lost its lease (paused past its expiry) writes nothing visible."""
    from v2t_foley.foley_core.store.card import render_card

    commit = uuid.uuid4().hex[:8]
    prefix = f"{run_id}-{index:05d}-{commit}"
    if remove_from is None:
        remove_from = {m.name: {k[:3] for k in m.keys if k[:3] in remove} for m in markers}
        remove_from = {name: keys for name, keys in remove_from.items() if keys}
    migrating = {m.name for m in markers if m.format < STORE_FORMAT} if not duplicated(markers) else set()
    touched = [m for m in markers if m.name in remove_from or m.name in migrating]

    files: dict[str, list[str]] = {}
    keys: list[tuple[str, str, str, str, str]] = []
    by_split: dict[str, list[dict[str, Any]]] = {}
    for row in added:
        by_split.setdefault(row["split"], []).append(row)
    for split, split_rows in sorted(by_split.items()):
        relative = f"data/{split}-{prefix}.parquet"
        store.write_table(relative, split_rows)
        files.setdefault(split, []).append(relative)
    counted = list(added)

    carried = 0
    for marker in touched:  # the surviving rows of every marker this write supersedes
        gone = remove_from.get(marker.name, set())
        current = marker.format >= STORE_FORMAT  # an older format's files are rewritten, never referenced
        for split, paths in marker.files.items():
            for path in paths:
                rows = store.read_table(path)
                kept = [r for r in rows if row_key(r) not in gone]
                if current and len(kept) == len(rows):  # nothing of this file goes: keep it by reference
                    files.setdefault(split, []).append(path)
                elif kept:
                    carried += 1
                    relative = f"data/{split}-{prefix}-{carried}.parquet"
                    store.write_table(relative, kept)
                    files.setdefault(split, []).append(relative)
                counted.extend(kept)
    for row in counted:
        keys.append((*row_key(row), row["status"], row_revision(row)))
    split_rows: dict[str, int] = {}
    for row in counted:
        split_rows[row["split"]] = split_rows.get(row["split"], 0) + 1

    marker = ShardMarker(
        run_id=run_id,
        index=index,
        commit=commit,
        files=files,
        rows=len(counted),
        split_rows=split_rows,
        ok=sum(r["status"] == "ok" for r in counted),
        failed=sum(r["status"] == "failed" for r in counted),
        keys=keys,
        created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        supersedes=superseded_by(touched),
        added_ok=sum(r["status"] == "ok" for r in added),
        added_failed=sum(r["status"] == "failed" for r in added),
        dropped=dropped,
        format=STORE_FORMAT,
    )
    if fence is not None:
        fence()
    store.write_marker(marker)  # the commit point
    now_live = live([*markers, marker])
    store.write_card(render_card(store, markers=now_live))
    referenced = {p for m in now_live for p in m.paths()}
    for old in touched:
        store.fs.rm_file(store.path(f"_shards/{old.name}.json"))
        for path in old.paths():
            if path not in referenced:
                store.fs.rm_file(store.path(path))
    return marker
