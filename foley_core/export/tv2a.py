"""Hand-off to text-video-to-audio models: video segments, one prompt each, and `segments.json`.

- `hunyuan` (HunyuanVideo-Foley `infer.py --csv_path`): `hunyuan.csv` with `index,video,prompt`;
  segments of 1-15 s; CLAP text, 77 tokens. Its CSV mode ignores `--neg_prompt`.
- `mmaudio` (MMAudio): `mmaudio.tsv` (`id`, `label` = caption, `negative_prompt`, `duration`, `video`)
  and `mmaudio.json` (name -> caption); segments of at most `--max-seconds` (8); CLIP text, 77 tokens.
- `thinksound` (ThinkSound): `thinksound.csv` with `id,caption,caption_cot`, every segment the same
  whole-second length; `caption` a short label, `caption_cot` the chain's reasoning for the segment.

MMAudio's batch evaluation reads (name -> caption) pairs; load the manifest into its dataset like this:

    import pandas as pd

    rows = pd.read_csv("OUT/mmaudio.tsv", sep="\t", dtype={"id": str}, keep_default_na=False)
    videos = {r.id: f"OUT/{r.video}" for r in rows.itertuples()}      # name -> segment file
    captions = dict(zip(rows.id, rows.label))                         # name -> caption
    negatives = dict(zip(rows.id, rows.negative_prompt))              # name -> negative prompt
    # per clip: generate(video=videos[n], prompt=captions[n], negative_prompt=negatives[n], duration=8)

Every one writes `segments.json`: per segment its source video, id, start and end in the source, the
cues used and the prompt; generated audio for a segment starts at `start` seconds of the source video.
Prompts never voice dialogue: foley and fx cues first, then ambience.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.export.base import ExportOptions, ExportReport, write_json, write_text
from v2t_foley.foley_core.export.segments import (
    MediaInfo,
    Window,
    cut_segment,
    fixed_windows,
    media_info,
    padded_window,
    plan_windows,
)
from v2t_foley.foley_core.export.source import ExportItem
from v2t_foley.foley_core.export.tokens import TokenCounter, counter_for, cut_words, fit_text
from v2t_foley.foley_core.safenames import safe_join, safe_name
from v2t_foley.foley_core.schema.script import Cue

PROMPT_TRACKS = ("foley", "fx", "ambience")  # dialogue is never voiced by a foley model
NEGATIVE_PROMPT = "human speech, talking, voices"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    encoder: str  # "clip" or "clap": which tokenizer counts
    max_s: float  # longest segment the model reads
    min_s: float  # shortest
    whole_seconds: bool = False  # every segment of a batch the same whole-second length (ThinkSound)


MODELS = {
    "hunyuan": ModelSpec("hunyuan", "clap", 15.0, 1.0),
    "mmaudio": ModelSpec("mmaudio", "clip", 8.0, 1.0),
    "thinksound": ModelSpec("thinksound", "clip", 8.0, 1.0, whole_seconds=True),
}


@dataclass
class Segment:
    id: str
    item: ExportItem
    window: Window
    cues: list[tuple[str, int, Cue]]
    file: str = ""  # relative to the output folder
    method: str = ""  # copy / reencode
    prompt: str = ""
    fields: dict = field(default_factory=dict)  # model-specific columns (negative prompt, caption_cot)


def overlapping(item: ExportItem, window: Window) -> list[tuple[str, int, Cue]]:
    """Cues of `item` that sound inside `window` (a zero-length cue: its instant), dialogue included."""
    found = []
    for name in ("foley", "fx", "ambience", "dialogue"):
        for k, cue in enumerate(item.script.track(name)):
            inside = (
                window.start <= cue.start < window.end
                if cue.end <= cue.start
                else cue.start < window.end and cue.end > window.start
            )
            if inside:
                found.append((name, k, cue))
    return found


def cue_prompt(cues: list[tuple[str, int, Cue]], counter: TokenCounter) -> str:
    """Descriptions of the foley and fx cues (by time), then ambience, without repeats, within budget."""
    parts: list[str] = []
    seen: set[str] = set()
    for track in (("foley", "fx"), ("ambience",)):
        for _, _, cue in sorted((c for c in cues if c[0] in track), key=lambda c: c[2].start):
            key = " ".join(cue.description.lower().split())
            if key not in seen:
                seen.add(key)
                parts.append(_sentence(cue.description))
    return fit_text(parts, counter)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text[-1:] in ".!?" else text + "."


def _windows(item: ExportItem, spec: ModelSpec, options: ExportOptions, info: MediaInfo, fixed: float | None):
    duration = info.duration
    max_s = options.max_seconds or spec.max_s
    if options.per_cue:
        out = []
        for name, k, cue in [(n, k, c) for n in PROMPT_TRACKS for k, c in enumerate(item.script.track(n))]:
            if fixed is not None:
                window = padded_window(cue.start, cue.end, duration, fixed, fixed)
            else:
                window = padded_window(cue.start, cue.end, duration, spec.min_s, max_s)
            out.append((f"{name}{k:03d}", window, [(name, k, cue)]))
        return out
    if fixed is not None:
        windows = fixed_windows(duration, fixed)
    else:
        windows = plan_windows(duration, max_s, spec.min_s, cuts=item.cuts, keyframes=info.keyframes)
    return [(f"{k:03d}", w, None) for k, w in enumerate(windows)]


def export_tv2a(model: str, items: list[ExportItem], options: ExportOptions, report: ExportReport) -> None:
    from v2t_foley.foley_core.video.source import fetch

    spec = MODELS[model]
    counter = counter_for(spec.encoder)
    report.notes.append(f"token counts: {counter.describe()}")
    if model == "hunyuan" and (options.max_seconds or 0) > spec.max_s:
        raise InputError(
            f"HunyuanVideo-Foley reads at most {spec.max_s:g} s: --max-seconds {options.max_seconds}"
        )
    prepared: list[tuple[ExportItem, Path, MediaInfo]] = []
    for item in items:
        if not item.video:
            report.skipped.append(_skip(item, "no video (give --video with a script file)"))
            continue
        try:
            local = fetch(item.video).path
            info = media_info(local)
        except InputError as error:
            report.skipped.append(_skip(item, str(error)))
            continue
        except Exception as error:
            report.skipped.append(_skip(item, f"cannot read the video: {type(error).__name__}: {error}"))
            continue
        if info.duration < spec.min_s:
            report.skipped.append(
                _skip(item, f"video of {info.duration:.2f} s, shorter than {spec.min_s:g} s")
            )
            continue
        prepared.append((item, local, info))
    fixed = None
    if spec.whole_seconds and prepared:
        shortest = min(info.duration for _, _, info in prepared)
        fixed = float(min(math.floor(options.max_seconds or spec.max_s), math.floor(shortest + 1e-6)))
        report.notes.append(f"every segment lasts {fixed:g} s (ThinkSound batches one whole-second length)")
    segments: list[Segment] = []
    for item, local, info in prepared:
        base = safe_name(item.id)
        for suffix, window, cues in _windows(item, spec, options, info, fixed):
            seg = Segment(
                f"{base}-{suffix}", item, window, cues if cues is not None else overlapping(item, window)
            )
            seg.file = seg.id + ".mp4"
            target = Path(safe_join(str(options.out), seg.file))
            try:
                seg.method = cut_segment(
                    local, target, window.start, window.end, info, at_least=fixed is not None
                )
            except Exception as error:
                report.warnings.append(
                    f"{item.id}: segment {window.start:.2f}-{window.end:.2f} s not cut: {error}"
                )
                continue
            report.files.append(seg.file)
            PROMPTERS[model](seg, counter)
            segments.append(seg)
        report.items += 1
    report.segments = len(segments)
    WRITERS[model](segments, options, report)
    write_json(options.out / "segments.json", _segments_doc(model, spec, counter, segments), report, options)


def _skip(item: ExportItem, reason: str):
    from v2t_foley.foley_core.export.source import Skipped

    return Skipped(item.id, reason)


def _segments_doc(model: str, spec: ModelSpec, counter: TokenCounter, segments: list[Segment]) -> dict:
    return {
        "format": model,
        "tokens": counter.describe(),
        "placement": "generated audio for a segment starts at `start` seconds of `source_video`",
        "segments": [
            {
                "index": k,
                "id": s.id,
                "file": s.file,
                "source_id": s.item.id,
                "source_video": s.item.shown_video,
                "start": s.window.start,
                "end": s.window.end,
                "duration": round(s.window.length, 6),
                "method": s.method,
                "cues": [
                    {
                        "track": t,
                        "index": i,
                        "start": c.start,
                        "end": c.end,
                        "description": c.description,
                        "event": c.event,
                    }
                    for t, i, c in s.cues
                ],
                "prompt": s.prompt,
                "tokens": counter.count(s.prompt),
                **s.fields,
            }
            for k, s in enumerate(segments)
        ],
    }


# --- prompts per model ---------------------------------------------------------------------------


def _prompt_hunyuan(seg: Segment, counter: TokenCounter) -> None:
    seg.prompt = cue_prompt(seg.cues, counter)


def _prompt_mmaudio(seg: Segment, counter: TokenCounter) -> None:
    seg.prompt = cue_prompt(seg.cues, counter)
    seg.fields["negative_prompt"] = NEGATIVE_PROMPT


def _events_in(seg: Segment) -> list[dict]:
    used = {c.event for _, _, c in seg.cues if c.event is not None}
    w = seg.window
    found = []
    for event in seg.item.events:
        if not isinstance(event, dict):
            continue
        start, end = float(event.get("start", 0.0)), float(event.get("end", 0.0))
        if event.get("index") in used or (start < w.end and max(end, start + 1e-3) > w.start):
            found.append(event)
    return sorted(found, key=lambda e: float(e.get("start", 0.0)))


def _clause(text: str, words: int = 8) -> str:
    parts = " ".join(str(text or "").split()).rstrip(".").split()
    return " ".join(parts[:words])


_TRAILING_WORDS = "a an the of in on at to with and or across into onto from by for its his her their"
_TRAILING = frozenset(_TRAILING_WORDS.split())


def _short(text: str, words: int = 7) -> str:
    """A label from a sentence: lowercase, no final period, at most `words` words, no dangling `the`."""
    kept = " ".join(str(text or "").split()).rstrip(".!?").split()[:words]
    while kept and kept[-1].lower() in _TRAILING:
        kept.pop()
    return " ".join(kept).lower()


def _label(event: dict) -> str:
    reasoning = event.get("reasoning") or {}
    obj, action = _short(reasoning.get("main_object"), 4), _short(reasoning.get("action"), 5)
    if obj and action:
        return f"{obj} {action}"
    return _short(event.get("summary"), 7)


def _prompt_thinksound(seg: Segment, counter: TokenCounter) -> None:
    """caption: a short label; caption_cot: objects, actions, context and sounds of the segment's events,
    in time order, condensed step by step (context dropped, then fewer sounds, then later events) until
    it fits. Without events (a script file), the cues in time order."""
    events = [e for e in _events_in(seg) if not _is_speech(e)]
    by_time = sorted(seg.cues, key=lambda c: c[2].start)
    labels = [_label(e) for e in events]
    labels += [_short(c.description) for t, _, c in by_time if t in ("foley", "fx")]
    labels += [_short(c.description) for t, _, c in by_time if t == "ambience"]
    labels = [label for label in dict.fromkeys(labels) if label]
    caption = fit_text(labels[:3], counter, limit=min(counter.limit, 24), sep=", ")
    seg.prompt = caption
    ambience = list(dict.fromkeys(_sentence(c.description) for t, _, c in by_time if t == "ambience"))
    speech = any(t == "dialogue" for t, _, _ in seg.cues) or any(_is_speech(e) for e in _events_in(seg))
    fallback = [
        _sentence(f"At {max(0.0, c.start - seg.window.start):.1f}s {_lower_first(c.description)}")
        for t, _, c in by_time
        if t in ("foley", "fx")
    ]
    cot = ""
    for context, max_sounds in ((True, 4), (False, 3), (False, 2), (False, 1)):
        steps = [_event_step(e, seg.window, context, max_sounds) for e in events] or fallback
        head = f"Generate the sound of {caption}." if caption else ""
        tail = ["Background: " + " ".join(ambience)] if ambience else []
        if speech:
            tail.append("No speech or voices.")
        cot = fit_text([head, *steps, *tail], counter)
        if counter.count(" ".join([head, *steps, *tail])) <= counter.limit:
            break
    seg.fields["caption_cot"] = cot or cut_words(caption, counter)


def _lower_first(text: str) -> str:
    text = " ".join(text.split()).rstrip(".")
    first = text.split(" ", 1)[0]
    return text if len(first) > 1 and first.isupper() else text[:1].lower() + text[1:]


def _is_speech(event: dict) -> bool:
    return event.get("kind") == "speech"


def _event_step(event: dict, window: Window, context: bool, max_sounds: int) -> str:
    reasoning = event.get("reasoning") or {}
    at = max(0.0, float(event.get("start", 0.0)) - window.start)
    what = " ".join(
        p for p in (_clause(reasoning.get("main_object"), 5), _clause(reasoning.get("action"), 6)) if p
    ) or _clause(event.get("summary"), 10)
    where = _clause(reasoning.get("context"), 6) if context else ""
    sounds = [_clause(s, 5) for s in (reasoning.get("sounds") or [])[:max_sounds] if _clause(s, 5)]
    text = f"At {at:.1f}s {what}" + (f" in {where}" if where else "")
    if sounds:
        text += ": " + ", ".join(sounds)
    return _sentence(text)


PROMPTERS: dict[str, Callable[[Segment, TokenCounter], None]] = {
    "hunyuan": _prompt_hunyuan,
    "mmaudio": _prompt_mmaudio,
    "thinksound": _prompt_thinksound,
}


# --- files per model -----------------------------------------------------------------------------


def _csv(rows: list[list], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def _write_hunyuan(segments: list[Segment], options: ExportOptions, report: ExportReport) -> None:
    rows: list[list] = [["index", "video", "prompt"]]
    rows += [[k, str((options.out / s.file).resolve()), s.prompt] for k, s in enumerate(segments)]
    write_text(options.out / "hunyuan.csv", _csv(rows), report, options)
    report.notes.append("HunyuanVideo-Foley's CSV mode ignores --neg_prompt")


def _write_mmaudio(segments: list[Segment], options: ExportOptions, report: ExportReport) -> None:
    rows: list[list] = [["id", "label", "negative_prompt", "duration", "video"]]
    rows += [
        [s.id, s.prompt, s.fields["negative_prompt"], f"{s.window.length:.3f}", s.file] for s in segments
    ]
    write_text(options.out / "mmaudio.tsv", _csv(rows, "\t"), report, options)
    write_json(options.out / "mmaudio.json", {s.id: s.prompt for s in segments}, report, options)


def _write_thinksound(segments: list[Segment], options: ExportOptions, report: ExportReport) -> None:
    rows: list[list] = [["id", "caption", "caption_cot"]]
    rows += [[s.id, s.prompt, s.fields["caption_cot"]] for s in segments]
    write_text(options.out / "thinksound.csv", _csv(rows), report, options)


WRITERS = {"hunyuan": _write_hunyuan, "mmaudio": _write_mmaudio, "thinksound": _write_thinksound}


def load_segments(path: str | Path) -> list[dict]:
    """The segments of a `segments.json` (for laying generated audio back)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["segments"]
