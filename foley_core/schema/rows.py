"""Dataset rows: one per (video, prompt-set version, model), `ok` or `failed`.

Nested data (events, script, trace, generation parameters, timings, metadata) is stored as JSON
strings: empty lists would otherwise infer `null` types and shards would stop concatenating.
Every shard is written with `FEATURES`, so all shards share one schema.
"""

from __future__ import annotations

from typing import Literal

import datasets
from pydantic import BaseModel, ConfigDict

from v2t_foley.foley_core.backends.provenance import join_revisions

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
        "events": datasets.Value("string"),
        "script": datasets.Value("string"),
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
    events: str = "[]"  # JSON: the chain's events with their reasoning
    script: str = ""  # JSON: the foley script in the seed format plus start/end/event ("" when failed)
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
