"""Training examples from the dataset: ok rows -> (frames, simple prompt, script JSON), split by video.

Frames are the ones the chain saw (the trace's frame times), decoded again from the video when a batch
is built. A video never lands in two splits: the split goes by content hash, and the assignment is
saved next to the adapter so later runs and evaluations use the same held-out videos.

Only full-chain rows of base models train by default: a row with an `adapter` is that adapter's own
one-pass answer, and learning from it would teach the next adapter its predecessor's mistakes.

A long video's row (run in chunks, #15) becomes one example per chunk that ran: that chunk's frames,
its duration and its cues (clipped to it, times from its start), because an adapter answers a long video
one chunk at a time (`run_simple` splits it into chunks of the same length, at the limit: one pass
measures no cuts) and must learn answers of that length.

Curation (`foley curate`) chooses among those rows: `curate_rows` keeps approved rows, or all but the
rejected ones, or ignores the decisions, and a kept row with an edited script trains on the edit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from v2t_foley.foley_core.chain.simple import simple_prompt, simple_target
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.prompts import PromptSet
from v2t_foley.foley_core.schema.rows import row_events, row_script
from v2t_foley.foley_core.schema.script import TRACKS
from v2t_foley.foley_core.store import DatasetStore, ShardMarker

HELD_OUT = ("test", "validation", "eval")
MIN_CUE_S = 0.05  # a cue from an earlier chunk that lasts less than this into a chunk is not its target
CURATION_MODES = ("approved", "not-rejected", "ignore")


@dataclass(frozen=True)
class SFTExample:
    id: str  # row id
    video: str  # video URI
    sha256: str  # content hash: the split key
    duration: float  # seconds
    frame_times: tuple[float, ...]  # the frames the chain saw
    prompt: str  # the rendered simple prompt
    target: str  # the script JSON the model learns to write
    n_events: int  # events the chain found (for filtering and reports)
    row_split: str  # the manifest's split
    key: tuple[str, str, str] = ("", "", "")  # (id, prompt_version, model_key): the row's store key
    span: tuple[float, float] | None = None  # a long video's chunk: its seconds in the video


@dataclass(frozen=True)
class StoreRead:
    """One read of a store: the complete shards seen, and their rows. Training takes its examples and
    its record of what it used from the same read, so rows that land while it trains count as new."""

    markers: tuple[str, ...]  # names of the shards read
    ok_rows: int  # ok rows in them (the number the dataset.updated trigger compares against)
    rows: list[dict[str, Any]]


def read_store(store: DatasetStore) -> StoreRead:
    """The rows of the store's complete shards, with the list of shards they came from."""
    markers: list[ShardMarker] = store.markers()
    rows: list[dict[str, Any]] = []
    for files in store.data_files(markers).values():
        for relative in files:
            with store.fs.open(store.path(relative), "rb") as handle:
                rows.extend(pq.read_table(handle).to_pylist())
    return StoreRead(tuple(m.name for m in markers), sum(m.ok for m in markers), rows)


def row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    """(id, prompt_version, model_key), as the store's done-keys name a row."""
    model = f"{row['model_id']}@{row['adapter']}" if row["adapter"] else row["model_id"]
    return row["id"], row["prompt_version"], model


def training_rows(
    rows: Iterable[dict[str, Any]],
    *,
    prompt_version: str | None = None,
    include_adapter_rows: bool = False,
) -> list[dict[str, Any]]:
    """The ok rows a training uses: full-chain rows of base models (unless adapter rows are asked
    for) of one prompt version (the newest of those rows, unless one is named)."""
    ok = [r for r in rows if r["status"] == "ok" and (include_adapter_rows or not r["adapter"])]
    if prompt_version is None and ok:
        prompt_version = max(ok, key=lambda r: r["created_at"])["prompt_version"]
    return [r for r in ok if r["prompt_version"] == prompt_version]


