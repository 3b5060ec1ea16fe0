"""Bounded JSON Schemas the model decodes into, one per chain step, and the answers they parse to.

Every string has a maxLength, every array a maxItems and every number a range, so the longest output
the grammar allows is finite (`max_output_bytes`). With whitespace forbidden by the decoder, generation
under the grammar always finishes within that many tokens: even a random-weight model emits valid JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from v2t_foley.foley_core.schema.script import TRACKS


@dataclass(frozen=True)
class SchemaLimits:
    """How much a model may say in one answer. Bounds decoding time and output size."""

    max_events: int = 8  # events the identify step may list
    max_sounds: int = 6  # sounds the reason step may list per event
    max_cues_per_track: int = 8  # cues per track in the script
    max_text_chars: int = 160  # characters in a description or event summary
    max_field_chars: int = 80  # characters in main object / action / context


def _text(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_chars}


def _seconds(duration: float) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": math.ceil(duration * 100) / 100}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def identify_schema(duration: float, limits: SchemaLimits) -> dict[str, Any]:
    event = _object(
        {"start": _seconds(duration), "end": _seconds(duration), "what": _text(limits.max_text_chars)}
    )
    # At least one event: every clip has something to hear, and the later steps need an event to work on.
    events = {"type": "array", "items": event, "minItems": 1, "maxItems": limits.max_events}
    return _object({"events": events})


def describe_schema(limits: SchemaLimits) -> dict[str, Any]:
    return _object({"what": _text(limits.max_text_chars)})


def reason_schema(limits: SchemaLimits) -> dict[str, Any]:
    field = _text(limits.max_field_chars)
    sounds = {
        "type": "array",
        "items": _text(limits.max_text_chars),
        "minItems": 1,
        "maxItems": limits.max_sounds,
    }
    return _object({"main_object": field, "action": field, "context": field, "sounds": sounds})


def synthesize_schema(duration: float, n_events: int, limits: SchemaLimits) -> dict[str, Any]:
    cue = _object(
        {
            # -1 means "not tied to one event" (ambience beds, say)
            "event": {"type": "integer", "minimum": -1, "maximum": max(n_events - 1, -1)},
            "start": _seconds(duration),
            "end": _seconds(duration),
            "description": _text(limits.max_text_chars),
        }
    )
    track = {"type": "array", "items": cue, "maxItems": limits.max_cues_per_track}
    return _object({name: track for name in TRACKS})


def simple_schema(duration: float, limits: SchemaLimits) -> dict[str, Any]:
    """The one-pass script an adapter writes: the four tracks, cues without event links."""
    cue = _object(
        {"start": _seconds(duration), "end": _seconds(duration), "description": _text(limits.max_text_chars)}
    )
    track = {"type": "array", "items": cue, "maxItems": limits.max_cues_per_track}
    return _object({name: track for name in TRACKS})


class IdentifiedEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: float
    end: float
    what: str = Field(min_length=1)


class IdentifyAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[IdentifiedEvent] = Field(min_length=1)


class DescribeAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    what: str = Field(min_length=1)


class ReasonAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    main_object: str = Field(min_length=1)
    action: str = Field(min_length=1)
    context: str = Field(min_length=1)
    sounds: list[str] = Field(min_length=1)


class DraftCue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: int = -1
    start: float
    end: float
    description: str = Field(min_length=1)


class SynthesisAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    foley: list[DraftCue] = Field(default_factory=list)
    fx: list[DraftCue] = Field(default_factory=list)
    ambience: list[DraftCue] = Field(default_factory=list)
    dialogue: list[DraftCue] = Field(default_factory=list)


def max_output_bytes(schema: dict[str, Any]) -> int:
    """An upper bound on the UTF-8 size of compact JSON (no whitespace) valid under `schema`.

    Raises ValueError for an unbounded schema (a string without maxLength, an array without maxItems,
    a number without a range): such a schema cannot promise that decoding terminates.
    """
    kind = schema.get("type")
    if "enum" in schema:
        return max(len(json.dumps(v, ensure_ascii=False).encode()) for v in schema["enum"])
    if kind == "object":
        props = schema.get("properties", {})
        keys = sum(len(json.dumps(k).encode()) + 1 for k in props)  # "key":
        values = sum(max_output_bytes(v) for v in props.values())
        return 2 + keys + values + max(len(props) - 1, 0)
    if kind == "array":
        if "maxItems" not in schema:
            raise ValueError("array without maxItems")
        n = schema["maxItems"]
        return 2 + n * max_output_bytes(schema["items"]) + max(n - 1, 0)
    if kind == "string":
        if "maxLength" not in schema:
            raise ValueError("string without maxLength")
        return 2 + 4 * schema["maxLength"]  # a character is at most 4 UTF-8 bytes; no escapes allowed
    if kind == "integer":
        lo, hi = _bounds(schema)
        return max(len(str(int(lo))), len(str(int(hi))))
    if kind == "number":
        lo, hi = _bounds(schema)
        return max(len(str(int(lo))), len(str(int(hi)))) + 1 + 6  # xgrammar allows 6 decimals
    if kind == "boolean":
        return 5
    if kind == "null":
        return 4
    raise ValueError(f"unsupported schema node: {schema}")


def _bounds(schema: dict[str, Any]) -> tuple[float, float]:
    if "minimum" not in schema or "maximum" not in schema:
        raise ValueError("number without minimum and maximum")
    return schema["minimum"], schema["maximum"]
