"""Prompt experiments: two prompt sets over the same videos, the comparison report, the side-by-side
review page (headless Chromium) and training on a chosen version of an experiment's store."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from tests.cdp import Browser, chromium_path
from tests.conftest import make_manifest_videos
from v2t_foley.flows.cli import app
from v2t_foley.foley_core.experiment import compare_versions, write_report
from v2t_foley.foley_core.prompts import default_prompt_dir
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.schema.script import Cue, FoleyScript
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.training.config import TrainConfig
from v2t_foley.training.trainer import load_examples

runner = CliRunner()


def row(row_id: str, version: str, script: FoleyScript | None, **extra) -> dict:
    trace = {"calls": [{"new_tokens": 10}, {"new_tokens": 5}]}
    return DatasetRow(
        id=row_id,
        video=f"/v/{row_id}.mp4",
        status="ok" if script else "failed",
        script=script,
        duration=4.0,
        trace=json.dumps(trace),
        timings=json.dumps({"identify": 1.0, "reason": 0.5}),
        prompt_version=version,
        model_id="m",
        backend="transformers",
        split="train",
        error="" if script else "boom",
        **extra,
    ).model_dump()


def test_compare_versions_measures_each_version_and_their_agreement(tmp_path):
    a = FoleyScript(foley=[Cue.at(0.5, 1.0, "Steps on wood."), Cue.at(2.0, 2.5, "A door closes.")])
    b = FoleyScript(foley=[Cue.at(0.6, 1.1, "Steps on a wooden floor.")], fx=[Cue.at(3.0, 3.2, "A bang.")])
    rows = [row("x", "A", a), row("y", "A", a), row("x", "B", b), row("y", "B", None), row("z", "B", b)]

    def similarity(left: list[str], right: list[str]) -> list[float]:
        return [0.5 for _ in left]

    report = compare_versions(rows, ["A", "B"], ids=["x", "y"], similarity=similarity, references={"x": a})
    stats = report["stats"]
    assert (stats["A"]["videos"], stats["A"]["validity_rate"], stats["B"]["validity_rate"]) == (2, 1.0, 0.5)
    assert stats["A"]["cues_per_track"]["foley"] == 2.0 and stats["B"]["cues_per_track"]["fx"] == 1.0
    assert stats["A"]["tokens_per_video"] == 15 and stats["A"]["seconds_per_video"] == 1.5
    assert stats["A"]["model_calls_per_video"] == 2
    assert stats["A"]["vocabulary"] == 6 and 0 < stats["A"]["vocabulary_diversity"] <= 1
    agreement = report["agreement"]["B"]["overall"]
    # x: one of A's two cues matched (B's fx cue is extra); y: B failed, both of A's cues missed
    assert (agreement["tp"], agreement["fp"], agreement["fn"]) == (1, 1, 3)
    assert agreement["description_similarity"] == 0.5 and agreement["mean_iou"] > 0.6
    assert report["against_references"]["A"]["overall"]["f1"] == 1.0
    paths = write_report(report, tmp_path / "out")
    markdown = paths["markdown"].read_text()
    assert "| validity rate | 1.000 | 0.500 |" in markdown and "Agreement with A" in markdown
    assert paths["plot"].stat().st_size > 5000 and json.loads(paths["json"].read_text())["versions"] == [
        "A",
        "B",
    ]


def test_experiment_cli_then_compare_review_and_train_on_a_version(tmp_path, prefect_harness, scene_video):
    manifest, _ = make_manifest_videos(tmp_path / "videos")
    prompts_a, prompts_b = tmp_path / "prompts-a", tmp_path / "prompts-b"
    shutil.copytree(default_prompt_dir(), prompts_a)
    shutil.copytree(default_prompt_dir(), prompts_b)
    identify = prompts_b / "identify.txt"
    identify.write_text(identify.read_text() + "\nName only events you can see clearly.\n")
    store, out = str(tmp_path / "store"), tmp_path / "report"
    result = runner.invoke(
        app,
        [
            "experiment",
            "--manifest",
            manifest,
            "--store",
            store,
            "--prompts",
            str(prompts_a),
            "--prompts",
            str(prompts_b),
            "--model",
            "tiny-random",
            "--limit",
            "2",
            "--out",
            str(out),
            "--no-similarity",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    va, vb = report["versions"]
    assert va != vb and report["labels"] == {va: "prompts-a", vb: "prompts-b"}
    assert report["videos"] == 2 and report["stats"][va]["videos"] == 2 == report["stats"][vb]["videos"]
    assert report["agreement"][vb]["against"] == va and "overall" in report["agreement"][vb]
    assert (out / "report.md").exists() and (out / "experiment.png").stat().st_size > 5000
    rows = DatasetStore(store).read_rows()
    assert sorted((r["id"], r["prompt_version"]) for r in rows) == sorted(
        (i, v) for i in ("good0", "good1") for v in (va, vb)
    )

    # the side-by-side page, in a real browser
    site = tmp_path / "site"
    shown = runner.invoke(app, ["review", store, "--out", str(site), "--compare", va, vb])
    assert shown.exit_code == 0, shown.output
    assert runner.invoke(app, ["review", store, "--out", str(site), "--compare", va, "nope"]).exit_code == 2
    browser = Browser(chromium_path())
    try:
        browser.navigate((site / "compare.html").as_uri())
        assert browser.js("document.querySelectorAll('#pairs tbody tr').length") == 2
        browser.navigate((site / "compare" / "good0.html").as_uri())
        assert browser.js("document.querySelectorAll('.side').length") == 2
        headings = browser.js("[...document.querySelectorAll('.side h2')].map(h => h.textContent)")
        assert va in headings[0] and vb in headings[1]
        counts = browser.js(
            "[...document.querySelectorAll('.side')].map(s => s.querySelectorAll('.cue').length)"
        )
        by_version = {r["prompt_version"]: r for r in rows if r["id"] == "good0"}
        for count, version in zip(counts, (va, vb), strict=True):
            script = by_version[version]["script"] or {}
            assert count == sum(len(script.get(t) or []) for t in ("foley", "fx", "ambience", "dialogue"))
        assert "B against A" in browser.js("document.getElementById('agreement').textContent")
    finally:
        browser.close()

    # training on an experiment's store: the newest version by default, or the one named
    def versions_trained(**changes) -> set[str]:
        config = TrainConfig(store=store, output_dir=str(tmp_path / "adapter"), eval_fraction=0.0, **changes)
        data = load_examples(config, tmp_path / "adapter")
        return {e.key[1] for split in data.splits.values() for e in split}

    assert versions_trained() == {vb}
    assert versions_trained(prompt_version=va) == {va}
