"""Data shapes: the foley script, chain events, decoding schemas, dataset rows."""

from v2t_foley.foley_core.schema.decoding import (
    IdentifyAnswer,
    ReasonAnswer,
    SchemaLimits,
    SynthesisAnswer,
    identify_schema,
    max_output_bytes,
    reason_schema,
    simple_schema,
    synthesize_schema,
)
from v2t_foley.foley_core.schema.events import Event, EventReasoning
from v2t_foley.foley_core.schema.script import (
    TRACKS,
    Cue,
    FoleyScript,
    ScriptValidationError,
    check_script,
    format_timestamp,
    normalize_track,
    parse_timestamp,
    validate_script,
)

__all__ = [
    "TRACKS",
    "Cue",
    "Event",
    "EventReasoning",
    "FoleyScript",
    "IdentifyAnswer",
    "ReasonAnswer",
    "SchemaLimits",
    "ScriptValidationError",
    "SynthesisAnswer",
    "check_script",
    "format_timestamp",
    "identify_schema",
    "max_output_bytes",
    "normalize_track",
    "parse_timestamp",
    "reason_schema",
    "simple_schema",
    "synthesize_schema",
    "validate_script",
]
