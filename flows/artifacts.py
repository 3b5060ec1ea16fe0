"""Prefect artifacts of a run: a progress artifact and a table of its shards, where the UI shows them.

Artifacts are a view, never a reason to fail: anything that goes wrong publishing one is logged and
dropped.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def progress_artifact(done: int, total: int, description: str, artifact_id: Any = None) -> Any:
    """Create (or update, given the id) a progress artifact at done/total; its id, or None."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    percent = 100.0 if total <= 0 else round(100.0 * done / total, 1)
    try:
        if artifact_id is None:
            return create_progress_artifact(progress=percent, description=description)
        update_progress_artifact(artifact_id=artifact_id, progress=percent, description=description)
        return artifact_id
    except Exception as error:  # pragma: no cover - the API being away must not stop a build
        log.debug("progress artifact not published: %s", error)
        return artifact_id


def table_artifact(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A table artifact (`key`: lowercase letters, digits and dashes) of `rows`."""
    from prefect.artifacts import create_table_artifact

    try:
        create_table_artifact(key=key, table=rows, description=description)
    except Exception as error:  # pragma: no cover
        log.debug("table artifact not published: %s", error)


def shard_artifacts(summary: Any, run_id: str) -> None:
    """process-shard's artifacts: its progress (done) and its summary as a one-row table, described
    with the build run it belongs to."""
    row = {k: v for k, v in vars(summary).items() if not isinstance(v, dict)}
    row |= {f"computed_{k}": v for k, v in summary.computed.items()}
    row |= {f"seconds_{k}": v for k, v in summary.step_seconds.items()}
    progress_artifact(
        1, 1, f"shard {summary.index}: {summary.rows} rows ({summary.ok} ok, {summary.failed} failed)"
    )
    table_artifact("foley-shard-summary", [row], f"process-shard {summary.index} of build-dataset {run_id}")


def build_artifacts(summary: Any, markers: list[Any], progress_id: Any = None) -> None:
    """build-dataset's artifacts: progress to 100 % and one table row per shard this run added."""
    progress_artifact(
        1,
        1,
        f"{summary.new_rows} new rows ({summary.new_ok_rows} ok, {summary.new_failed_rows} failed)",
        progress_id,
    )
    rows = [
        {
            "marker": m.name,
            "rows": m.rows,
            "added_ok": m.added_ok,
            "added_failed": m.added_failed,
            "dropped": m.dropped,
            "splits": ", ".join(f"{s}: {n}" for s, n in sorted(m.split_rows.items())),
        }
        for m in markers
    ]
    table_artifact(
        "foley-build-shards", rows or [{"marker": "none", "rows": 0}], f"build-dataset {summary.run_id}"
    )
