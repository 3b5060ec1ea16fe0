"""`foley eval` on folders of scripts and on the factory's store, with the real embedding model."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from v2t_foley.flows.cli import app
from v2t_foley.foley_core.schema import Cue, FoleyScript
from v2t_foley.foley_core.synthetic import SceneSpec, reference_script

runner = CliRunner()


def test_eval_folders_writes_report_and_plots(tmp_path: Path, scene_video):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    reference = reference_script(SceneSpec())
    (ref / "a.json").write_text(reference.model_dump_json())
    (ref / "b.json").write_text(reference.model_dump_json())
    (pred / "a.json").write_text(FoleyScript(fx=[Cue.at(1.55, 1.6, "A sharp click.")]).model_dump_json())
    (pred / "b.json").write_text("{not json")
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(scene_video.read_bytes())
    result = runner.invoke(
        app,
        [
            "eval",
            "--pred",
            str(pred),
            "--ref",
            str(ref),
            "--out",
            str(tmp_path / "out"),
            "--videos",
            str(videos),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["json_validity"] == 0.5
    fx = report["tracks"]["fx"]
    assert (fx["tp"], fx["fp"], fx["fn"]) == (1, 0, 1)  # b's click is missed: its prediction is invalid
    assert fx["description_similarity"] > 0.5  # "A sharp click." vs "A sharp click of an impact."
    for name in ("a.png", "b.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000
    assert "overall" in result.output


def test_eval_reads_the_factory_store(tmp_path: Path):
    from v2t_foley.foley_core.schema.rows import DatasetRow
    from v2t_foley.foley_core.store import DatasetStore

    reference = reference_script(SceneSpec())
    store = DatasetStore(str(tmp_path / "store"))
    base = {
        "video": "/nowhere.mp4",
        "split": "train",
        "prompt_version": "v",
        "model_id": "m",
        "backend": "transformers",
    }
    store.write_shard(
        [
            DatasetRow(id="a", status="ok", script=reference.model_dump_json(), **base),
            DatasetRow(id="b", status="failed", error="corrupt", **base),
        ],
        "run",
        0,
    )
    ref = tmp_path / "ref"
    ref.mkdir()
    for vid in ("a", "b"):
        (ref / f"{vid}.json").write_text(reference.model_dump_json())
    result = runner.invoke(
        app,
        [
            "eval",
            "--pred",
            str(tmp_path / "store"),
            "--ref",
            str(ref),
            "--out",
            str(tmp_path / "out"),
            "--no-similarity",
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["json_validity"] == 0.5
    assert (
        report["per_video"]["a"]["overall"]["f1"] == 1.0 and report["per_video"]["b"]["overall"]["f1"] == 0.0
    )


def test_eval_without_references_is_bad_input(tmp_path: Path):
    result = runner.invoke(app, ["eval", "--pred", str(tmp_path), "--ref", str(tmp_path / "none")])
    assert result.exit_code == 2 and "reference" in result.output
