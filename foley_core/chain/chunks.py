"""Long videos in chunks: where to split, what each chunk measures, and how chunk scripts merge.

A video longer than `ChainConfig.chunk_seconds` is split at measured shot cuts near the chunk size
(at the limit where no cut is near); each chunk runs the chain as a video of its own (its own frames,
windows and event budget, times from its start) and the chunk scripts merge into one script: times
offset, events renumbered, an ambience bed that continues across a boundary made one cue, and a cue
that both chunks wrote at their common boundary kept once. Pure functions, no model, no decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from v2t_foley.foley_core.errors import FoleyError
from v2t_foley.foley_core.proposals.base import Proposal, ProposalSet
from v2t_foley.foley_core.schema.events import Event, EventReasoning
from v2t_foley.foley_core.schema.script import TRACKS, Cue, FoleyScript, normalize_track, validate_script

NEAR = 0.5  # a cut counts as near the chunk size when it lies in the last half of the chunk
EDGE_S = 0.05  # cues this close to a boundary touch it


class ChunkError(FoleyError):
    """One chunk of a long video failed: the video fails with the chunk named (`cause` is the reason)."""

    def __init__(self, index: int, start: float, end: float, cause: BaseException) -> None:
        super().__init__(f"chunk {index} ({start:.2f}-{end:.2f} s) failed: {cause}")
        self.index, self.start, self.end, self.cause = index, start, end, cause


def chunk_spans(
    duration: float, frame_times: np.ndarray, cuts: list[float], chunk_seconds: float | None
) -> list[tuple[float, float]]:
    """[(start, end)] covering [0, duration]: one span when the video fits in a chunk.

    Each boundary is the latest cut in the last half of the chunk, else the frame at the chunk's
    limit; when less than two chunks remain, the rest is split in two near its middle, so no chunk is
    a sliver. Boundaries are frame times, so every frame lies in exactly one chunk.
    """
    if not chunk_seconds or chunk_seconds <= 0 or duration <= chunk_seconds + 1e-6:
        return [(0.0, duration)]
    times = np.asarray(frame_times, dtype=float)
    cuts = sorted(cuts)
    spans: list[tuple[float, float]] = []
    start = 0.0
    while duration - start > chunk_seconds + 1e-6:
        rest = duration - start
        target = chunk_seconds if rest >= 2 * chunk_seconds else rest / 2
        limit = start + chunk_seconds
        near = [c for c in cuts if start + NEAR * target <= c <= limit + 1e-6]
        if rest < 2 * chunk_seconds:  # two chunks left: the cut nearest the middle
            near = sorted(near, key=lambda c: abs(c - (start + target)))[:1]
        end = near[-1] if near else _frame_time(times, start + target)
        if end <= start + 1e-6:  # fewer frames than chunks: nothing left to split
            break
        spans.append((start, end))
        start = end
    spans.append((start, duration))
    return spans


def _frame_time(times: np.ndarray, t: float) -> float:
    """The start of the frame on screen at time t."""
    index = int(max(0, np.searchsorted(times, t + 1e-9, side="right") - 1))
    return round(float(times[index]), 6)


def slice_proposals(proposals: ProposalSet, start: float, end: float) -> ProposalSet:
    """What was measured in [start, end), in the chunk's own time (from `start`)."""

    def instants(found: list[Proposal]) -> list[Proposal]:
        return [_shift(p, p.start, p.end, start) for p in found if start - 1e-9 <= p.start < end - 1e-9]

    def spans(found: list[Proposal]) -> list[Proposal]:
        kept = []
        for p in found:
            a, b = max(p.start, start), min(p.end, end)
            if b > a or (p.start == p.end and start - 1e-9 <= p.start < end - 1e-9):
                kept.append(_shift(p, a, b, start))
        return kept

    return ProposalSet(
        duration=round(end - start, 6),
        cuts=[c for c in instants(proposals.cuts) if c.start > 1e-9],  # a chunk starting at a cut: its 0
        motion=spans(proposals.motion),
        onsets=instants(proposals.onsets),
        speech=spans(proposals.speech),
    )


