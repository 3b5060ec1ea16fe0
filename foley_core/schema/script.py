"""The foley script: four tracks of time-sorted cues, seed-compatible.

The seed format is `{"foley": [{"timestamp": "00:05", "description": "..."}], "fx": [...],
"ambience": [...], "dialogue": [...]}`. Cues here keep those two fields and add measured `start`/`end`
seconds and the `event` index into the chain trace.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TRACKS: tuple[str, ...] = ("foley", "fx", "ambience", "dialogue")
Track = Literal["foley", "fx", "ambience", "dialogue"]
_TIMESTAMP = re.compile(r"^(?:(\d+):)?([0-5]\d):([0-5]\d)$")


def format_timestamp(seconds: float) -> str:
    """`MM:SS` of the whole second `seconds` falls in, or `HH:MM:SS` from one hour on."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"timestamp of a negative or non-finite time: {seconds}")
    total = math.floor(seconds + 1e-9)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def parse_timestamp(text: str) -> int:
    """Seconds in a `MM:SS` or `HH:MM:SS` timestamp."""
    match = _TIMESTAMP.match(text.strip())
    if not match:
        raise ValueError(f"not a MM:SS or HH:MM:SS timestamp: {text!r}")
    hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


class Cue(BaseModel):
    """One sound on one track."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp: str  # MM:SS (HH:MM:SS past an hour) of `start`, the seed's field
    start: float = Field(ge=0)  # seconds from the first frame
    end: float = Field(ge=0)  # seconds; start <= end
    description: str = Field(min_length=1)  # what is heard, one sentence
    event: int | None = None  # index of the event in the chain trace; None when not tied to one

    @model_validator(mode="after")
    def _consistent(self) -> Cue:
        if self.end < self.start:
            raise ValueError(f"cue ends ({self.end}) before it starts ({self.start})")
        if not self.description.strip():
            raise ValueError("cue description is blank")
        if self.timestamp != format_timestamp(self.start):
            raise ValueError(
                f"timestamp {self.timestamp!r} does not match start {self.start} "
                f"(expected {format_timestamp(self.start)!r})"
            )
        return self

    @classmethod
    def at(cls, start: float, end: float, description: str, event: int | None = None) -> Cue:
        """A cue whose timestamp is derived from `start`."""
        start, end = round(start, 3), round(end, 3)
        return cls(
            timestamp=format_timestamp(start),
            start=start,
            end=max(start, end),
            description=description.strip(),
            event=event,
        )


class FoleyScript(BaseModel):
    """Exactly the four tracks, each a list of cues sorted by start time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    foley: list[Cue] = Field(default_factory=list)  # sounds of bodies and props: steps, cloth, handling
    fx: list[Cue] = Field(default_factory=list)  # designed or mechanical sounds: impacts, engines, doors
    ambience: list[Cue] = Field(default_factory=list)  # room tone and environment beds
    dialogue: list[Cue] = Field(default_factory=list)  # speech, vocal sounds

    def track(self, name: str) -> list[Cue]:
        return getattr(self, name)

    def cues(self) -> list[tuple[str, Cue]]:
        return [(name, cue) for name in TRACKS for cue in self.track(name)]

    def seed_json(self) -> dict[str, list[dict[str, str]]]:
        """The seed's format alone: timestamp and description per cue."""
        return {
            name: [{"timestamp": c.timestamp, "description": c.description} for c in self.track(name)]
            for name in TRACKS
        }


class ScriptValidationError(ValueError):
    """A script breaks the rules in `problems` (one readable line each)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def check_script(script: FoleyScript, duration: float) -> list[str]:
    """Every rule a finished script must keep, as readable problems (empty when valid)."""
    problems: list[str] = []
    for name in TRACKS:
        cues = script.track(name)
        for k, cue in enumerate(cues):
            if cue.end > duration + 1e-3:  # cue times are rounded to milliseconds
                problems.append(f"{name}[{k}] ends at {cue.end} s, after the video ({duration} s)")
        starts = [c.start for c in cues]
        if starts != sorted(starts):
            problems.append(f"{name} cues are not sorted by start time")
        keys = [(c.start, c.end, c.description) for c in cues]
        if len(set(keys)) != len(keys):
            problems.append(f"{name} has duplicate cues")
    return problems


def validate_script(script: FoleyScript | dict, duration: float) -> FoleyScript:
    """Parse (if needed) and check a script; raise ScriptValidationError listing what is wrong."""
    parsed = script if isinstance(script, FoleyScript) else FoleyScript.model_validate(script)
    problems = check_script(parsed, duration)
    if problems:
        raise ScriptValidationError(problems)
    return parsed


def normalize_track(cues: list[Cue]) -> list[Cue]:
    """Sort by (start, end) and merge exact duplicates (same times, same text ignoring case/space)."""
    seen: dict[tuple[float, float, str], Cue] = {}
    for cue in sorted(cues, key=lambda c: (c.start, c.end, c.description)):
        key = (cue.start, cue.end, " ".join(cue.description.lower().split()))
        seen.setdefault(key, cue)
    return list(seen.values())
