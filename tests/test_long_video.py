"""Long videos in chunks: where they split, how chunk scripts merge, and that a chunked run is exactly the
merge of its chunks' own runs. Short generated videos with a small `chunk_seconds` stand in for long ones."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from v2t_foley.foley_core.cachekeys import step_key
from v2t_foley.foley_core.chain import ChainConfig, run_chain
from v2t_foley.foley_core.chain.chunks import (
    ChunkError,
    ChunkPart,
    chunk_spans,
    merge_chunks,
    slice_proposals,
)
from v2t_foley.foley_core.proposals.audio import audio_windows
from v2t_foley.foley_core.proposals.base import Proposal, ProposalSet
from v2t_foley.foley_core.schema.events import Event, EventReasoning
from v2t_foley.foley_core.schema.rows import row_script
from v2t_foley.foley_core.schema.script import Cue, FoleyScript
from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
from v2t_foley.foley_core.video import open_video

FPS = 10.0
TIMES = np.arange(0, 3600 * FPS) / FPS  # a frame table, 10 fps, an hour


def test_a_video_that_fits_in_a_chunk_is_one_span():
    assert chunk_spans(30.0, TIMES[:300], [10.0], 30.0) == [(0.0, 30.0)]
    assert chunk_spans(300.0, TIMES[:3000], [], None) == [(0.0, 300.0)]


def test_splits_at_the_latest_cut_near_the_chunk_size_else_at_the_limit():
    cuts = [12.0, 27.3, 29.9, 41.0, 95.0]
    spans = chunk_spans(120.0, TIMES[:1200], cuts, 30.0)
    bounds = [b for _, b in spans[:-1]]
    assert bounds[0] == 29.9  # the latest cut in the last half of the first chunk
    assert bounds[1] == pytest.approx(59.9)  # no cut in (44.9, 59.9]: the frame at the limit
    assert spans[0][0] == 0.0 and spans[-1][1] == 120.0
    assert all(a == pytest.approx(b) for (_, a), (b, _) in itertools.pairwise(spans))
    assert all(end - start <= 30.0 + 1e-6 for start, end in spans)
    assert all(round(b * FPS, 6) == round(b * FPS) for b in bounds)  # on frame times


def test_the_last_two_chunks_share_what_is_left():
    spans = chunk_spans(65.0, TIMES[:650], [], 30.0)  # not 30 + 30 + 5
    lengths = [round(b - a, 3) for a, b in spans]
    assert lengths == [30.0, 17.5, 17.5]


def test_an_hour_with_regular_cuts_has_chunks_of_steady_length():
    cuts = [float(t) for t in range(20, 3600, 20)]
    spans = chunk_spans(3600.0, TIMES, cuts, 30.0)
    lengths = [b - a for a, b in spans]
    assert len(spans) >= 120 and max(lengths) <= 30.0 and min(lengths) >= 15.0


def test_proposals_are_sliced_into_chunk_time():
    proposals = ProposalSet(
        duration=60.0,
        cuts=[Proposal(kind="cut", start=t, end=t, strength=1) for t in (10.0, 30.0, 45.0)],
        motion=[Proposal(kind="motion", start=28.0, end=33.0, strength=2)],
        onsets=[Proposal(kind="audio_onset", start=t, end=t, strength=9) for t in (29.0, 31.5)],
        speech=[Proposal(kind="speech", start=50.0, end=52.0, strength=1)],
    )
    second = slice_proposals(proposals, 30.0, 60.0)
    assert second.duration == 30.0
    assert [c.start for c in second.cuts] == [15.0]  # the cut at the chunk's start is its 0, not a cut
    assert [(m.start, m.end) for m in second.motion] == [(0.0, 3.0)]
    assert [o.start for o in second.onsets] == [1.5]
    assert [(s.start, s.end) for s in second.speech] == [(20.0, 22.0)]
    first = slice_proposals(proposals, 0.0, 30.0)
    assert [(m.start, m.end) for m in first.motion] == [(28.0, 30.0)]


def _part(index, start, end, *, ambience, fx=(), events=1):
    evs = [Event(index=k, start=0.5 + k, end=1.0 + k, summary=f"e{k}") for k in range(events)]
    reasoning = [
        EventReasoning(event=k, main_object="o", action="a", context="c", sounds=["s"]) for k in range(events)
    ]
    script = FoleyScript(
        foley=[Cue.at(0.5, 1.0, f"step {index}", 0)],
        fx=[Cue.at(a, b, text, None) for a, b, text in fx],
        ambience=[Cue.at(a, b, text, None) for a, b, text in ambience],
    )
    return ChunkPart(index, start, end, script, evs, reasoning)


def test_merge_offsets_times_renumbers_events_and_joins_a_bed_across_the_boundary():
    parts = [
        _part(0, 0.0, 30.0, ambience=[(0.0, 10.0, "street"), (10.0, 30.0, "room tone")], events=2),
        _part(1, 30.0, 55.0, ambience=[(0.0, 25.0, "quiet room")], fx=[(0.0, 0.3, "door")], events=3),
    ]
    parts[0].script = parts[0].script.model_copy(update={"fx": [Cue.at(29.8, 30.0, "Door", None)]})
    merged = merge_chunks(parts, 55.0, cuts=[10.0])
    script = merged.script
    # the bed of the shot that goes on past 30 s (no cut there) is one cue, with the first description
    assert [(c.start, c.end, c.description) for c in script.ambience] == [
        (0.0, 10.0, "street"),
        (10.0, 55.0, "room tone"),
    ]
    # the same cue written by both chunks at their boundary is kept once
    assert [(c.start, c.end) for c in script.fx] == [(29.8, 30.3)]
    # events renumbered in order, times offset; cues point at the renumbered events
    assert [e.index for e in merged.events] == [0, 1, 2, 3, 4]
    assert [e.start for e in merged.events] == [0.5, 1.5, 30.5, 31.5, 32.5]
    assert [r.event for r in merged.reasoning] == [0, 1, 2, 3, 4]
    assert [(c.start, c.event) for c in script.foley] == [(0.5, 0), (30.5, 2)]
    assert merged.event_base == [0, 2]
    assert any("ambience continues" in n for n in merged.notes)


def test_beds_at_a_cut_boundary_stay_apart():
    parts = [
        _part(0, 0.0, 20.0, ambience=[(0.0, 20.0, "street")]),
        _part(1, 20.0, 40.0, ambience=[(0.0, 20.0, "forest")]),
    ]
    script = merge_chunks(parts, 40.0, cuts=[20.0]).script
    assert [(c.start, c.end) for c in script.ambience] == [(0.0, 20.0), (20.0, 40.0)]


def test_a_failed_chunk_leaves_a_gap():
    parts = [
        _part(0, 0.0, 20.0, ambience=[(0.0, 20.0, "street")], events=2),
        ChunkPart(1, 20.0, 40.0, None),
        _part(2, 40.0, 60.0, ambience=[(0.0, 20.0, "street")], events=1),
    ]
    merged = merge_chunks(parts, 60.0)
    assert [(c.start, c.end) for c in merged.script.ambience] == [(0.0, 20.0), (40.0, 60.0)]
    assert [e.index for e in merged.events] == [0, 1, 2] and merged.events[2].start == 40.5


def test_audio_windows_cover_the_stream_once_with_context():
    pieces = np.array_split(np.arange(95, dtype=np.float32), 14)  # decoded pieces of any size
    windows = list(audio_windows(pieces, block=30, margin=5))
    assert [(w.core_start, w.core_end) for w in windows] == [(0, 30), (30, 60), (60, None)]
    for w in windows:
        assert w.samples[0] == w.first  # the samples are where they say
    assert windows[1].first == 25 and len(windows[1].samples) == 40
    short = list(audio_windows([np.zeros(34, np.float32)], block=30, margin=5))
    assert len(short) == 1 and short[0].core_end is None and len(short[0].samples) == 34


def test_a_short_video_keeps_its_keys():
    assert step_key("sample", sha256="x", settings={"a": 1}) == step_key(
        "sample", sha256="x", settings={"a": 1}, span=None
    )
    assert step_key("sample", sha256="x", span={"start": 0, "end": 8}) != step_key("sample", sha256="x")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """14 s, a cut at 6 s: with chunk_seconds=8 it runs as two chunks split at the cut."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    spec = SceneSpec(
        duration=14.0,
        fps=8.0,
        cuts=(6.0, 11.0),
        motions=((1.0, 2.0), (8.0, 9.0)),
        clicks=(1.5, 4.0, 8.5, 12.5),
    )
    return write_scene_video(path, spec)


