"""Curation: a person's decision per row (approved / rejected / needs-fix, maybe an edited script).

Decisions are made on the review page (`foley review`), kept in the browser until exported as
`curation.json`, and recorded in the store by `foley curate STORE --apply curation.json`:

    _curation/<applied time>-<random>.json     one file per apply, never rewritten (append-only)

Each file holds the decisions that passed validation, with who decided and when (`curator`,
`decided_at`) and who applied them and when (`applied_by`, `applied_at`). The latest decision per row
wins: ordered by `decided_at`, then by the order they were applied. A decision names its row by the
store's key (id, prompt version, model key); a row that is not in the store, an unknown decision or an
edited script that does not validate (the schema, and `check_script` against the row's duration) is
rejected with its row and reason, and the others are recorded all the same.

Curation files live outside `data/` and `_shards/`: `foley verify` never sees them, and the rows
themselves are never rewritten; training (training/data.py) and the card read the decisions.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from v2t_foley.foley_core.schema.script import FoleyScript, check_script

log = logging.getLogger(__name__)

FORMAT = "v2t-foley-curation/1"
FOLDER = "_curation"
DECISIONS = ("approved", "rejected", "needs-fix")
Key = tuple[str, str, str]  # (id, prompt_version, model_key)


@dataclass(frozen=True)
class Decision:
    key: Key
    decision: str  # approved / rejected / needs-fix
    script: dict[str, Any] | None  # an edited script (validated), or None
    note: str
    curator: str
    decided_at: str  # ISO time (UTC) the curator decided
    applied_at: str  # ISO time (UTC) it was recorded in the store
    order: tuple[str, int] = ("", 0)  # (curation file, position): the tie-breaker

    def record(self) -> dict[str, Any]:
        item = {
            "id": self.key[0],
            "prompt_version": self.key[1],
            "model": self.key[2],
            "decision": self.decision,
            "note": self.note,
            "curator": self.curator,
            "decided_at": self.decided_at,
        }
        if self.script is not None:
            item["script"] = self.script
        return item


@dataclass
class ApplyResult:
    recorded: list[Decision] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (row named as given, reason)
    path: str | None = None  # store-relative file written (None: nothing to record)


def _model_key(row: dict[str, Any]) -> str:
    return f"{row['model_id']}@{row['adapter']}" if row.get("adapter") else row["model_id"]


def row_key(row: dict[str, Any]) -> Key:
    return row["id"], row["prompt_version"], _model_key(row)


def _utc(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} missing")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an ISO time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def _describe(item: Any) -> str:
    if not isinstance(item, dict):
        return repr(item)[:80]
    return f"{item.get('id')!r} ({item.get('prompt_version')}, {item.get('model')})"


def check_edit(script: Any, duration: float) -> dict[str, Any]:
    """An edited script as the schema and `check_script` accept it; ValueError naming what is wrong."""
    try:
        parsed = FoleyScript.model_validate(script)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
        ]
        raise ValueError("edited script: " + "; ".join(problems)) from None
    problems = check_script(parsed, duration)
    if problems:
        raise ValueError("edited script: " + "; ".join(problems))
    return parsed.model_dump()


def parse_export(text: str) -> dict[str, Any]:
    """A `curation.json` as the review page exports it; ValueError when it is not one."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("decisions"), list):
        raise ValueError("not a curation file: no 'decisions' list")
    if data.get("format", FORMAT) != FORMAT:
        raise ValueError(f"unknown curation format {data.get('format')!r} (expected {FORMAT})")
    return data


def validate_decisions(
    data: dict[str, Any], rows: dict[Key, dict[str, Any]], curator: str | None = None, now: str | None = None
) -> ApplyResult:
    """Check each decision of an export against the store's rows; good ones become `Decision`s."""
    now = now or datetime.now(UTC).isoformat(timespec="milliseconds")
    result = ApplyResult()
    default_curator = curator or str(data.get("curator") or "") or "unknown"
    for position, item in enumerate(data["decisions"]):
        name = _describe(item)
        try:
            if not isinstance(item, dict):
                raise ValueError("a decision is an object")
            key = (item.get("id"), item.get("prompt_version"), item.get("model"))
            if not all(isinstance(k, str) for k in key):
                raise ValueError("id, prompt_version and model must be strings")
            row = rows.get(key)
            if row is None:
                raise ValueError("no such row in this store")
            if item.get("decision") not in DECISIONS:
                raise ValueError(f"decision {item.get('decision')!r} is not one of {', '.join(DECISIONS)}")
            script = item.get("script")
            if script is not None:
                if row["status"] != "ok":
                    raise ValueError("a failed row has no script to edit")
                script = check_edit(script, float(row["duration"] or 0.0))
            note = item.get("note") or ""
            if not isinstance(note, str):
                raise ValueError("note must be a string")
            result.recorded.append(
                Decision(
                    key=key,
                    decision=item["decision"],
                    script=script,
                    note=note[:2000],
                    curator=str(item.get("curator") or default_curator)[:200],
                    decided_at=_utc(item.get("decided_at") or now, "decided_at"),
                    applied_at=now,
                    order=("", position),
                )
            )
        except ValueError as error:
            result.rejected.append((name, str(error)))
    return result


