"""Shrink a step's answer bounds until its longest possible answer fits the model's context.

A question costs its prompt, its video and its answer; under a bounded schema the answer is at most
`max_output_bytes(schema)` tokens plus EOS (a token is at least one byte). When the model's context
(`VideoLLM.answer_room`) cannot hold that, the step's `SchemaLimits` are cut, in a fixed order, until it
can: long texts first down to a comfortable length, then the number of items, then texts again down to
a floor, then items down to one. The cuts are returned as one note for the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from v2t_foley.foley_core.schema.decoding import SchemaLimits

# The limits each step's schema and prompt depend on: (count fields, text fields).
STEP_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "identify": (("max_events",), ("max_text_chars",)),
    "describe": ((), ("max_text_chars",)),
    "reason": (("max_sounds",), ("max_text_chars", "max_field_chars")),
    "synthesize": (("max_cues_per_track",), ("max_text_chars",)),
    "simple": (("max_cues_per_track",), ("max_text_chars",)),
}
COMFORT = {
    "max_text_chars": 80,
    "max_field_chars": 40,
    "max_events": 4,
    "max_sounds": 3,
    "max_cues_per_track": 3,
}
FLOOR = {
    "max_text_chars": 24,
    "max_field_chars": 16,
    "max_events": 1,
    "max_sounds": 1,
    "max_cues_per_track": 1,
}


class ContextTooSmall(ValueError):
    """Even the smallest answer bounds do not fit the model's context (the prompt alone fills it)."""


def _shrink(limits: SchemaLimits, step: str, lowest: str = "floor") -> SchemaLimits | None:
    """The next, smaller limits for `step`, or None when every field is at its floor (`lowest`
    "comfort": stop at the comfortable tier)."""
    counts, texts = STEP_FIELDS[step]
    for floors in (COMFORT, FLOOR) if lowest == "floor" else (COMFORT,):
        for name in texts:
            value = getattr(limits, name)
            if value > floors[name]:
                return replace(limits, **{name: max(floors[name], value * 4 // 5)})
        for name in counts:
            value = getattr(limits, name)
            if value > floors[name]:
                return replace(limits, **{name: value - 1})
    return None


def fit_limits(
    step: str,
    limits: SchemaLimits,
    cost: Callable[[SchemaLimits], tuple[int, int | None]],
    lowest: str = "floor",
) -> tuple[SchemaLimits, str | None]:
    """The largest limits on the ladder whose answer fits, and a note naming the cuts (None: no cut).

    `cost(limits)` gives (the answer's token bound with EOS, the room the context leaves for it under
    these limits' prompt; None when the backend knows no limit). `lowest="comfort"` never cuts below
    the comfortable tier. Raises ContextTooSmall.
    """
    fitted = limits
    need, room = cost(fitted)
    first_room = room
    while room is not None and need > room:
        smaller = _shrink(fitted, step, lowest)
        if smaller is None:
            raise ContextTooSmall(
                f"{step}: the model's context leaves {room} tokens for the answer; even the smallest "
                f"bounds need {need}"
            )
        fitted = smaller
        need, room = cost(fitted)
    if fitted == limits:
        return limits, None
    cuts = ", ".join(
        f"{name} {getattr(limits, name)}->{getattr(fitted, name)}"
        for name in (*STEP_FIELDS[step][0], *STEP_FIELDS[step][1])
        if getattr(limits, name) != getattr(fitted, name)
    )
    return fitted, (
        f"{step}: answer bounds cut to fit the model's context ({first_room} tokens left for the answer "
        f"after the prompt and video; the longest answer now takes {need}): {cuts}"
    )