def test_a_long_video_runs_in_chunks_split_at_a_cut(long_clip, tiny_llm):
    result = run_chain(open_video(str(long_clip)), tiny_llm, config=ChainConfig(chunk_seconds=8.0))
    trace = result.trace
    assert [(c["start"], c["end"]) for c in trace.chunks] == [(0.0, 6.0), (6.0, 14.0)]
    assert trace.duration == 14.0
    for chunk in trace.chunks:
        first, last = chunk["events"]
        assert last > first  # every chunk has an event
        assert all(chunk["start"] <= e.start < chunk["end"] for e in trace.events[first:last])
        assert max(chunk["frame_times"]) < chunk["end"] - chunk["start"]  # chunk time
    assert [e.index for e in trace.events] == list(range(len(trace.events)))
    assert any(e.start >= 6.0 for e in trace.events)
    assert [c.start for c in ProposalSet.model_validate(trace.proposals).cuts] == [6.0, 11.0]
    assert all(cue.end <= 14.0 for _, cue in result.script.cues())
    json.dumps(trace.model_dump(mode="json"))  # the trace stays plain JSON
    short = run_chain(open_video(str(long_clip)), tiny_llm, config=ChainConfig(chunk_seconds=30.0))
    assert short.trace.chunks is None


def test_a_two_chunk_script_is_the_merge_of_its_chunks_runs(long_clip, tiny_llm):
    config = ChainConfig(timing="model", chunk_seconds=8.0)
    video = open_video(str(long_clip))
    whole = run_chain(video, tiny_llm, config=config)
    spans = [(c["start"], c["end"]) for c in whole.trace.chunks]
    assert spans == [(0.0, 7.0), (7.0, 14.0)]  # no measured cuts in model timing: the middle
    alone = ChainConfig(timing="model", chunk_seconds=None)
    parts = []
    for k, (start, end) in enumerate(spans):
        run = run_chain(open_video(str(long_clip)).span(start, end), tiny_llm, config=alone)
        parts.append(ChunkPart(k, start, end, run.script, run.trace.events, run.trace.reasoning))
    merged = merge_chunks(parts, 14.0)
    assert whole.script == merged.script
    assert whole.trace.events == merged.events


