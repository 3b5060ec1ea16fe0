"""The `foley` command as users run it: a real subprocess for the end-to-end run, typer's runner
(same process, same code) for the many bad-input cases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from v2t_foley.flows.cli import app
from v2t_foley.foley_core.schema import validate_script
from v2t_foley.foley_core.video import open_video

runner = CliRunner()


def test_script_end_to_end_in_a_subprocess(scene_video, tmp_path, foley_cache):
    out, trace = tmp_path / "script.json", tmp_path / "trace.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "v2t_foley.flows.cli",
            "script",
            str(scene_video),
            "--model",
            "tiny-random",
            "--out",
            str(out),
            "--trace",
            str(trace),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FOLEY_CACHE_DIR": str(foley_cache)},
    )
    assert done.returncode == 0, done.stderr
    assert "meaningless" in done.stderr  # the tiny model is never passed off as real
    script = validate_script(json.loads(out.read_text()), open_video(str(scene_video)).info.duration)
    assert script.cues()
    recorded = json.loads(trace.read_text())
    steps = [call["step"] for call in recorded["calls"]]
    assert steps[0] == "describe" and steps[-1] == "synthesize" and "reason" in steps  # measured timing
    for call in recorded["calls"]:
        assert call["prompt"] and call["raw"] and call["answer"] is not None and call["frame_times"]
    assert recorded["prompt_version"] and recorded["events"] and recorded["reasoning"]
    assert recorded["timing"] == "measured" and recorded["proposals"]["cuts"]


def test_script_prints_to_stdout(scene_video):
    result = runner.invoke(app, ["script", str(scene_video), "--model", "tiny-random"])
    assert result.exit_code == 0, result.output
    start = result.stdout.index("{")
    payload = json.loads(result.stdout[start:])
    assert set(payload) == {"foley", "fx", "ambience", "dialogue"}


@pytest.mark.parametrize(
    "reason", ["missing", "empty", "not_a_video", "corrupt", "no_video_stream", "zero_duration"]
)
def test_bad_video_exits_2_with_the_reason_and_no_traceback(bad_videos, reason):
    path = bad_videos[reason]
    # A model that cannot load: the video must be rejected before any model is touched.
    result = runner.invoke(app, ["script", str(path), "--model", "/no/such/model"])
    assert result.exit_code == 2
    assert "bad input" in result.output and str(path) in result.output
    assert "model" not in result.output.split(str(path), 1)[1]
    assert "Traceback" not in result.output


def test_unknown_model_exits_2(scene_video, tmp_path):
    result = runner.invoke(app, ["script", str(scene_video), "--model", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "cannot load model" in result.output
    assert "Traceback" not in result.output


def test_bad_outputs_and_device_exit_2_before_any_model_loads(scene_video, tmp_path):
    """The chain's work would be lost to a bad --out at the end: each is refused first (a model that
    cannot load proves nothing was loaded)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    cases = [
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(a_file / "x.json")], "is a file"),
        (["--trace", str(a_file / "t" / "x.json")], "is a file"),
        (["--device", "gpu0"], "no torch device"),
    ]
    for option, message in cases:
        result = runner.invoke(app, ["script", str(scene_video), "--model", "/no/such/model", *option])
        assert result.exit_code == 2 and message in result.output, (option, result.output)
        assert "cannot load model" not in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["smoke", "--out-dir", str(a_file)])
    assert result.exit_code == 2 and "is a file" in result.output
    assert a_file.read_text() == "keep me"


def test_openai_backend_needs_a_url(scene_video):
    result = runner.invoke(app, ["script", str(scene_video), "--backend", "openai", "--model", "m"])
    assert result.exit_code == 2 and "--base-url" in result.output


def test_smoke(tmp_path: Path):
    result = runner.invoke(app, ["smoke", "--out-dir", str(tmp_path / "smoke")])
    assert result.exit_code == 0, result.output
    assert "smoke ok" in result.output
    for name in ("clip.mp4", "script.json", "trace.json"):
        assert (tmp_path / "smoke" / name).stat().st_size > 0