def _shift(p: Proposal, a: float, b: float, by: float) -> Proposal:
    return p.model_copy(update={"start": round(a - by, 4), "end": round(b - by, 4)})


@dataclass
class ChunkPart:
    """One chunk's outcome, in the chunk's own time."""

    index: int
    start: float  # seconds in the whole video
    end: float
    script: FoleyScript | None  # None: the chunk failed
    events: list[Event] = field(default_factory=list)
    reasoning: list[EventReasoning] = field(default_factory=list)


@dataclass
class Merged:
    script: FoleyScript
    events: list[Event]
    reasoning: list[EventReasoning]
    notes: list[str]
    event_base: list[int]  # the merged index of each chunk's event 0


def merge_chunks(parts: list[ChunkPart], duration: float, cuts: list[float] | None = None) -> Merged:
    """One script from the chunks' scripts (failed chunks left out): times offset by the chunk's start,
    events renumbered in order, and across each boundary between two chunks that both ran:
    an ambience bed ending at the boundary and one starting there are one cue when the boundary is no
    cut (the same shot goes on) or both say the same; any other cue both chunks wrote at the boundary
    (same track, same words) is kept once, spanning both."""
    cut_set = [round(c, 3) for c in cuts or []]
    events: list[Event] = []
    reasoning: list[EventReasoning] = []
    notes: list[str] = []
    tracks: dict[str, list[Cue]] = {name: [] for name in TRACKS}
    bases: list[int] = []
    previous: ChunkPart | None = None
    for part in parts:
        base = len(events)
        bases.append(base)
        if part.script is None:
            previous = None
            continue
        offset = part.start
        events += [
            e.model_copy(
                update={
                    "index": base + e.index,
                    "start": round(e.start + offset, 4),
                    "end": round(e.end + offset, 4),
                    "onset": None if e.onset is None else round(e.onset + offset, 4),
                }
            )
            for e in part.events
        ]
        reasoning += [r.model_copy(update={"event": base + r.event}) for r in part.reasoning]
        joined = previous is not None and abs(previous.end - part.start) < 1e-6
        at_cut = any(abs(part.start - c) <= 1e-3 for c in cut_set)
        for name in TRACKS:
            incoming = [
                Cue.at(
                    cue.start + offset,
                    min(cue.end + offset, duration),
                    cue.description,
                    None if cue.event is None else base + cue.event,
                )
                for cue in part.script.track(name)
            ]
            if joined:
                incoming = _join_boundary(name, tracks[name], incoming, part.start, at_cut, notes)
            tracks[name] += incoming
        previous = part
    merged = {name: normalize_track(cues) for name, cues in tracks.items()}
    script = validate_script(FoleyScript(**merged), duration)
    return Merged(script, events, reasoning, notes, bases)


def _same(a: Cue, b: Cue) -> bool:
    return " ".join(a.description.lower().split()) == " ".join(b.description.lower().split())


def _join_boundary(
    track: str, before: list[Cue], after: list[Cue], boundary: float, at_cut: bool, notes: list[str]
) -> list[Cue]:
    """Merge cues of `after` that start at `boundary` into cues of `before` that end there."""
    left = [k for k, c in enumerate(before) if abs(c.end - boundary) <= EDGE_S]
    kept = []
    for cue in after:
        if abs(cue.start - boundary) > EDGE_S:
            kept.append(cue)
            continue
        bed = track == "ambience" and not at_cut
        match = next((k for k in left if bed or _same(before[k], cue)), None)
        if match is None:
            kept.append(cue)
            continue
        first = before[match]
        before[match] = Cue.at(first.start, max(first.end, cue.end), first.description, first.event)
        left.remove(match)
        what = "ambience continues" if bed and not _same(first, cue) else "same cue on both sides"
        notes.append(f"{track}: merged across the chunk boundary at {boundary:.2f} s ({what})")
    return kept
