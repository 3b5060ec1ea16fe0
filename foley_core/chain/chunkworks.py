"""Long videos as works of the chain graph: split a video's work into chunk works after the per-video
steps, and merge the chunks' scripts and traces back into the video's (foley_core.chain.chunks holds
the pure split and merge rules)."""

from __future__ import annotations

from typing import Any

from v2t_foley.foley_core.chain.chunks import (
    ChunkError,
    ChunkPart,
    chunk_spans,
    merge_chunks,
    slice_proposals,
)
from v2t_foley.foley_core.chain.graph import ChainContext, Work
from v2t_foley.foley_core.chain.steps import StepResult


def split_works(works: list[Work], ctx: ChainContext) -> list[Work]:
    """The works the per-chunk steps run over: a live video that fits in one chunk is its own work; a
    longer one gets a work per chunk (split at its measured cuts), listed in its `chunks`."""
    out: list[Work] = []
    for work in works:
        if work.error is not None:
            continue
        proposals = work.value("propose")
        cuts = [c.start for c in proposals.cuts] if proposals is not None else []
        video = work.video
        spans = chunk_spans(video.info.duration, video.frame_times, cuts, ctx.config.chunk_seconds)
        if len(spans) == 1:
            work.chunks = None
            out.append(work)
            continue
        work.chunks = []
        for k, (start, end) in enumerate(spans):
            chunk = Work(
                id=f"{work.id}#chunk{k}",
                uri=work.uri,
                video=video.span(start, end),
                chunk=(start, end),
                index=k,
                parent=work,
            )
            if proposals is not None:
                chunk.keys["propose"] = work.keys["propose"]
                chunk.results["propose"] = StepResult(slice_proposals(proposals, start, end))
            work.chunks.append(chunk)
            out.append(chunk)
    return out


def merge_works(works: list[Work], ctx: ChainContext) -> None:
    """Each chunked video's script and trace from its chunks. A failed chunk fails the video, naming the
    chunk, unless `partial_ok` (then the gap is noted; a video with no chunk left still fails)."""
    for work in works:
        if work.error is not None or not work.chunks:
            continue
        failed = [c for c in work.chunks if c.error is not None]
        try:
            if failed and (not ctx.config.partial_ok or len(failed) == len(work.chunks)):
                first = failed[0]
                raise ChunkError(first.index, first.chunk[0], first.chunk[1], first.error)
            _merge(work, failed)
        except Exception as error:
            work.error = error
            done = [c for c in work.chunks if c.trace is not None]
            work.trace = done[0].trace if done else None


def _merge(work: Work, failed: list[Work]) -> None:
    chunks = work.chunks or []
    parts = [
        ChunkPart(
            c.index,
            c.chunk[0],
            c.chunk[1],
            None if c.error is not None else c.value("validate"),
            (c.value("identify") or []) if c.error is None else [],
            (c.value("reason") or []) if c.error is None else [],
        )
        for c in chunks
    ]
    proposals = work.value("propose")
    cuts = [c.start for c in proposals.cuts] if proposals is not None else None
    merged = merge_chunks(parts, work.video.info.duration, cuts)
    ran = [c for c in chunks if c.error is None]
    base = ran[0].trace
    notes = list(work.results["propose"].notes) if "propose" in work.results else []
    seconds: dict[str, float] = {}
    if "propose" in work.results:
        seconds["propose"] = work.results["propose"].seconds
    calls, entries = [], []
    for chunk, first_event in zip(chunks, merged.event_base, strict=True):
        start, end = chunk.chunk
        entry: dict[str, Any] = {"index": chunk.index, "start": start, "end": end}
        if chunk.error is not None:
            entry["error"] = f"{type(chunk.error).__name__}: {chunk.error}"
            notes.append(f"chunk {chunk.index} ({start:.2f}-{end:.2f} s) failed, left out: {chunk.error}")
        if chunk.trace is not None:
            trace = chunk.trace
            entry["calls"] = [len(calls), len(calls) + len(trace.calls)]
            entry["events"] = [first_event, first_event + len(trace.events)] if chunk.error is None else []
            entry["frame_times"] = trace.frame_times
            entry["notes"] = trace.notes
            entry["step_seconds"] = trace.step_seconds
            entry["proposals"] = trace.proposals
            calls += trace.calls
            notes += [f"chunk {chunk.index}: {n}" for n in trace.notes]
            for step, took in trace.step_seconds.items():
                seconds[step] = round(seconds.get(step, 0.0) + took, 4)
        entries.append(entry)
    notes += merged.notes
    frame_times = [round(t + c.chunk[0], 6) for c in ran for t in c.trace.frame_times]
    work.trace = base.model_copy(
        update={
            "duration": work.video.info.duration,
            "frame_times": frame_times,
            "events": merged.events,
            "reasoning": merged.reasoning,
            "calls": calls,
            "proposals": proposals.model_dump() if proposals is not None else None,
            "notes": notes,
            "step_seconds": seconds,
            "chunks": entries,
        }
    )
    work.results["validate"] = StepResult(merged.script, notes=merged.notes)