def apply_curation(store: Any, text: str, *, curator: str | None = None, source: str = "") -> ApplyResult:
    """Record the valid decisions of an exported `curation.json` in `store` (one new file)."""
    data = parse_export(text)
    rows = {row_key(r): r for r in store.read_rows()}
    now = datetime.now(UTC)
    result = validate_decisions(data, rows, curator, now.isoformat(timespec="milliseconds"))
    if result.recorded:
        name = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:6]}.json"
        record = {
            "format": FORMAT,
            "applied_at": result.recorded[0].applied_at,
            "applied_by": curator or str(data.get("curator") or "") or "unknown",
            "source": source.replace("\\", "/").rsplit("/", 1)[-1][:200],
            "exported_at": str(data.get("exported_at") or ""),
            "decisions": [d.record() for d in result.recorded],
        }
        result.path = f"{FOLDER}/{name}"
        store._write_text(result.path, json.dumps(record, indent=1, ensure_ascii=False))
    return result


def curation_files(store: Any) -> list[str]:
    """Store-relative paths of the curation files, oldest first (their names start with the time)."""
    if not store.fs.exists(store.path(FOLDER)):
        return []
    found = store.fs.glob(store.path(f"{FOLDER}/*.json"))
    return sorted(f"{FOLDER}/{p.rsplit('/', 1)[-1]}" for p in found)


def read_decisions(store: Any) -> list[Decision]:
    """Every recorded decision, in the order they were applied. Unreadable files are skipped (logged)."""
    decisions: list[Decision] = []
    for relative in curation_files(store):
        try:
            data = json.loads(store.fs.cat_file(store.path(relative)))
            applied_at = _utc(data["applied_at"], "applied_at")
            for position, item in enumerate(data["decisions"]):
                if item.get("decision") not in DECISIONS:
                    continue
                decisions.append(
                    Decision(
                        key=(str(item["id"]), str(item["prompt_version"]), str(item["model"])),
                        decision=item["decision"],
                        script=item.get("script"),
                        note=str(item.get("note") or ""),
                        curator=str(item.get("curator") or ""),
                        decided_at=_utc(item.get("decided_at") or applied_at, "decided_at"),
                        applied_at=applied_at,
                        order=(relative, position),
                    )
                )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("ignoring %s: %s", relative, error)
    return decisions


def latest_decisions(store: Any) -> dict[Key, Decision]:
    """Row key -> the decision that wins: the latest `decided_at`, then the one applied last."""
    latest: dict[Key, Decision] = {}
    for decision in sorted(read_decisions(store), key=lambda d: (d.decided_at, d.order)):
        latest[decision.key] = decision
    return latest


def curation_counts(decisions: dict[Key, Decision], rows: int | None = None) -> dict[str, int]:
    """How many rows have each decision (and an edited script); `undecided` when `rows` is given."""
    counts = Counter(d.decision for d in decisions.values())
    result = {name: counts.get(name, 0) for name in DECISIONS}
    result["edited"] = sum(d.script is not None for d in decisions.values())
    if rows is not None:
        result["undecided"] = max(rows - len(decisions), 0)
    return result


def curation_status(store: Any) -> dict[str, Any]:
    """A summary for `foley curate --status`: counts over the store's rows, curators, files."""
    rows = {row_key(r): r for r in store.read_rows()}
    decisions = latest_decisions(store)
    live = {k: d for k, d in decisions.items() if k in rows}
    by_version: dict[str, dict[str, int]] = {}
    for key in rows:
        counts = by_version.setdefault(key[1], {name: 0 for name in (*DECISIONS, "edited", "undecided")})
        decision = live.get(key)
        counts[decision.decision if decision else "undecided"] += 1
        counts["edited"] += bool(decision and decision.script is not None)
    return {
        "rows": len(rows),
        **curation_counts(live, len(rows)),
        "unknown_rows": len(decisions) - len(live),  # decided rows the store no longer shows
        "files": len(curation_files(store)),
        "curators": sorted({d.curator for d in live.values()}),
        "last_decided_at": max((d.decided_at for d in live.values()), default=None),
        "by_prompt_version": by_version,
    }
