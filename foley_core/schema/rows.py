"""Dataset rows: one per (video, prompt-set version, model), `ok` or `failed`.

Store format 3: `script` is a struct of four lists of cue structs and `events` a list of event structs
(each with its `reasoning` struct), so `load_dataset` gives Python dicts and SQL engines read cues
without JSON parsing (`select len(script.foley) from 'data/*.parquet'`). The free-form parts (trace,
generation parameters, timings, metadata) stay JSON strings. Every shard is written with `FEATURES`,
so all shards share one schema; empty lists keep their types.

Stores written before format 3 held `script` and `events` as JSON strings: `normalize_row` turns such a
row into the nested layout (the store applies it to every row it reads), and `row_script` /
`row_events` read either layout.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import datasets
from pydantic import BaseModel, ConfigDict, field_validator

from v2t_foley.foley_core.backends.provenance import join_revisions
from v2t_foley.foley_core.schema.script import TRACKS, FoleyScript

CUE = {
    "timestamp": datasets.Value("string"),  # MM:SS of start (the seed's field)
    "start": datasets.Value("float64"),  # seconds
    "end": datasets.Value("float64"),  # seconds
    "description": datasets.Value("string"),  # what is heard
    "event": datasets.Value("int32"),  # index into `events`; null when not tied to one
}
SCRIPT = {track: datasets.List(CUE) for track in TRACKS}
REASONING = {
    "main_object": datasets.Value("string"),
    "action": datasets.Value("string"),
    "context": datasets.Value("string"),
    "sounds": datasets.List(datasets.Value("string")),
}
EVENT = {
    "index": datasets.Value("int32"),
    "start": datasets.Value("float64"),
    "end": datasets.Value("float64"),
    "summary": datasets.Value("string"),
    "timing": datasets.Value("string"),  # model / measured
    "onset": datasets.Value("float64"),  # null when none was measured
    "kind": datasets.Value("string"),
    "reasoning": REASONING,  # null when the chain stopped before reasoning about the event
}

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "video": datasets.Value("string"),
        "split": datasets.Value("string"),
        "sha256": datasets.Value("string"),
        "duration": datasets.Value("float64"),
        "fps": datasets.Value("float64"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "has_audio": datasets.Value("bool"),
        "events": datasets.List(EVENT),
        "script": SCRIPT,
        "trace": datasets.Value("string"),
        "prompt_version": datasets.Value("string"),
        "model_id": datasets.Value("string"),
        "model_revision": datasets.Value("string"),
        "adapter": datasets.Value("string"),
        "adapter_revision": datasets.Value("string"),
        "backend": datasets.Value("string"),
        "generation": datasets.Value("string"),
        "status": datasets.Value("string"),
        "error": datasets.Value("string"),
        "error_kind": datasets.Value("string"),
        "timings": datasets.Value("string"),
        "metadata": datasets.Value("string"),
        "run_id": datasets.Value("string"),
        "created_at": datasets.Value("string"),
    }
)


class DatasetRow(BaseModel):
    """One row of the dataset. Field order and types match FEATURES."""

    model_config = ConfigDict(extra="forbid")

    id: str  # the manifest's id for the video
    video: str  # the video's URI as the manifest gave it
    split: str  # train / validation / test, from the manifest (default train)
    sha256: str = ""  # content hash ("" when the video could not be read)
    duration: float = 0.0  # seconds
    fps: float = 0.0  # frames per second
    width: int = 0  # pixels
    height: int = 0  # pixels
    has_audio: bool = False  # the file has an audio stream
    events: list[dict[str, Any]] = []  # the chain's events, each with its reasoning (EVENT)
    script: dict[str, Any] | None = None  # the foley script: 4 tracks of cues (SCRIPT); None when failed
    trace: str = ""  # JSON: the full chain trace
    prompt_version: str  # version of the prompt set
    model_id: str  # model id or folder as given
    model_revision: str = ""  # resolved revision: Hub commit or "sha256:..." of a folder ("" when unknown)
    adapter: str = ""  # LoRA adapter path, when one was used
    adapter_revision: str = ""  # "sha256:..." of the adapter's files, when one was used
    backend: str  # transformers / openai
    generation: str = "{}"  # JSON: generation parameters
    status: Literal["ok", "failed"]  # did the video get a valid script
    error: str = ""  # why it failed, in words
    error_kind: str = ""  # machine-readable reason: missing, corrupt, chain, manifest_row, ...
    timings: str = "{}"  # JSON: seconds per step
    metadata: str = "{}"  # JSON: the manifest's extra columns
    run_id: str = ""  # the build run that wrote the row
    created_at: str = ""  # ISO 8601, UTC

    @field_validator("script", mode="before")
    @classmethod
    def _script_nested(cls, value: Any) -> Any:
        return nested_script(value)

    @field_validator("events", mode="before")
    @classmethod
    def _events_nested(cls, value: Any) -> Any:
        return nested_events(value)

    @property
    def model_key(self) -> str:
        """The model plus its adapter: two rows differ in model when either differs."""
        return f"{self.model_id}@{self.adapter}" if self.adapter else self.model_id

    @property
    def revision_key(self) -> str:
        """The weights that wrote the row, comparable with `provenance.revision_key(spec)`."""
        return join_revisions(self.model_revision, self.adapter_revision)

    def done_key(self) -> tuple[str, str, str]:
        """What makes a row 'already done' for a later run: (id, prompt version, model key)."""
        return (self.id, self.prompt_version, self.model_key)


def _project(value: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """`value` with exactly the keys of a struct feature (missing ones None), nested structs too."""
    out = {}
    for name, feature in fields.items():
        item = value.get(name)
        if isinstance(feature, dict) and isinstance(item, dict):
            item = _project(item, feature)
        out[name] = item
    return out


def nested_script(value: Any) -> dict[str, Any] | None:
    """A script column value in the nested layout: from a JSON string (format <= 2), a dict or None."""
    if isinstance(value, FoleyScript):
        value = value.model_dump()
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"a script is a dict of four tracks, not {type(value).__name__}")
    return {track: [_project(dict(cue), CUE) for cue in value.get(track) or []] for track in TRACKS}


def nested_events(value: Any) -> list[dict[str, Any]]:
    """An events column value in the nested layout: from a JSON string (format <= 2), a list or None."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    return [_project(dict(event), EVENT) for event in value or []]


def normalize_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row read from any store format, in the current (nested) layout; the input is not changed."""
    out = dict(row)
    out["script"] = nested_script(row.get("script"))
    out["events"] = nested_events(row.get("events"))
    return out


def row_script(row: dict[str, Any]) -> FoleyScript:
    """The row's script, from either layout. ValueError when the row has none or it is not valid."""
    script = nested_script(row.get("script"))
    if script is None:
        raise ValueError(f"row {row.get('id')!r} has no script ({row.get('status')})")
    return FoleyScript.model_validate(script)


def row_events(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's events (each with its `reasoning` dict or None), from either layout."""
    return nested_events(row.get("events"))
