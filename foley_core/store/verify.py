"""fsck for stores: find what breaks the store's promises, and repair what can be repaired.

Checked: markers that cannot be read or name files outside `data/`; keys shown twice (stores written
before the commit lease existed could have them); markers whose files are missing; superseded markers
and files that a crash left behind; files no marker names; a card whose file list disagrees with the
markers. Repairs run under the commit lease, so they never race a writer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import yaml

from v2t_foley.foley_core.store.card import render_card
from v2t_foley.foley_core.store.commit import migrate_locked, rewrite, superseded_by
from v2t_foley.foley_core.store.markers import Key, ShardMarker
from v2t_foley.foley_core.store.store import DatasetStore, live

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """What is wrong with a store; empty lists mean clean."""

    markers: int = 0  # live markers
    rows: int = 0  # rows they show
    unreadable: list[str] = field(default_factory=list)  # marker files that do not parse
    unsafe: list[str] = field(default_factory=list)  # markers naming files outside data/
    duplicates: list[str] = field(default_factory=list)  # keys shown more than once, with their markers
    missing_files: list[str] = field(default_factory=list)  # files a live marker names that do not exist
    leftovers: list[str] = field(default_factory=list)  # superseded markers still on storage
    orphans: list[str] = field(default_factory=list)  # data/ and _tmp/ files no marker names
    card: list[str] = field(default_factory=list)  # how the card disagrees with the markers

    @property
    def clean(self) -> bool:
        return not self.lines()

    def lines(self) -> list[str]:
        out = []
        for label, items in (
            ("unreadable marker", self.unreadable),
            ("unsafe marker", self.unsafe),
            ("duplicate", self.duplicates),
            ("missing file", self.missing_files),
            ("superseded marker left behind", self.leftovers),
            ("orphan file", self.orphans),
            ("card", self.card),
        ):
            out.extend(f"{label}: {item}" for item in items)
        return out


def verify(store: DatasetStore) -> VerifyReport:
    found, unreadable, unsafe = store.scan()
    shown = live(found)
    report = VerifyReport(markers=len(shown), rows=sum(m.rows for m in shown))
    report.unreadable, report.unsafe = unreadable, unsafe
    for key, names in _duplicates(shown).items():
        report.duplicates.append(f"{'/'.join(key)} in {', '.join(names)}")
    existing = set(_listing(store, "data"))
    for marker in shown:
        report.missing_files += [f"{p} (marker {marker.name})" for p in marker.paths() if p not in existing]
    live_names = {m.name for m in shown}
    report.leftovers = [m.name for m in found if m.name not in live_names]
    referenced = {p for m in found for p in m.paths()}
    report.orphans = sorted(p for p in existing if p not in referenced) + _listing(store, "_tmp")
    report.card = _card_problems(store, shown)
    return report


def repair(store: DatasetStore) -> list[str]:
    """Fix what `verify` finds; the lines say what was done. Holds the commit lease throughout."""
    done: list[str] = []
    with store.lease("commit", "foley verify --repair").hold(wait_s=900):
        before = verify(store)
        for problem in before.unreadable + before.unsafe:
            name = problem.split(": ", 1)[0].rsplit("/", 1)[-1]  # the marker file, never what it names
            store.fs.rm_file(store.path(f"_shards/{name}"))
            done.append(f"removed marker {name}")
        found, _, _ = store.scan()
        shown = live(found)
        existing = set(_listing(store, "data"))
        for marker in shown:  # a marker whose files vanished keeps the rows that still exist
            missing = [p for p in marker.paths() if p not in existing]
            if missing:
                _drop_missing(store, marker, missing)
                done.append(f"marker {marker.name}: dropped {len(missing)} missing file(s)")
        found, _, _ = store.scan()
        shown = live(found)
        losers = _losers(shown)
        if losers:
            rewrite(store, shown, losers, "repair")
            done.append(f"removed {sum(len(k) for k in losers.values())} duplicate row(s)")
        found, _, _ = store.scan()
        shown = live(found)
        if store.old_markers(shown):  # no duplicates left: carry the old layout's rows into the new one
            migrate_locked(store, shown)
            done.append(f"migrated {len(store.old_markers(shown))} marker(s) to the current store format")
            found, _, _ = store.scan()
            shown = live(found)
        referenced = {p for m in shown for p in m.paths()}
        for marker in found:
            if marker not in shown:
                store.fs.rm_file(store.path(f"_shards/{marker.name}.json"))
                done.append(f"removed superseded marker {marker.name}")
        for path in [p for p in _listing(store, "data") if p not in referenced] + _listing(store, "_tmp"):
            store.fs.rm_file(store.path(path))
            done.append(f"removed orphan {path}")
        if _card_problems(store, shown):
            store.write_card(render_card(store, markers=shown))
            done.append("rewrote the card")
    return done


def _listing(store: DatasetStore, folder: str) -> list[str]:
    if not store.fs.exists(store.path(folder)):
        return []
    prefix = store.root + "/"
    return sorted(p[len(prefix) :] for p in store.fs.find(store.path(folder)) if p.startswith(prefix))


def _duplicates(markers: list[ShardMarker]) -> dict[Key, list[str]]:
    where: dict[Key, list[str]] = {}
    for marker in markers:
        for key in marker.keys:
            where.setdefault(key[:3], []).append(marker.name)
    return {key: names for key, names in where.items() if len(names) > 1}


def _losers(markers: list[ShardMarker]) -> dict[str, set[Key]]:
    """For each key shown twice, every marker but the winner's: ok beats failed, then the newest."""
    entries: dict[Key, list[tuple[bool, str, str]]] = {}
    for marker in markers:
        for key in marker.keys:
            entries.setdefault(key[:3], []).append((key[3] == "ok", marker.created_at, marker.name))
    losers: dict[str, set[Key]] = {}
    for key, holders in entries.items():
        if len(holders) > 1:
            for _, _, name in sorted(holders)[:-1]:
                losers.setdefault(name, set()).add(key)
    return losers


