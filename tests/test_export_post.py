"""`foley export` for post-production: subtitles, spotting sheets (drop-frame timecode), OTIO timelines
and their EDL / FCP 7 XML adapters, REAPER regions and Premiere markers, each read back by a reader this
project did not write (pandas, webvtt-py, opentimelineio, the `timecode` library)."""

from __future__ import annotations

from fractions import Fraction

import pandas as pd
import pytest

from tests.export_data import DURATION, NTSC, export, make_script

# --- post-production ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_one_caption_per_cue_with_its_track(export_media, tmp_path, fmt):
    import webvtt

    out = tmp_path / fmt
    code, _, output = export(
        str(export_media["script"]), "--video", str(export_media["video"]), "--format", fmt, "--out", str(out)
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


def test_spotting_sheet_timecode_is_drop_frame_at_29_97(export_media, tmp_path):
    from timecode import Timecode

    out = tmp_path / "sp"
    code, _, output = export(
        str(export_media["script"]),
        "--video",
        str(export_media["video"]),
        "--format",
        "spotting",
        "--out",
        str(out),
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


def test_otio_timeline_has_the_video_and_one_audio_track_per_script_track(export_store, tmp_path):
    import opentimelineio as otio

    out = tmp_path / "otio"
    code, _summary, output = export(export_store, "--format", "otio", "--out", str(out), "--ids", "long")
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


def test_edl_and_fcp7_come_from_otio_adapters_and_read_back(export_store, tmp_path):
    import opentimelineio as otio

    out = tmp_path / "edl"
    code, _, output = export(export_store, "--format", "edl", "--out", str(out), "--ids", "long")
    assert code == 0, output
    edl = otio.adapters.read_from_file(str(out / "long.fx.edl"), rate=NTSC)
    assert len(list(edl.find_clips())) == len(make_script().fx)
    code, _, output = export(export_store, "--format", "fcp7", "--out", str(tmp_path / "x"), "--ids", "long")
    assert code == 0, output
    xml = otio.adapters.read_from_file(str(tmp_path / "x" / "long.xml"))
    assert len(xml.tracks) == 5


def test_reaper_regions_and_premiere_markers(export_store, tmp_path):
    out = tmp_path / "daw"
    for fmt in ("reaper", "premiere"):
        code, _, output = export(export_store, "--format", fmt, "--out", str(out), "--ids", "long")
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


def test_edl_skips_script_tracks_with_no_cue(export_media, tmp_path):
    """Most scripts leave a track empty; CMX 3600 has no EDL of no events, so that track gets no file
    and the others still do."""
    import opentimelineio as otio

    script = make_script().model_copy(update={"foley": [], "dialogue": []})
    path = tmp_path / "sparse.foley.json"
    path.write_text(script.model_dump_json())
    out = tmp_path / "edl"
    code, _, output = export(
        str(path), "--video", str(export_media["video"]), "--format", "edl", "--out", str(out)
    )
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["sparse.ambience.edl", "sparse.fx.edl"]
    for track in ("ambience", "fx"):
        edl = otio.adapters.read_from_file(str(out / f"sparse.{track}.edl"), rate=NTSC)
        assert len(list(edl.find_clips())) == len(script.track(track))