def test_a_failing_chunk_fails_the_video_naming_it_or_leaves_a_gap(long_clip, tiny_llm, monkeypatch):
    from v2t_foley.foley_core.chain import graph
    from v2t_foley.foley_core.errors import ChainError

    real = graph.synthesize

    def fails_late(clip, *args):
        if clip.duration > 7.0:  # the second chunk (6-14 s)
            raise ChainError("synthesize", "no usable answer")
        return real(clip, *args)

    monkeypatch.setattr(graph, "synthesize", fails_late)
    with pytest.raises(ChunkError, match=r"chunk 1 \(6.00-14.00 s\) failed: .*no usable answer"):
        run_chain(open_video(str(long_clip)), tiny_llm, config=ChainConfig(chunk_seconds=8.0))
    partial = run_chain(
        open_video(str(long_clip)), tiny_llm, config=ChainConfig(chunk_seconds=8.0, partial_ok=True)
    )
    assert all(cue.start < 6.0 for _, cue in partial.script.cues())
    assert any(n.startswith("chunk 1 (6.00-14.00 s) failed, left out") for n in partial.trace.notes)
    assert "error" in partial.trace.chunks[1]


def test_the_flow_runs_chunks_as_items_and_agrees_with_the_plain_loop(long_clip, tmp_path, prefect_harness):
    """The chunks of a long video are items of the per-step tasks, cached per chunk, and the flow's row
    is the plain loop's script and trace."""
    from tests.test_chain_graph import without_timings
    from v2t_foley.flows.build_dataset import build_dataset
    from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
    from v2t_foley.foley_core.manifest import write_manifest
    from v2t_foley.foley_core.store import DatasetStore

    manifest = write_manifest([{"video": str(long_clip), "id": "long"}], str(tmp_path / "m.csv"))
    options = dict(model="tiny-random", batch_size=1, device="cpu", chunk_seconds=8.0)
    summary = build_dataset(manifest=manifest, store=str(tmp_path / "store"), **options)
    assert summary.computed["sample"] == 2 and summary.computed["propose"] == 1  # two chunks, one video
    (row,) = DatasetStore(str(tmp_path / "store")).read_rows()
    assert row["status"] == "ok", row["error"]
    llm = TransformersVideoLLM("tiny-random", device="cpu", batch_size=1)
    plain = run_chain(open_video(str(long_clip)), llm, config=ChainConfig(chunk_seconds=8.0))
    assert row_script(row).model_dump() == plain.script.model_dump()
    assert without_timings(json.loads(row["trace"])) == without_timings(plain.trace.model_dump(mode="json"))


def test_frames_late_in_a_video_are_read_by_seeking_and_are_the_right_ones(tmp_path):
    from v2t_foley.foley_core.synthetic import read_index, write_index_video

    path = write_index_video(tmp_path / "idx.mp4", 600, 10.0, options={"g": "50", "bf": "2"})
    video = open_video(str(path), reader="pyav")
    wanted = [590, 300, 555, 301, 599]
    assert [read_index(image) for image in video.frames(wanted).images] == wanted
    chunk = video.span(40.0, 50.0)
    frames = chunk.window(0.0, 10.0, 4)
    assert [read_index(image) for image in frames.images] == [400 + i for i in frames.indices]
    assert frames.times[0] == 0.0 and chunk.offset == 40.0 and chunk.info.duration == 10.0