def test_build_dataset_demo_is_the_main_job(tmp_path: Path, prefect_harness):
    result = runner.invoke(app, ["build-dataset", "--demo", "--demo-dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "meaningless" in result.output and "6 (5 ok, 1 failed)" in result.output
    timed = result.output[result.output.index("seconds per step task") :]  # where the build's time went
    assert all(
        re.search(rf"{re.escape(task)}\s+\d", timed) for task in ("propose", "identify+reason+synthesize")
    )
    import datasets

    loaded = datasets.load_dataset(str(tmp_path / "demo" / "store"))
    statuses = sorted(s for split in loaded.values() for s in split["status"])
    assert statuses == ["failed"] + ["ok"] * 5


def test_build_dataset_with_a_broken_manifest_exits_2(tmp_path: Path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n/a.mp4\n")
    result = runner.invoke(
        app, ["build-dataset", "--manifest", str(manifest), "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 2 and "no 'video' column" in result.output


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--shard-size", "0"], "--shard-size must be at least 1"),
        (["--limit", "-1"], "--limit must be 0 or more"),
        (["--shard-runs", "-1"], "--shard-runs must be 0 (a run per shard) or more"),
        (["--shard-runs", "4"], "--shard-runs needs --work-pool"),
        (["--wait-for-store", "-3"], "--wait-for-store must be 0 or more"),
        (["--device", "gpu0"], "no torch device"),
        (["--timing", "guess"], "timing must be"),
        (["--chunk-seconds", "-1"], "chunk_seconds must be positive"),
        (["--license", "Not a license!"], "no Hub license id"),
    ],
)
def test_build_options_are_checked_before_anything_runs(tmp_path: Path, option: list[str], message: str):
    """A shard of 0 videos or a batch of 0 requests never ends: each is refused up front, and the store
    is not even created."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("video\n/a.mp4\n")
    store = tmp_path / "s"
    args = ["build-dataset", "--manifest", str(manifest), "--store", str(store), "--model", "tiny-random"]
    result = runner.invoke(app, [*args, *option])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not store.exists()


def test_a_bad_count_of_measuring_processes_is_refused_before_anything_runs(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FOLEY_MEASURE_PROCESSES", "all")
    manifest = tmp_path / "m.csv"
    manifest.write_text("video\n/a.mp4\n")
    store = tmp_path / "s"
    result = runner.invoke(app, ["build-dataset", "--manifest", str(manifest), "--store", str(store)])
    assert result.exit_code == 2 and "FOLEY_MEASURE_PROCESSES='all': give a count" in result.output
    assert "Traceback" not in result.output and not store.exists()


@pytest.mark.parametrize(
    "mistake", ["store_is_a_file", "no_manifest", "no_video_column", "no_token", "bad_decoder"]
)
def test_user_mistakes_exit_2_with_one_line_and_no_traceback(tmp_path: Path, mistake: str, foley_cache):
    """In a subprocess, as a user's terminal sees it (Prefect's own logging included)."""
    import os
    import subprocess
    import sys

    good = tmp_path / "m.csv"
    good.write_text("video\n/a.mp4\n")
    (tmp_path / "afile").write_text("not a folder")
    args = {
        "store_is_a_file": ["build-dataset", "--manifest", str(good), "--store", str(tmp_path / "afile")],
        "no_manifest": [
            "build-dataset",
            "--manifest",
            str(tmp_path / "nope.csv"),
            "--store",
            str(tmp_path / "s"),
        ],
        "no_video_column": [
            "build-dataset",
            "--manifest",
            str(tmp_path / "bad.csv"),
            "--store",
            str(tmp_path),
        ],
        "no_token": ["publish", "--store", str(tmp_path / "s"), "--repo-id", "org/x"],
        # checked before Prefect starts, not inside the flow (whose failure logs a traceback)
        "bad_decoder": [
            "build-dataset",
            "--manifest",
            str(good),
            "--store",
            str(tmp_path / "s"),
            "--decoder",
            "x",
        ],
    }[mistake]
    (tmp_path / "bad.csv").write_text("path\n/a.mp4\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env |= {"FOLEY_CACHE_DIR": str(foley_cache), "PREFECT_HOME": str(tmp_path / "prefect")}
    done = subprocess.run(
        [sys.executable, "-m", "v2t_foley.flows.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bad input:"), done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["script", ""], "no video given"),
        (["script", "SCENE", "--model", "./no-such-model-folder"], "no such folder"),
    ],
)
def test_an_empty_video_or_a_missing_model_folder_says_what_is_wrong(scene_video, args, message):
    args = [str(scene_video) if a == "SCENE" else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "repo id" not in result.output.lower() and "Traceback" not in result.output
