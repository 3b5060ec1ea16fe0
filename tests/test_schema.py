"""The script format: timestamps, cue rules, whole-script validation, and the decoding bound."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from v2t_foley.foley_core.schema import (
    Cue,
    FoleyScript,
    SchemaLimits,
    ScriptValidationError,
    format_timestamp,
    identify_schema,
    max_output_bytes,
    normalize_track,
    parse_timestamp,
    reason_schema,
    synthesize_schema,
    validate_script,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "00:00"),
        (5.0, "00:05"),
        (5.999, "00:05"),
        (59.9999, "00:59"),
        (61, "01:01"),
        (3599.5, "59:59"),
        (3600, "01:00:00"),
        (3725.2, "01:02:05"),
        (36000, "10:00:00"),
    ],
)
def test_timestamp_format_and_parse(seconds, text):
    assert format_timestamp(seconds) == text
    assert parse_timestamp(text) == int(seconds)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_timestamp_rejects_impossible_times(bad):
    with pytest.raises(ValueError):
        format_timestamp(bad)


@pytest.mark.parametrize("bad", ["5", "00:60", "1:2:3:4", "aa:bb", ""])
def test_parse_rejects_malformed_timestamps(bad):
    with pytest.raises(ValueError):
        parse_timestamp(bad)


def test_cue_rules():
    cue = Cue.at(5.0, 6.2, "  A key turns in a lock. ", event=3)
    assert (cue.timestamp, cue.description, cue.event) == ("00:05", "A key turns in a lock.", 3)
    with pytest.raises(ValidationError, match="before it starts"):
        Cue(timestamp="00:05", start=5.0, end=4.0, description="x")
    with pytest.raises(ValidationError, match="does not match start"):
        Cue(timestamp="00:04", start=5.0, end=6.0, description="x")
    with pytest.raises(ValidationError):
        Cue(timestamp="00:05", start=5.0, end=6.0, description="   ")
    with pytest.raises(ValidationError):
        Cue(timestamp="00:05", start=5.0, end=6.0, description="x", loudness=3)  # extra fields forbidden


def test_script_needs_exactly_the_four_tracks():
    with pytest.raises(ValidationError):
        FoleyScript.model_validate({"foley": [], "music": []})
    assert FoleyScript().model_dump() == {"foley": [], "fx": [], "ambience": [], "dialogue": []}


def test_validate_script_lists_each_problem():
    late = Cue.at(9.0, 12.0, "A door slams.")
    early = Cue.at(1.0, 2.0, "A step.")
    script = FoleyScript(fx=[late, early], foley=[early, early])
    with pytest.raises(ScriptValidationError) as caught:
        validate_script(script, duration=10.0)
    problems = caught.value.problems
    assert any("after the video" in p for p in problems)
    assert any("fx cues are not sorted" in p for p in problems)
    assert any("foley has duplicate" in p for p in problems)


def test_seed_format_keeps_the_seed_fields():
    script = FoleyScript(foley=[Cue.at(5.0, 6.2, "A key turns in a lock.", event=0)])
    seed = script.seed_json()
    assert seed["foley"] == [{"timestamp": "00:05", "description": "A key turns in a lock."}]
    assert set(seed) == {"foley", "fx", "ambience", "dialogue"}


def test_normalize_sorts_and_merges_exact_duplicates():
    a = Cue.at(2.0, 3.0, "Glass clinks.")
    b = Cue.at(2.0, 3.0, "glass   CLINKS.")
    c = Cue.at(0.5, 1.0, "Footstep.")
    merged = normalize_track([a, b, c])
    assert [cue.start for cue in merged] == [0.5, 2.0]


def _largest_instance(schema: dict) -> object:
    """The longest value a schema allows (4-byte characters, max items, widest numbers)."""
    kind = schema["type"]
    if kind == "object":
        return {k: _largest_instance(v) for k, v in schema["properties"].items()}
    if kind == "array":
        return [_largest_instance(schema["items"])] * schema["maxItems"]
    if kind == "string":
        return "\U0001f50a" * schema["maxLength"]
    if kind == "integer":
        return (
            schema["minimum"]
            if len(str(schema["minimum"])) > len(str(schema["maximum"]))
            else schema["maximum"]
        )
    if kind == "number":
        return float(f"{int(schema['maximum']) - 1 if schema['maximum'] >= 1 else 0}.123456")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "schema",
    [
        identify_schema(125.0, SchemaLimits()),
        reason_schema(SchemaLimits()),
        synthesize_schema(3700.0, 12, SchemaLimits(max_cues_per_track=3)),
    ],
)
def test_decoding_bound_covers_the_largest_answer(schema):
    largest = json.dumps(_largest_instance(schema), ensure_ascii=False, separators=(",", ":"))
    assert len(largest.encode()) <= max_output_bytes(schema)


@pytest.mark.parametrize(
    "schema",
    [{"type": "string"}, {"type": "array", "items": {"type": "null"}}, {"type": "number", "minimum": 0}],
)
def test_unbounded_schemas_are_refused(schema):
    with pytest.raises(ValueError):
        max_output_bytes(schema)


def test_time_bounds_follow_the_video():
    schema = identify_schema(12.345, SchemaLimits())
    start = schema["properties"]["events"]["items"]["properties"]["start"]
    assert (start["minimum"], start["maximum"]) == (0, 12.35)
