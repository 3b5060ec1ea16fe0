"""The chain of thought, one function per step: identify -> reason (per event) -> synthesize -> validate.

Each step takes typed inputs and returns a `StepResult`: its value, the model calls it made and the
notes on anything it clamped, dropped or merged. Steps do not sample frames or load models; the
runner (or a Prefect task) hands them a `Clip` and a `VideoLLM`.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from v2t_foley.foley_core.backends.base import GenerationParams, VideoLLM
from v2t_foley.foley_core.chain.ask import Question, ask
from v2t_foley.foley_core.chain.trace import StepCall
from v2t_foley.foley_core.prompts import PromptSet
from v2t_foley.foley_core.proposals.windows import Window
from v2t_foley.foley_core.schema.decoding import (
    DescribeAnswer,
    IdentifyAnswer,
    ReasonAnswer,
    SchemaLimits,
    SynthesisAnswer,
    describe_schema,
    identify_schema,
    reason_schema,
    synthesize_schema,
)
from v2t_foley.foley_core.schema.events import Event, EventReasoning
from v2t_foley.foley_core.schema.script import TRACKS, Cue, FoleyScript, normalize_track, validate_script
from v2t_foley.foley_core.video.reader import Frames

T = TypeVar("T")


@dataclass(frozen=True)
class Clip:
    """The model's view of one video: identity, length and the frames of the whole-clip questions."""

    uri: str  # the video's URI
    sha256: str  # content hash
    duration: float  # seconds
    frames: Frames  # frames for questions about the whole clip


@dataclass(frozen=True)
class StepSettings:
    """What every step needs besides its inputs."""

    llm: VideoLLM  # the model
    prompts: PromptSet  # the templates
    params: GenerationParams  # decoding parameters
    limits: SchemaLimits  # answer size bounds
    constrained: bool = True  # decode under JSON Schemas where the backend can


@dataclass
class StepResult(Generic[T]):
    value: T  # the step's output
    calls: list[StepCall] = field(default_factory=list)  # model calls made
    notes: list[str] = field(default_factory=list)  # corrections made to the model's answer
    seconds: float = 0.0  # wall time of the step (set by `timed`)


def timed(run: Callable[[], StepResult[T]]) -> StepResult[T]:
    """Run a step and record its wall time on the result."""
    started = time.perf_counter()
    result = run()
    result.seconds = round(time.perf_counter() - started, 4)
    return result


def merge_results(results: list[StepResult[list[T]]]) -> StepResult[list[T]]:
    """One result from per-item results (the mapped reason task returns one per event)."""
    return StepResult(
        value=[v for r in results for v in r.value],
        calls=[c for r in results for c in r.calls],
        notes=[n for r in results for n in r.notes],
        seconds=round(sum(r.seconds for r in results), 4),
    )


def _seconds(t: float) -> str:
    return f"{t:.2f}"


def clean_text(text: str) -> str:
    """Drop control characters and collapse every run of whitespace into one space."""
    printable = "".join(c if c.isspace() or unicodedata.category(c) != "Cc" else " " for c in text)
    return " ".join(printable.split())


def identify(clip: Clip, s: StepSettings) -> StepResult[list[Event]]:
    """Ask for the clip's audio-visual events with time windows; place them inside the video."""
    prompt = s.prompts.render(
        "identify",
        duration=_seconds(clip.duration),
        frame_times=clip.frames.describe_times(),
        n_frames=len(clip.frames),
        max_events=s.limits.max_events,
    )
    question = Question(
        "identify", None, clip.frames, prompt, identify_schema(clip.duration, s.limits), IdentifyAnswer
    )
    ((answer, call),) = ask(s.llm, [question], s.params, s.prompts, constrained=s.constrained)
    events, notes = place_events(answer, clip.duration)  # type: ignore[arg-type]
    return StepResult(events, [call], notes)


