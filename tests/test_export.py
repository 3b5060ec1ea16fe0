"""`foley export`: every format from a store and from a script file, each read back by a reader this
project did not write (pandas, webvtt-py, opentimelineio, the `timecode` library, PyAV)."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import av
import pandas as pd
import pytest
from typer.testing import CliRunner

from v2t_foley.flows.cli import app
from v2t_foley.foley_core.export import load_script
from v2t_foley.foley_core.export.segments import cut_segment, media_info, plan_windows
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.schema.script import Cue, FoleyScript
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.synthetic import SceneSpec, encode_video, scene_frames

runner = CliRunner()
NTSC = 30000 / 1001
DURATION = 20.0
SECRET = "s3cr3tKEYvalue"


def make_script(duration: float = DURATION) -> FoleyScript:
    return FoleyScript(
        foley=[
            Cue.at(0.5, 1.5, "Footsteps on wooden floorboards.", 0),
            Cue.at(7.0, 9.0, "A leather jacket rustles.", 1),
            Cue.at(16.0, 16.0, "A key turns in a lock.", 2),
        ],
        fx=[Cue.at(1.5, 1.55, "A door slams shut.", 0), Cue.at(12.0, 12.2, "A glass shatters on tiles.", 3)],
        ambience=[Cue.at(0.0, 6.0, "Quiet room tone."), Cue.at(6.0, duration, "Rain patters on a window.")],
        dialogue=[Cue.at(3.0, 5.0, "Someone whispers a warning.", 4)],
    )


EVENTS = [
    {
        "index": 0,
        "start": 0.5,
        "end": 1.6,
        "summary": "A man walks in and slams the door.",
        "kind": "motion",
        "reasoning": {
            "main_object": "A man in boots",
            "action": "walks in and slams the door",
            "context": "a wooden hallway",
            "sounds": ["heavy footsteps", "door slam"],
        },
    },
    {
        "index": 1,
        "start": 7.0,
        "end": 9.0,
        "summary": "He takes off his jacket.",
        "kind": "motion",
        "reasoning": {
            "main_object": "leather jacket",
            "action": "is pulled off",
            "context": "a dim living room",
            "sounds": ["leather creak", "cloth rustle"],
        },
    },
    {
        "index": 3,
        "start": 12.0,
        "end": 12.5,
        "summary": "A glass falls.",
        "kind": "audio_onset",
        "reasoning": {
            "main_object": "a wine glass",
            "action": "falls and breaks",
            "context": "a tiled kitchen floor",
            "sounds": ["glass shatter", "shards scatter"],
        },
    },
    {"index": 4, "start": 3.0, "end": 5.0, "summary": "A whisper.", "kind": "speech", "reasoning": None},
]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    """A 20 s video at 29.97 fps with a cut at 6 s and keyframes every 2 s, and a short one."""
    folder = tmp_path_factory.mktemp("export-media")
    spec = SceneSpec(duration=DURATION, fps=NTSC, cuts=(6.0, 13.0), motions=((0.5, 1.5), (7.0, 9.0)))
    video = encode_video(folder / "long.mp4", scene_frames(spec), spec.fps, options={"g": "60"})
    short_spec = SceneSpec(duration=4.0, fps=25.0, cuts=(2.0,))
    short = encode_video(folder / "short.mp4", scene_frames(short_spec), 25.0)
    script_file = folder / "clip.json"
    script_file.write_text(make_script().model_dump_json())
    return {"video": video, "short": short, "script": script_file, "folder": folder}


def _row(row_id: str, video: str, script: FoleyScript | None, *, duration: float, fps: float, **extra):
    trace = {
        "proposals": {
            "duration": duration,
            "cuts": [{"kind": "cut", "start": 6.0, "end": 6.0, "strength": 2}],
        }
    }
    return DatasetRow(
        id=row_id,
        video=video,
        split=extra.get("split", "train"),
        duration=duration,
        fps=fps,
        prompt_version="v1",
        model_id="m",
        backend="transformers",
        status="ok" if script else "failed",
        script=script.model_dump_json() if script else "",
        error="" if script else "the file is truncated",
        events=json.dumps(EVENTS if script else []),
        trace=json.dumps(trace) if script else "",
    )


@pytest.fixture(scope="module")
def store(media, tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("export-store") / "store")
    late = make_script(4.0).model_copy(
        update={"fx": [Cue.at(1.0, 1.2, "A click."), Cue.at(3.5, 6.0, "A boom past the end.")]}
    )
    rows = [
        _row("long", str(media["video"]), make_script(), duration=DURATION, fps=NTSC),
        _row("../evil/Id", str(media["short"]), late, duration=4.0, fps=25.0, split="test"),
        _row("broken", "/nowhere/broken.mp4", None, duration=0.0, fps=0.0),
    ]
    DatasetStore(uri).write_shard(rows, "run1", 0)
    return uri


def export(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, ["export", *args])
    summary = None
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    return result.exit_code, summary, result.output


def decoded(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, frames / float(stream.average_rate)


# --- load_script -----------------------------------------------------------------------------------


def test_load_script_takes_a_json_string_a_dict_or_a_script():
    script = make_script()
    assert load_script(script.model_dump_json()) == script
    assert load_script(script.model_dump()) == script
    assert load_script(script) is script
    struct = script.model_dump()
    struct["fx"][0]["event"] = None
    struct["dialogue"] = None  # a struct column may hold a null track
    assert load_script(struct).dialogue == []


@pytest.mark.parametrize("bad", ["", "not json", "[1, 2]", '{"foley": [{"start": 1}]}', '{"music": []}'])
def test_load_script_refuses_what_is_not_a_script(bad):
    from v2t_foley.foley_core.errors import InputError

    with pytest.raises(InputError):
        load_script(bad)


# --- cutting ----------------------------------------------------------------------------------------


def test_windows_snap_to_a_near_shot_cut_else_split_evenly():
    assert [(w.start, w.end) for w in plan_windows(20.0, 15.0, 1.0, cuts=[9.0])] == [(0.0, 9.0), (9.0, 20.0)]
    assert [(w.start, w.end) for w in plan_windows(20.0, 15.0, 1.0, cuts=[2.0])] == [
        (0.0, 10.0),
        (10.0, 20.0),
    ]
    windows = plan_windows(100.0, 15.0, 1.0)
    assert all(1.0 <= w.length <= 15.0 for w in windows) and windows[-1].end == 100.0
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))


def test_a_window_on_keyframes_is_stream_copied_else_reencoded(media, tmp_path):
    info = media_info(media["video"])
    keys = [k for k in info.keyframes if 1.0 < k < 15.0]
    assert len(keys) >= 2
    assert cut_segment(media["video"], tmp_path / "c.mp4", keys[0], keys[1], info) == "copy"
    assert cut_segment(media["video"], tmp_path / "r.mp4", 3.3, 5.1, info) == "reencode"
    for name, length in (("c.mp4", keys[1] - keys[0]), ("r.mp4", 1.8)):
        frames, seconds = decoded(tmp_path / name)
        assert frames > 0 and abs(seconds - length) <= 2 / NTSC


# --- TV2A -------------------------------------------------------------------------------------------


def test_hunyuan_from_a_store_cuts_1_to_15_s_segments_and_lists_the_failed_row(store, tmp_path):
    out = tmp_path / "hy"
    code, summary, output = export(store, "--format", "hunyuan", "--out", str(out))
    assert code == 0, output
    assert {s["id"]: s["reason"] for s in summary["skipped"]}["broken"].startswith("failed row")
    assert any("past the end" in w or "after the video" in w for w in summary["warnings"])
    table = pd.read_csv(out / "hunyuan.csv")
    assert list(table.columns) == ["index", "video", "prompt"]
    segments = json.loads((out / "segments.json").read_text())["segments"]
    assert len(table) == len(segments) == summary["segments"]
    for row, seg in zip(table.to_dict("records"), segments, strict=True):
        assert Path(row["video"]).is_file() and Path(row["video"]).parent == out
        _frames, seconds = decoded(Path(row["video"]))
        assert 1.0 <= seconds <= 15.0 + 1e-6 and abs(seconds - (seg["end"] - seg["start"])) <= 2 / NTSC
        assert row["prompt"] == seg["prompt"] and seg["tokens"] <= 77
        assert "whispers" not in row["prompt"]  # dialogue is never voiced
    long = [s for s in segments if s["source_id"] == "long"]
    assert [s["method"] for s in long] == ["copy", "copy"]  # no cut near 10 s: a keyframe, stream-copied
    assert long[0]["start"] == 0.0 and long[-1]["end"] == pytest.approx(DURATION, abs=0.05)
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(long))
    # the evil id stays inside the output folder
    assert all(Path(s["file"]).name == s["file"] and "/" not in s["file"] for s in segments)
    assert all(p.resolve().parent == out.resolve() for p in out.iterdir())


def test_hunyuan_per_cue_gives_one_padded_segment_per_sounding_cue(media, tmp_path):
    out = tmp_path / "pc"
    code, _summary, output = export(
        str(media["script"]),
        "--video",
        str(media["video"]),
        "--format",
        "hunyuan",
        "--out",
        str(out),
        "--per-cue",
    )
    assert code == 0, output
    segments = json.loads((out / "segments.json").read_text())["segments"]
    script = make_script()
    assert len(segments) == sum(len(script.track(t)) for t in ("foley", "fx", "ambience"))
    for seg in segments:
        (cue,) = seg["cues"]
        assert seg["start"] <= cue["start"] and (
            cue["end"] <= seg["end"] + 1e-3 or seg["end"] - seg["start"] >= 15
        )
        _frames, seconds = decoded(out / seg["file"])
        assert 1.0 - 1 / NTSC <= seconds <= 15.0 + 1e-6


def test_mmaudio_from_a_script_file_keeps_segments_under_max_seconds(media, tmp_path):
    out = tmp_path / "mm"
    code, _summary, output = export(
        str(media["script"]),
        "--video",
        str(media["video"]),
        "--format",
        "mmaudio",
        "--out",
        str(out),
        "--max-seconds",
        "5",
    )
    assert code == 0, output
    table = pd.read_csv(out / "mmaudio.tsv", sep="\t")
    captions = json.loads((out / "mmaudio.json").read_text())
    assert dict(zip(table["id"], table["label"].fillna(""), strict=True)) == captions
    assert (table["negative_prompt"] != "").all()
    for row in table.to_dict("records"):
        _frames, seconds = decoded(out / row["video"])
        assert seconds <= 5.0 + 1e-6 and abs(seconds - row["duration"]) <= 2 / NTSC


def test_thinksound_segments_share_one_whole_second_length_and_carry_the_reasoning(store, tmp_path):
    from open_clip.tokenizer import SimpleTokenizer

    out = tmp_path / "ts"
    code, _summary, output = export(store, "--format", "thinksound", "--out", str(out))
    assert code == 0, output
    table = pd.read_csv(out / "thinksound.csv", keep_default_na=False)
    assert list(table.columns) == ["id", "caption", "caption_cot"]
    lengths = {round(decoded(out / f"{i}.mp4")[1], 2) for i in table["id"]}
    assert lengths == {4.0}  # the shortest video is 4 s: every clip of the batch lasts 4 whole seconds
    tokenizer = SimpleTokenizer()
    for text in [*table["caption"], *table["caption_cot"]]:
        assert len(tokenizer.encode(text)) + 2 <= 77
    cot = " ".join(table["caption_cot"])
    assert "leather" in cot and "glass shatter" in cot and "wooden hallway" in cot  # objects, sounds, context


# --- post-production ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_one_caption_per_cue_with_its_track(media, tmp_path, fmt):
    import webvtt

    out = tmp_path / fmt
    code, _, output = export(
        str(media["script"]), "--video", str(media["video"]), "--format", fmt, "--out", str(out)
    )
    assert code == 0, output
    path = out / f"clip.{fmt}"
    captions = webvtt.from_srt(str(path)) if fmt == "srt" else webvtt.read(str(path))
    cues = make_script().cues()
    assert len(captions) == len(cues)
    expected = sorted((c.start, f"[{t.upper()}] {c.description}") for t, c in cues)
    got = sorted((c.start_in_seconds + c.start_time.milliseconds / 1000, c.text) for c in captions)
    assert [t for _, t in got] == [t for _, t in expected]
    assert all(abs(a - b) < 1e-3 for (a, _), (b, _) in zip(got, expected, strict=True))


def test_spotting_sheet_timecode_is_drop_frame_at_29_97(media, tmp_path):
    from timecode import Timecode

    out = tmp_path / "sp"
    code, _, output = export(
        str(media["script"]), "--video", str(media["video"]), "--format", "spotting", "--out", str(out)
    )
    assert code == 0, output
    table = pd.read_csv(out / "clip.spotting.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["Cue", "Track", "TC In", "TC Out", "Duration", "Description", "Event"]
    assert len(table) == len(make_script().cues())
    for row in table.to_dict("records"):
        assert ";" in row["TC In"]
        cue = next(
            c for t, c in make_script().cues() if c.description == row["Description"] and t == row["Track"]
        )
        tc_in, tc_out = Timecode("29.97", row["TC In"]), Timecode("29.97", row["TC Out"])
        assert tc_in.frames - 1 == round(cue.start * Fraction(30000, 1001))
        assert tc_out.frames - 1 == round(cue.end * Fraction(30000, 1001))
        assert Timecode("29.97", row["Duration"]).frames - 1 == tc_out.frames - tc_in.frames


def test_drop_frame_labels_agree_with_the_timecode_library_across_hours():
    from timecode import Timecode

    from v2t_foley.foley_core.export.spotting import timecode, timecode_rate

    for fps, name in ((NTSC, "29.97"), (60000 / 1001, "59.94"), (25.0, "25"), (24000 / 1001, "23.976")):
        rate = timecode_rate(fps)
        for frame in (0, 1, 1799, 1800, 17982, 17983, 107892, 250_001):
            assert timecode(frame, rate) == str(Timecode(name, frames=frame + 1)), (name, frame)


def test_otio_timeline_has_the_video_and_one_audio_track_per_script_track(store, tmp_path):
    import opentimelineio as otio

    out = tmp_path / "otio"
    code, _summary, output = export(store, "--format", "otio", "--out", str(out), "--ids", "long")
    assert code == 0, output
    timeline = otio.adapters.read_from_file(str(out / "long.otio"))
    video = [t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video]
    audio = {t.name: t for t in timeline.tracks if t.kind == otio.schema.TrackKind.Audio}
    assert len(video) == 1 and list(audio) == ["foley", "fx", "ambience", "dialogue"]
    assert video[0][0].duration().to_seconds() == pytest.approx(DURATION, abs=0.05)
    script = make_script()
    for name, track in audio.items():
        placed = [(c.range_in_parent(), c.name) for c in track.find_clips()]
        placed += [(m.marked_range, m.name) for m in track.markers]
        assert len(placed) == len(script.track(name))
        for span, label in placed:
            cue = next(c for c in script.track(name) if label.endswith(c.description))
            assert span.start_time.rate == pytest.approx(NTSC)
            assert abs(span.start_time.to_seconds() - cue.start) <= 1 / NTSC
            assert abs(span.end_time_exclusive().to_seconds() - cue.end) <= 1 / NTSC


def test_edl_and_fcp7_come_from_otio_adapters_and_read_back(store, tmp_path):
    import opentimelineio as otio

    out = tmp_path / "edl"
    code, _, output = export(store, "--format", "edl", "--out", str(out), "--ids", "long")
    assert code == 0, output
    edl = otio.adapters.read_from_file(str(out / "long.fx.edl"), rate=NTSC)
    assert len(list(edl.find_clips())) == len(make_script().fx)
    code, _, output = export(store, "--format", "fcp7", "--out", str(tmp_path / "x"), "--ids", "long")
    assert code == 0, output
    xml = otio.adapters.read_from_file(str(tmp_path / "x" / "long.xml"))
    assert len(xml.tracks) == 5


def test_reaper_regions_and_premiere_markers(store, tmp_path):
    out = tmp_path / "daw"
    for fmt in ("reaper", "premiere"):
        code, _, output = export(store, "--format", fmt, "--out", str(out), "--ids", "long")
        assert code == 0, output
    raw = (out / "long.regions.csv").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    regions = pd.read_csv(out / "long.regions.csv")
    assert list(regions.columns) == ["#", "Name", "Start", "End", "Length"]

    def seconds(text: str) -> float:
        minutes, secs = text.split(":")
        return int(minutes) * 60 + float(secs)

    cues = sorted(make_script().cues(), key=lambda tc: tc[1].start)
    assert len(regions) == len(cues)
    assert sorted(map(seconds, regions["Start"])) == pytest.approx(sorted(c.start for _, c in cues))
    for row in regions.to_dict("records"):
        assert seconds(row["End"]) - seconds(row["Start"]) == pytest.approx(seconds(row["Length"]), abs=1e-3)
    markers = pd.read_csv(out / "long.markers.txt", sep="\t", dtype=str)
    assert list(markers.columns) == ["Marker Name", "Description", "In", "Out", "Duration", "Marker Type"]
    assert len(markers) == len(cues) and set(markers["Marker Type"]) == {"Comment"}


# --- bad input and secrets ------------------------------------------------------------------------------


def test_unknown_format_lists_the_known_ones_and_exits_2(media, tmp_path):
    code, _, output = export(str(media["script"]), "--format", "wav", "--out", str(tmp_path))
    assert code == 2 and "hunyuan" in output and "premiere" in output and "Traceback" not in output


def test_a_missing_script_or_an_unreadable_video_exits_2(media, tmp_path):
    code, _, output = export(str(tmp_path / "none.json"), "--format", "srt", "--out", str(tmp_path))
    assert code == 2 and "Traceback" not in output
    code, _, output = export(
        str(media["script"]),
        "--video",
        str(tmp_path / "gone.mp4"),
        "--format",
        "hunyuan",
        "--out",
        str(tmp_path),
    )
    assert code == 2 and "Traceback" not in output


def test_cues_past_the_end_are_clipped_with_a_warning(store, tmp_path):
    code, summary, output = export(store, "--format", "srt", "--out", str(tmp_path), "--split", "test")
    assert code == 0, output
    assert summary["items"] == 1 and any("clipped" in w for w in summary["warnings"])
    (srt,) = tmp_path.glob("*.srt")
    assert "00:00:04,000" in srt.read_text() and "00:00:06,000" not in srt.read_text()
    assert srt.name.startswith("evil_Id-")  # the id went through safe_name


def test_credentials_in_a_video_uri_never_reach_the_outputs(tmp_path):
    uri = str(tmp_path / "store")
    video = f"s3://AKIAEXAMPLE:{SECRET}@bucket/clip.mp4?X-Amz-Signature={SECRET}"
    DatasetStore(uri).write_shard([_row("c", video, make_script(), duration=DURATION, fps=25.0)], "r", 0)
    out = tmp_path / "out"
    for fmt in ("otio", "fcp7", "spotting", "srt"):
        code, _, output = export(uri, "--format", fmt, "--out", str(out))
        assert code == 0, output
        assert SECRET not in output
    for path in out.iterdir():
        assert SECRET not in path.read_text(encoding="utf-8"), path.name
    assert "***@bucket/clip.mp4" in (out / "c.otio").read_text()
