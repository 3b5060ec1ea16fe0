"""Dataset rows from chain outcomes: an `ok` row from a result, a `failed` row from an error.

The plain loop and the Prefect flow both build rows here, so their rows are the same shape.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from v2t_foley.foley_core.backends import BackendSpec
from v2t_foley.foley_core.chain.runner import ChainResult
from v2t_foley.foley_core.chain.trace import ChainTrace
from v2t_foley.foley_core.errors import (
    BackendError,
    ChainError,
    InputError,
    ManifestRowError,
    ModelNotFoundError,
    TemplateError,
    TransientBackendError,
)
from v2t_foley.foley_core.manifest import ManifestEntry
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.video.errors import VideoError
from v2t_foley.foley_core.video.video import Video


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def error_kind(error: BaseException) -> str:
    """A short machine-readable tag for why a video failed (a failed chunk: its own reason's tag)."""
    from v2t_foley.foley_core.chain.chunks import ChunkError

    if isinstance(error, ChunkError):
        return error_kind(error.cause)
    if isinstance(error, VideoError):
        return error.reason
    for kind, name in (
        (ManifestRowError, "manifest_row"),
        (ModelNotFoundError, "model"),
        (TemplateError, "template"),
        (ChainError, "chain"),
        (TransientBackendError, "backend_transient"),
        (BackendError, "backend"),
        (InputError, "input"),
    ):
        if isinstance(error, kind):
            return name
    return "internal"


def _video_fields(video: Video | None) -> dict[str, Any]:
    if video is None:
        return {}
    info = video.info
    return {
        "sha256": video.sha256,
        "duration": info.duration,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "has_audio": info.has_audio,
    }


def _events(trace: ChainTrace) -> list[dict[str, Any]]:
    reasoning = {r.event: r.model_dump(exclude={"event"}) for r in trace.reasoning}
    return [e.model_dump() | {"reasoning": reasoning.get(e.index)} for e in trace.events]


def ok_row(
    entry: ManifestEntry, video: Video, result: ChainResult, spec: BackendSpec, run_id: str
) -> DatasetRow:
    trace = result.trace
    return DatasetRow(
        id=entry.id,
        video=entry.video,
        split=entry.split,
        **_video_fields(video),
        events=_events(trace),
        script=result.script.model_dump(),
        trace=trace.model_dump_json(),
        prompt_version=trace.prompt_version,
        model_id=spec.model,
        model_revision=str(trace.model.get("revision") or ""),
        adapter=spec.adapter or "",
        adapter_revision=str(trace.model.get("adapter_revision") or ""),
        backend=spec.backend,
        generation=_json(trace.generation),
        status="ok",
        timings=_json(trace.step_seconds),
        metadata=entry.metadata_json(),
        run_id=run_id,
        created_at=_now(),
    )


def failed_row(
    entry: ManifestEntry,
    error: BaseException,
    *,
    prompt_version: str,
    spec: BackendSpec,
    run_id: str,
    video: Video | None = None,
    trace: ChainTrace | None = None,
    revisions: tuple[str, str] = ("", ""),
) -> DatasetRow:
    """A row that names why the video failed, with whatever was learnt before it did.

    `revisions` (model, adapter) are recorded when the video failed before it had a trace (which would
    carry them).
    """
    message = str(error) or type(error).__name__
    return DatasetRow(
        id=entry.id,
        video=entry.video,
        split=entry.split,
        **_video_fields(video),
        events=_events(trace) if trace else [],
        trace=trace.model_dump_json() if trace else "",
        prompt_version=prompt_version,
        model_id=spec.model,
        model_revision=str(trace.model.get("revision") or "") if trace else revisions[0],
        adapter=spec.adapter or "",
        adapter_revision=str(trace.model.get("adapter_revision") or "") if trace else revisions[1],
        backend=spec.backend,
        generation=_json(trace.generation) if trace else "{}",
        status="failed",
        error=message if error_kind(error) != "internal" else f"{type(error).__name__}: {message}",
        error_kind=error_kind(error),
        timings=_json(trace.step_seconds) if trace else "{}",
        metadata=entry.metadata_json(),
        run_id=run_id,
        created_at=_now(),
    )