def _drop_missing(store: DatasetStore, marker: ShardMarker, missing: list[str]) -> None:
    """Supersede `marker` with one naming only its files that exist (their rows re-read for the keys)."""
    from v2t_foley.foley_core.store.commit import row_key, row_revision

    files = {s: [p for p in paths if p not in missing] for s, paths in marker.files.items()}
    files = {s: paths for s, paths in files.items() if paths}
    rows = [r for paths in files.values() for p in paths for r in store.read_table(p)]
    store.write_marker(
        marker.model_copy(
            update={
                "commit": f"{marker.commit or 'v1'}r",
                "files": files,
                "rows": len(rows),
                "split_rows": {s: sum(r["split"] == s for r in rows) for s in files},
                "ok": sum(r["status"] == "ok" for r in rows),
                "failed": sum(r["status"] == "failed" for r in rows),
                "keys": [(*row_key(r), r["status"], row_revision(r)) for r in rows],
                "supersedes": superseded_by([marker]),
            }
        )
    )


def _card_problems(store: DatasetStore, markers: list[ShardMarker]) -> list[str]:
    path = store.path("README.md")
    if not store.fs.exists(path):
        return ["no README.md card"] if markers else []
    text = store.fs.cat_file(path).decode()
    try:
        header = yaml.safe_load(text.split("---", 2)[1])
        listed = {p for config in header["configs"] for f in config["data_files"] for p in f["path"]}
    except Exception:
        return ["README.md has no readable YAML header with configs.data_files"]
    expected = {p for m in markers for p in m.paths()}
    problems = [f"lists {p}, which no live marker names" for p in sorted(listed - expected)]
    problems += [f"does not list {p}" for p in sorted(expected - listed)]
    return problems