def identify_windows(
    clip: Clip, windows: list[Window], s: StepSettings, frames_for: Callable[[float, float], Frames]
) -> StepResult[list[Event]]:
    """Measured timing: one question per measured window (its own frames), asking only what happens.

    The windows' times are measurement, so the events keep them; the model supplies the summary.
    """
    questions = []
    for k, window in enumerate(windows):
        frames = frames_for(window.start, window.end)
        prompt = s.prompts.render(
            "describe",
            duration=_seconds(clip.duration),
            frame_times=frames.describe_times(),
            n_frames=len(frames),
            window_start=_seconds(window.start),
            window_end=_seconds(window.end),
            cue_kind=window.kind.replace("+", " and ").replace("_", " "),
        )
        questions.append(Question("describe", k, frames, prompt, describe_schema(s.limits), DescribeAnswer))
    if not questions:
        return StepResult([], notes=["no measured event window: only what synthesis adds is in the script"])
    answered = ask(s.llm, questions, s.params, s.prompts, constrained=s.constrained)
    events = [
        Event(
            index=k,
            start=round(w.start, 4),
            end=round(w.end, 4),
            summary=clean_text(answer.what),
            timing="measured",
            onset=round(w.onset, 4),
            kind=w.kind,
        )
        for k, (w, (answer, _call)) in enumerate(zip(windows, answered, strict=True))
    ]
    return StepResult(events, [call for _answer, call in answered])


def place_events(answer: IdentifyAnswer, duration: float) -> tuple[list[Event], list[str]]:
    """Events in time order inside [0, duration]: swapped, clamped or dropped, each with a note."""
    notes: list[str] = []
    placed: list[tuple[float, float, str]] = []
    for k, found in enumerate(answer.events):
        start, end = found.start, found.end
        if start > end:
            notes.append(f"event {k}: start {start} s after end {end} s; swapped")
            start, end = end, start
        if start > duration or end < 0:
            notes.append(f"event {k}: {start}-{end} s lies outside the video (0-{duration} s); dropped")
            continue
        if start < 0:
            notes.append(f"event {k}: start {start} s clamped to 0")
            start = 0.0
        if end > duration:
            notes.append(f"event {k}: end {end} s clamped to the video's end ({duration} s)")
            end = duration
        placed.append((start, end, clean_text(found.what)))
    placed.sort(key=lambda e: (e[0], e[1]))
    events = [Event(index=i, start=a, end=b, summary=what) for i, (a, b, what) in enumerate(placed)]
    return events, notes


def reason(
    clip: Clip,
    events: list[Event],
    s: StepSettings,
    frames_for: Callable[[Event], Frames] | None = None,
) -> StepResult[list[EventReasoning]]:
    """The four questions for every event, asked as one batch.

    `frames_for` picks the frames shown for an event (default: the whole-clip frames).
    """
    questions = []
    for event in events:
        frames = frames_for(event) if frames_for else clip.frames
        prompt = s.prompts.render(
            "reason",
            duration=_seconds(clip.duration),
            frame_times=frames.describe_times(),
            n_frames=len(frames),
            event_start=_seconds(event.start),
            event_end=_seconds(event.end),
            event_summary=event.summary,
            max_sounds=s.limits.max_sounds,
        )
        questions.append(
            Question("reason", event.index, frames, prompt, reason_schema(s.limits), ReasonAnswer)
        )
    if not questions:
        return StepResult([])
    answered = ask(s.llm, questions, s.params, s.prompts, constrained=s.constrained)
    reasoning = [
        EventReasoning(
            event=event.index,
            main_object=clean_text(answer.main_object),
            action=clean_text(answer.action),
            context=clean_text(answer.context),
            sounds=[clean_text(sound) for sound in answer.sounds],
        )
        for event, (answer, _call) in zip(events, answered, strict=True)
    ]
    return StepResult(reasoning, [call for _answer, call in answered])


