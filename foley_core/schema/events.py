"""What the chain learns about a video before it writes the script: events and their reasoning."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    """One audio-visual event: a time window and what happens in it."""

    model_config = ConfigDict(extra="forbid")

    index: int  # position in the chain trace; cues point here
    start: float = Field(ge=0)  # seconds from the first frame
    end: float = Field(ge=0)  # seconds, >= start
    summary: str  # one line: what happens
    timing: Literal["model", "measured"] = "model"  # who decided the window
    onset: float | None = None  # a measured onset inside the window, when there is one
    kind: str = ""  # what measurement found (motion, audio_onset, motion+audio, speech); "" from the model


class EventReasoning(BaseModel):
    """The sound designer's four questions about one event."""

    model_config = ConfigDict(extra="forbid")

    event: int  # Event.index
    main_object: str  # what makes the sound
    action: str  # what it does
    context: str  # where it happens: environment, surfaces, space
    sounds: list[str]  # every sound that results
