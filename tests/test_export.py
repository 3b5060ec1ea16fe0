"""`foley export`: reading scripts, cutting windows, the segments for text-video-to-audio models
(HunyuanVideo-Foley, MMAudio, ThinkSound) read back with PyAV and pandas, and bad input; the
post-production formats are in test_export_post.py."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.export_data import DURATION, NTSC, SECRET, decoded, export, make_script, store_row
from v2t_foley.foley_core.export import load_script
from v2t_foley.foley_core.export.segments import cut_segment, media_info, plan_windows
from v2t_foley.foley_core.store import DatasetStore

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


def test_a_window_on_keyframes_is_stream_copied_else_reencoded(export_media, tmp_path):
    info = media_info(export_media["video"])
    keys = [k for k in info.keyframes if 1.0 < k < 15.0]
    assert len(keys) >= 2
    assert cut_segment(export_media["video"], tmp_path / "c.mp4", keys[0], keys[1], info) == "copy"
    assert cut_segment(export_media["video"], tmp_path / "r.mp4", 3.3, 5.1, info) == "reencode"
    for name, length in (("c.mp4", keys[1] - keys[0]), ("r.mp4", 1.8)):
        frames, seconds = decoded(tmp_path / name)
        assert frames > 0 and abs(seconds - length) <= 2 / NTSC


# --- TV2A -------------------------------------------------------------------------------------------


def test_hunyuan_from_a_store_cuts_1_to_15_s_segments_and_lists_the_failedstore_row(export_store, tmp_path):
    out = tmp_path / "hy"
    code, summary, output = export(export_store, "--format", "hunyuan", "--out", str(out))
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


def test_hunyuan_per_cue_gives_one_padded_segment_per_sounding_cue(export_media, tmp_path):
    out = tmp_path / "pc"
    code, _summary, output = export(
        str(export_media["script"]),
        "--video",
        str(export_media["video"]),
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


def test_mmaudio_from_a_script_file_keeps_segments_under_max_seconds(export_media, tmp_path):
    out = tmp_path / "mm"
    code, _summary, output = export(
        str(export_media["script"]),
        "--video",
        str(export_media["video"]),
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


def test_thinksound_segments_share_one_whole_second_length_and_carry_the_reasoning(export_store, tmp_path):
    from open_clip.tokenizer import SimpleTokenizer

    out = tmp_path / "ts"
    code, _summary, output = export(export_store, "--format", "thinksound", "--out", str(out))
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


# --- bad input and secrets ------------------------------------------------------------------------------


def test_unknown_format_lists_the_known_ones_and_exits_2(export_media, tmp_path):
    code, _, output = export(str(export_media["script"]), "--format", "wav", "--out", str(tmp_path))
    assert code == 2 and "hunyuan" in output and "premiere" in output and "Traceback" not in output


def test_a_missing_script_or_an_unreadable_video_exits_2(export_media, tmp_path):
    code, _, output = export(str(tmp_path / "none.json"), "--format", "srt", "--out", str(tmp_path))
    assert code == 2 and "Traceback" not in output
    code, _, output = export(
        str(export_media["script"]),
        "--video",
        str(tmp_path / "gone.mp4"),
        "--format",
        "hunyuan",
        "--out",
        str(tmp_path),
    )
    assert code == 2 and "Traceback" not in output


def test_bad_options_and_outputs_exit_2_before_anything_is_written(export_media, export_store, tmp_path):
    script, video = str(export_media["script"]), str(export_media["video"])
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    cases = [
        ([script, "--video", video, "--format", "spotting", "--fps", "-5"], "--fps"),
        ([script, "--video", video, "--format", "spotting", "--fps", "0"], "--fps"),
        ([script, "--video", video, "--format", "srt", "--out", str(a_file)], "is a file"),
        ([script, "--video", video, "--format", "srt", "--out", str(a_file / "x")], "is a file"),
        ([export_store, "--format", "srt", "--ids", "no-such-id"], "no such id in the store"),
        ([export_store, "--format", "srt", "--split", "nope"], "no ok rows that --split/--ids select"),
        ([export_store, "--format", "srt", "--ids", "broken"], "nothing exported: 1 skipped"),
        ([script, "--video", str(tmp_path / "gone.mp4"), "--format", "srt"], "gone.mp4"),
    ]
    for k, (args, message) in enumerate(cases):
        out = ["--out", str(tmp_path / f"out{k}" / "nested")] if "--out" not in args else []
        code, _, output = export(*args, *out)
        assert code == 2 and message in output and "Traceback" not in output, (args, output)
        assert not (tmp_path / f"out{k}").exists(), args  # no empty folder left behind, parents included
    assert a_file.read_text() == "keep me"


def test_a_frame_rate_smpte_lacks_names_the_rate_and_the_fix(export_media, tmp_path):
    args = [str(export_media["script"]), "--video", str(export_media["video"]), "--format", "edl"]
    code, _, output = export(*args, "--fps", "12", "--out", str(tmp_path / "a"))
    assert code == 2 and "12 fps" in output and "--fps" in output
    code, _, output = export(*args, "--fps", "24", "--out", str(tmp_path / "b"))
    assert code == 0, output


def test_cues_past_the_end_are_clipped_with_a_warning(export_store, tmp_path):
    code, summary, output = export(export_store, "--format", "srt", "--out", str(tmp_path), "--split", "test")
    assert code == 0, output
    assert summary["items"] == 1 and any("clipped" in w for w in summary["warnings"])
    (srt,) = tmp_path.glob("*.srt")
    assert "00:00:04,000" in srt.read_text() and "00:00:06,000" not in srt.read_text()
    assert srt.name.startswith("evil_Id-")  # the id went through safe_name


def test_credentials_in_a_video_uri_never_reach_the_outputs(tmp_path):
    uri = str(tmp_path / "store")
    video = f"s3://AKIAEXAMPLE:{SECRET}@bucket/clip.mp4?X-Amz-Signature={SECRET}"
    DatasetStore(uri).write_shard([store_row("c", video, make_script(), duration=DURATION, fps=25.0)], "r", 0)
    out = tmp_path / "out"
    for fmt in ("otio", "fcp7", "spotting", "srt"):
        code, _, output = export(uri, "--format", fmt, "--out", str(out))
        assert code == 0, output
        assert SECRET not in output
    for path in out.iterdir():
        assert SECRET not in path.read_text(encoding="utf-8"), path.name
    assert "***@bucket/clip.mp4" in (out / "c.otio").read_text()
