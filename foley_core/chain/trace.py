"""The chain trace: everything the chain saw, asked, got back and decided, for the dataset row."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from v2t_foley.foley_core.schema.events import Event, EventReasoning


class StepCall(BaseModel):
    """One question to the model (and its repair, when the first answer was unusable)."""

    step: str  # identify / reason / synthesize
    item: int | None = None  # event index for per-event steps
    frame_times: list[float]  # times of the frames the model saw
    prompt: str  # the rendered prompt
    raw: str  # the model's text
    answer: dict[str, Any] | None = None  # the parsed answer, None when unusable
    error: str | None = None  # why the first answer was unusable
    repair_prompt: str | None = None  # the repair question, when one was asked
    repair_raw: str | None = None  # the repaired answer's text
    constrained: bool = False  # decoded under a JSON Schema
    new_tokens: int = 0  # tokens generated (both attempts)
    seconds: float = 0.0  # wall time of this call's share of the batch


class ChainTrace(BaseModel):
    """The full record of one chain run over one video."""

    video_uri: str
    sha256: str
    duration: float
    prompt_version: str  # version of the whole prompt set
    step_versions: dict[str, str]  # version of each step's template
    model: dict[str, str | None]  # backend, model_id, revision, adapter
    generation: dict[str, Any]  # generation parameters
    timing: str = "model"  # who placed cue times: the model, or measurement
    frame_times: list[float] = Field(default_factory=list)  # frames shown for the whole-clip questions
    events: list[Event] = Field(default_factory=list)
    reasoning: list[EventReasoning] = Field(default_factory=list)
    calls: list[StepCall] = Field(default_factory=list)
    proposals: dict[str, Any] | None = None  # measured cuts, motion, onsets, speech (measured timing)
    notes: list[str] = Field(default_factory=list)  # clamps, drops and merges, one line each
    step_seconds: dict[str, float] = Field(default_factory=dict)  # wall time per step
    # a long video run in chunks: one entry per chunk (index, start, end; its frames, notes, timings and
    # proposals in its own time; `calls` and `events`: its [first, last) in the lists above; `error`
    # when it failed); None for a video run whole
    chunks: list[dict[str, Any]] | None = None