def curate_rows(
    rows: Iterable[dict[str, Any]], decisions: dict[tuple[str, str, str], Any], mode: str = "not-rejected"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The training rows a curation mode keeps, with edited scripts as their targets, and the counts.

    `approved`: only rows a curator approved; `not-rejected` (the default): every row but the rejected
    ones; `ignore`: every row, the chain's own scripts. `decisions` maps a row key to its latest
    `foley_core.curation.Decision`. A kept row with an edited script trains on the edit.
    """
    if mode not in CURATION_MODES:
        raise InputError(f"curation {mode!r}: choose one of {', '.join(CURATION_MODES)}")
    counts = {"mode": mode, "approved": 0, "needs-fix": 0, "undecided": 0, "edited": 0, "left_out": 0}
    counts |= {"left_out_rejected": 0, "left_out_not_approved": 0}
    kept = []
    for row in rows:
        decision = None if mode == "ignore" else decisions.get(row_key(row))
        kind = decision.decision if decision else "undecided"
        if kind == "rejected" or (mode == "approved" and kind != "approved"):
            counts["left_out"] += 1
            counts["left_out_rejected" if kind == "rejected" else "left_out_not_approved"] += 1
            continue
        counts[kind] += 1
        if decision is not None and decision.script is not None:
            row = {**row, "script": decision.script}
            counts["edited"] += 1
        kept.append(row)
    counts["used"] = len(kept)
    return kept, counts


def examples_from_rows(
    rows: Iterable[dict[str, Any]],
    prompts: PromptSet,
    *,
    prompt_version: str | None = None,
    min_events: int = 0,
    include_adapter_rows: bool = False,
) -> list[SFTExample]:
    """Every usable training row as an example. Rows with no cue, or too few events, are dropped."""
    examples = []
    chosen = training_rows(rows, prompt_version=prompt_version, include_adapter_rows=include_adapter_rows)
    for row in chosen:
        script = row_script(row).model_dump()
        trace = json.loads(row["trace"])
        parts = [(None, None, script, len(row_events(row)), tuple(trace["frame_times"]))]
        if trace.get("chunks"):
            parts = list(_chunk_parts(trace["chunks"], script))
        for index, span, target, n_events, times in parts:
            if n_events < min_events or not any(target[track] for track in TRACKS):
                continue
            start, end = span or (0.0, row["duration"])
            examples.append(
                SFTExample(
                    id=row["id"] if span is None else f"{row['id']}#chunk{index}",
                    video=row["video"],
                    sha256=row["sha256"],
                    duration=end - start,
                    frame_times=tuple(t + start for t in times),  # in the video, for decoding
                    prompt=simple_prompt(prompts, end - start, times),  # in the chunk, as run_simple asks
                    target=simple_target(target),
                    n_events=n_events,
                    row_split=row["split"],
                    key=row_key(row),
                    span=span,
                )
            )
    return examples


def _chunk_parts(chunks: list[dict[str, Any]], script: dict[str, Any]):
    """(index, span, chunk script, events, frame times in the chunk) of each chunk that ran: the merged
    script's cues that overlap the chunk, clipped to it and timed from its start."""
    for chunk in chunks:
        if chunk.get("error") or not chunk.get("frame_times"):
            continue  # a gap (--partial-ok): nothing was scripted there
        start, end = float(chunk["start"]), float(chunk["end"])
        part = {track: [] for track in TRACKS}
        for track in TRACKS:
            for cue in script[track]:
                s, e = max(cue["start"], start), min(cue["end"], end)
                starts_here = start <= cue["start"] < end  # a cue belongs to the chunk it starts in,
                spills_in = cue["start"] < start and e - s >= MIN_CUE_S  # and a bed to those it lasts into
                if starts_here or spills_in:
                    part[track].append({**cue, "start": round(s - start, 3), "end": round(e - start, 3)})
        first, last = (chunk.get("events") or [0, 0])[:2]
        yield chunk["index"], (start, end), part, last - first, tuple(chunk["frame_times"])


def assign_split(example: SFTExample, eval_fraction: float, seed: int) -> str:
    """'eval' for held-out manifest splits and for a stable hash-chosen fraction of videos."""
    if example.row_split in HELD_OUT:
        return "eval"
    bucket = int(hashlib.sha256(f"{seed}:{example.sha256}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if bucket < eval_fraction else "train"


def split_examples(
    examples: list[SFTExample], eval_fraction: float, seed: int, saved: Path | None = None
) -> dict[str, list[SFTExample]]:
    """train/eval by video. With `saved`, videos already assigned keep their split; new ones are added."""
    assignment: dict[str, str] = json.loads(saved.read_text()) if saved and saved.exists() else {}
    for example in examples:
        assignment.setdefault(example.sha256, assign_split(example, eval_fraction, seed))
    if saved:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(assignment, indent=1, sort_keys=True))
    splits: dict[str, list[SFTExample]] = {"train": [], "eval": []}
    for example in examples:
        splits[assignment[example.sha256]].append(example)
    return splits


def example_dict(example: SFTExample) -> dict[str, Any]:
    return asdict(example)
