"""The curated view of a store's shards, for `foley publish --curation-column / --exclude-rejected`.

The store's own files are never rewritten (curation is append-only, `foley_core.curation`); publishing
with curation uploads a rewritten copy of each shard file instead:

- `exclude_rejected`: rows whose latest decision is `rejected` are left out;
- `curation_column`: every row gets a `curation` struct (decision, curator, decided_at, note, edited),
  `undecided` when nobody decided; a row with an edited script publishes the edit as `script` and keeps
  the chain's own script as JSON in `curation.chain_script`, so the data itself says what was changed.

Without `curation_column`, edits are not applied: a plain `script` column is always the chain's output
or, with the column, visibly a curator's.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from v2t_foley.foley_core.curation import Decision, Key, latest_decisions, row_key
from v2t_foley.foley_core.schema.rows import FEATURES, nested_script

CURATION = {
    "decision": datasets.Value("string"),  # approved / rejected / needs-fix / undecided
    "curator": datasets.Value("string"),  # who decided ("" when undecided)
    "decided_at": datasets.Value("string"),  # ISO time (UTC), "" when undecided
    "note": datasets.Value("string"),  # the curator's note
    "edited": datasets.Value("bool"),  # `script` is the curator's edit, not the chain's
    "chain_script": datasets.Value("string"),  # JSON of the chain's script when edited, else null
}
CURATED_FEATURES = datasets.Features({**FEATURES, "curation": CURATION})
_KEY_COLUMNS = ["id", "prompt_version", "model_id", "adapter", "status"]


@dataclass(frozen=True)
class CurationOptions:
    curation_column: bool = False  # add the `curation` column (and publish edited scripts)
    exclude_rejected: bool = False  # leave rows whose latest decision is `rejected` out

    @property
    def active(self) -> bool:
        return self.curation_column or self.exclude_rejected


@dataclass
class CuratedCounts:
    """What the published files hold once curated (for the card)."""

    split_rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)  # split -> files that keep a row
    ok: int = 0
    failed: int = 0
    left_out: int = 0  # rejected rows not published
    edited: int = 0  # rows published with a curator's script

    @property
    def rows(self) -> int:
        return sum(self.split_rows.values())


class CuratedView:
    """The store's decisions, read once, applied to each shard file in turn."""

    def __init__(self, store: Any, options: CurationOptions) -> None:
        self.store = store
        self.options = options
        self.decisions: dict[Key, Decision] = latest_decisions(store)

    def keeps(self, key: Key) -> bool:
        decision = self.decisions.get(key)
        rejected = decision is not None and decision.decision == "rejected"
        return not (self.options.exclude_rejected and rejected)

    def edit(self, key: Key) -> Decision | None:
        decision = self.decisions.get(key)
        if self.options.curation_column and decision is not None and decision.script is not None:
            return decision
        return None

    def count(self, files: dict[str, list[str]]) -> CuratedCounts:
        """Rows per split, ok/failed, left out and edited, and the files that keep any row (a file
        whose every row is left out is not published: an empty Parquet file breaks `load_dataset`).
        Reads the key columns only."""
        counts = CuratedCounts()
        for split, relative_paths in sorted(files.items()):
            for relative in relative_paths:
                with self.store.fs.open(self.store.path(relative), "rb") as handle:
                    rows = pq.read_table(handle, columns=_KEY_COLUMNS).to_pylist()
                kept = 0
                for row in rows:
                    key = row_key(row)
                    if not self.keeps(key):
                        counts.left_out += 1
                        continue
                    kept += 1
                    counts.split_rows[split] = counts.split_rows.get(split, 0) + 1
                    counts.ok += row["status"] == "ok"
                    counts.failed += row["status"] != "ok"
                    counts.edited += self.edit(key) is not None
                if kept:
                    counts.files.setdefault(split, []).append(relative)
        return counts

    def rewrite(self, relative: str) -> bytes:
        """One shard file as it is published: Parquet bytes with the curated rows and features."""
        rows = []
        for row in self.store.read_table(relative):
            key = row_key(row)
            if not self.keeps(key):
                continue
            if self.options.curation_column:
                row["curation"] = self._column(row, self.decisions.get(key))
            rows.append(row)
        features = CURATED_FEATURES if self.options.curation_column else FEATURES
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=features.arrow_schema), buffer)
        return buffer.getvalue()

    def _column(self, row: dict[str, Any], decision: Decision | None) -> dict[str, Any]:
        if decision is None:
            return {"decision": "undecided", "curator": "", "decided_at": "", "note": "", "edited": False}
        edited = decision.script is not None
        value = {
            "decision": decision.decision,
            "curator": decision.curator,
            "decided_at": decision.decided_at,
            "note": decision.note,
            "edited": edited,
            "chain_script": json.dumps(row["script"], ensure_ascii=False) if edited else None,
        }
        if edited:
            row["script"] = nested_script(decision.script)
        return value