def test_an_adapter_answers_a_long_video_one_chunk_at_a_time(long_clip, tiny_llm):
    from v2t_foley.foley_core.chain.simple import run_simple

    result = run_simple(
        open_video(str(long_clip)), tiny_llm, config=ChainConfig(timing="model", chunk_seconds=8)
    )
    chunks = result.trace.chunks
    assert [(c["start"], c["end"]) for c in chunks] == [(0.0, 7.0), (7.0, 14.0)]
    for chunk in chunks:
        first, last = chunk["calls"]
        assert next(call.step for call in result.trace.calls[first:last]) == "simple"
        assert max(chunk["frame_times"]) < chunk["end"] - chunk["start"]  # the chunk's own frames
    assert all(cue.end <= 14.0 for _, cue in result.script.cues())


def test_a_chunked_row_trains_as_one_example_per_chunk(long_clip, tiny_llm):
    """An adapter answers a long video chunk by chunk, so it learns chunk-sized examples: each chunk's
    frames (decoded at their place in the video), its duration in the prompt, its cues from its start."""
    from v2t_foley.foley_core.chain.simple import load_simple_prompt
    from v2t_foley.foley_core.schema.rows import nested_events, nested_script
    from v2t_foley.training.data import examples_from_rows

    result = run_chain(open_video(str(long_clip)), tiny_llm, config=ChainConfig(chunk_seconds=8.0))
    trace = result.trace
    row = {
        "id": "long",
        "video": str(long_clip),
        "sha256": "s",
        "duration": 14.0,
        "split": "train",
        "status": "ok",
        "adapter": "",
        "model_id": "m",
        "prompt_version": "v",
        "created_at": "t",
        "script": nested_script(result.script),
        "events": nested_events([e.model_dump() for e in trace.events]),
        "trace": trace.model_dump_json(),
    }
    examples = examples_from_rows([row], load_simple_prompt())
    with_cues = [
        c for c in trace.chunks if any(c["start"] <= cue.start < c["end"] for _, cue in result.script.cues())
    ]
    assert [e.span for e in examples] == [(c["start"], c["end"]) for c in with_cues]
    assert len(examples) == 2  # this clip's chunks both have cues
    for example, chunk in zip(examples, with_cues, strict=True):
        start, end = chunk["start"], chunk["end"]
        assert example.id == f"long#chunk{chunk['index']}" and example.key == ("long", "v", "m")
        assert example.duration == end - start and f"{end - start:.2f}" in example.prompt
        assert example.frame_times == tuple(t + start for t in chunk["frame_times"])
        assert all(start <= t < end for t in example.frame_times)
        assert example.n_events == chunk["events"][1] - chunk["events"][0]
        target = json.loads(example.target)
        inside = [
            (track, round(cue.start - start, 3), round(cue.end - start, 3), cue.description)
            for track, cue in result.script.cues()
            if start <= cue.start and cue.end <= end
        ]
        for track, cue_start, cue_end, text in inside:
            assert {"start": cue_start, "end": cue_end, "description": text} in target[track]
        assert all(0 <= c["start"] <= c["end"] <= end - start for cues in target.values() for c in cues)


def test_chunk_targets_keep_short_cues_and_a_bed_that_lasts_into_the_next_chunk():
    from v2t_foley.training.data import _chunk_parts

    def cue(start: float, end: float, text: str) -> dict:
        return {"timestamp": "", "start": start, "end": end, "description": text, "event": None}

    script = {
        "foley": [cue(3.0, 3.03, "tick"), cue(6.98, 7.02, "click at the boundary")],
        "fx": [],
        "ambience": [cue(0.0, 14.0, "room tone"), cue(6.5, 7.01, "fades out")],
        "dialogue": [],
    }
    chunks = [
        {"index": 0, "start": 0.0, "end": 7.0, "events": [0, 1], "frame_times": [0.5]},
        {"index": 1, "start": 7.0, "end": 14.0, "events": [1, 2], "frame_times": [0.5]},
    ]
    (_, _, first, _, _), (_, _, second, _, _) = _chunk_parts(chunks, script)
    assert [c["description"] for c in first["foley"]] == ["tick", "click at the boundary"]
    assert first["foley"][1]["end"] == 7.0 and second["foley"] == []  # it starts in the first chunk
    assert [c["description"] for c in first["ambience"]] == ["room tone", "fades out"]
    assert [(c["description"], c["start"], c["end"]) for c in second["ambience"]] == [("room tone", 0.0, 7.0)]