def events_json(events: list[Event], reasoning: list[EventReasoning]) -> str:
    """The events and their reasoning as the compact JSON the synthesize prompt quotes."""
    notes = {r.event: r for r in reasoning}
    rows = []
    for event in events:
        row = {
            "event": event.index,
            "start": round(event.start, 2),
            "end": round(event.end, 2),
            "what": event.summary,
        }
        if event.index in notes:
            row.update(notes[event.index].model_dump(exclude={"event"}))
        rows.append(row)
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def synthesize(
    clip: Clip, events: list[Event], reasoning: list[EventReasoning], s: StepSettings
) -> StepResult[SynthesisAnswer]:
    """Ask for the four-track script, given every event and its reasoning."""
    prompt = s.prompts.render(
        "synthesize",
        duration=_seconds(clip.duration),
        frame_times=clip.frames.describe_times(),
        n_frames=len(clip.frames),
        events_json=events_json(events, reasoning),
        max_cues=s.limits.max_cues_per_track,
    )
    schema = synthesize_schema(clip.duration, len(events), s.limits)
    question = Question("synthesize", None, clip.frames, prompt, schema, SynthesisAnswer)
    ((answer, call),) = ask(s.llm, [question], s.params, s.prompts, constrained=s.constrained)
    return StepResult(answer, [call])  # type: ignore[arg-type]


def _onset(event: Event) -> float:
    return event.onset if event.onset is not None else event.start


def _span_at(spans: list[tuple[float, float]], t: float) -> tuple[float, float] | None:
    """The span containing t, else the nearest one."""
    if not spans:
        return None
    inside = [span for span in spans if span[0] - 1e-6 <= t < span[1]]
    return inside[0] if inside else min(spans, key=lambda span: min(abs(span[0] - t), abs(span[1] - t)))


def validate(
    draft: SynthesisAnswer,
    events: list[Event],
    duration: float,
    timing: str = "model",
    shots: list[tuple[float, float]] | None = None,
    speech: list[tuple[float, float]] | None = None,
) -> StepResult[FoleyScript]:
    """Turn the draft into a valid script: link events, clamp times, sort, merge duplicates.

    With timing "measured", measurement places the cues and the model describes them: a cue tied to an
    event takes that event's window, starting at its measured onset; an ambience cue spans the shot it
    falls in (`shots`); a dialogue cue takes the nearest speech segment (`speech`), when there is one;
    any other cue the model did not tie to an event goes on the nearest measured event.
    """
    notes: list[str] = []
    by_index = {e.index: e for e in events}
    tracks: dict[str, list[Cue]] = {}
    for name in TRACKS:
        cues: list[Cue] = []
        for k, draft_cue in enumerate(getattr(draft, name)):
            where = f"{name}[{k}]"
            event = by_index.get(draft_cue.event)
            if draft_cue.event != -1 and event is None:
                notes.append(f"{where}: unknown event {draft_cue.event}; unlinked")
            start, end = draft_cue.start, draft_cue.end
            if timing == "measured":
                # ambience goes to its shot, dialogue to speech; nothing else may keep a guessed time
                unplaced = event is None and name != "ambience" and not (name == "dialogue" and speech)
                if unplaced and events:  # a time only the model gave: put the cue on the nearest measurement
                    event = min(events, key=lambda e: abs(_onset(e) - start))
                    notes.append(
                        f"{where}: no event named; placed on the nearest measured event ({event.index})"
                    )
                anchor = start if event is None else _onset(event)
                if name == "ambience" and (shot := _span_at(shots or [], anchor)):
                    start, end = shot  # a bed spans its shot
                elif name == "dialogue" and (segment := _span_at(speech or [], anchor)):
                    start, end = segment  # speech is where the voice activity detector heard it
                elif event is not None:
                    start, end = anchor, event.end
            if start > end:
                notes.append(f"{where}: start {start} s after end {end} s; swapped")
                start, end = end, start
            if start > duration or end < 0:
                notes.append(f"{where}: {start}-{end} s lies outside the video; dropped")
                continue
            start, end = max(start, 0.0), min(end, duration)
            if (start, end) != (draft_cue.start, draft_cue.end) and timing != "measured":
                notes.append(f"{where}: clamped to {start}-{end} s")
            text = clean_text(draft_cue.description)
            if not text:
                notes.append(f"{where}: blank description; dropped")
                continue
            cues.append(Cue.at(start, min(end, duration), text, event.index if event else None))
        merged = normalize_track(cues)
        if len(merged) < len(cues):
            notes.append(f"{name}: merged {len(cues) - len(merged)} duplicate cue(s)")
        tracks[name] = merged
    script = validate_script(FoleyScript(**tracks), duration)
    return StepResult(script, [], notes)
