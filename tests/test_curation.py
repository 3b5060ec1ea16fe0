"""Curation end to end: decide and edit on the review page in headless Chromium, export, apply, train.

A rejected row leaves the training data, an edited cue becomes the training target, a bad edit is
rejected with its row and reason while the rest is recorded, and the latest decision per row wins.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from tests.cdp import Browser, chromium_path
from v2t_foley.flows.cli import app
from v2t_foley.foley_core.curation import apply_curation, curation_status, latest_decisions
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.schema.script import Cue, FoleyScript
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.store.verify import verify
from v2t_foley.training.config import TrainConfig
from v2t_foley.training.data import curate_rows, read_store
from v2t_foley.training.trainer import load_examples

runner = CliRunner()
SCRIPT = FoleyScript(
    foley=[Cue.at(0.4, 0.9, "Footsteps on wood.", 0), Cue.at(2.2, 2.6, "A cup is set down.", 1)],
    ambience=[Cue.at(0.0, 3.9, "Quiet room tone.")],
)
IDS = ("clip-a", "clip-b", "clip-c")


def make_store(root: Path, video: Path) -> DatasetStore:
    store = DatasetStore(str(root))
    trace = json.dumps({"frame_times": [0.0, 1.0, 2.0, 3.0]})
    rows = [
        DatasetRow(
            id=row_id,
            video=str(video),
            sha256=f"{k:064x}",
            status="ok",
            script=SCRIPT,
            duration=4.0,
            trace=trace,
            prompt_version="v1",
            model_id="tiny-random",
            backend="transformers",
            split="train",
        )
        for k, row_id in enumerate(IDS)
    ]
    store.write_shard(rows, "run1", 0)
    return store


def training_config(store: DatasetStore, output: Path, **changes) -> TrainConfig:
    return TrainConfig(
        store=store.uri, output_dir=str(output), base_model="tiny-random", eval_fraction=0.0, **changes
    )


def targets(store: DatasetStore, output: Path, **changes) -> dict[str, dict]:
    data = load_examples(training_config(store, output, **changes), output)
    return {e.id: json.loads(e.target) for e in data.splits["train"]} | {"_used": data.used}


def wait_for_file(path: Path, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size and not path.with_suffix(".json.crdownload").exists():
            return path.read_text()
        time.sleep(0.1)
    raise TimeoutError(f"no download at {path}")


def test_reject_and_edit_on_the_page_then_apply_and_train(tmp_path, scene_video):
    binary = chromium_path()
    store = make_store(tmp_path / "store", scene_video)
    site = tmp_path / "site"
    assert runner.invoke(app, ["review", store.uri, "--out", str(site)]).exit_code == 0
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    browser = Browser(binary, width=1000, height=900)
    try:
        browser.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        browser.navigate((site / "rows" / "clip-a.html").as_uri())
        notice = browser.js("document.getElementById('storage-notice').textContent")
        assert "localStorage" in notice and "until you export" in notice and "loses nothing" in notice
        browser.click("[data-decision='rejected']")
        assert browser.js("document.getElementById('decision-state').textContent") == "rejected"

        browser.navigate((site / "rows" / "clip-b.html").as_uri())
        browser.js(
            '(()=>{const tr=document.querySelector(\'#edit tr[data-track="foley"][data-index="1"]\');'
            "tr.querySelector('.text').value='A porcelain cup clinks on a saucer.';"
            "tr.querySelector('.start').value='2.5';"
            "tr.querySelector('.text').dispatchEvent(new Event('change',{bubbles:true}));})()"
        )
        assert browser.js("document.getElementById('decision-state').textContent") == "approved (edited)"
        # clip-c: a bad edit (ends before it starts), which apply must reject alone
        browser.navigate((site / "rows" / "clip-c.html").as_uri())
        browser.click("[data-decision='needs-fix']")
        browser.js(
            "(()=>{const tr=document.querySelector('#edit tr[data-track=\"ambience\"]');"
            "tr.querySelector('.end').value='-1';"
            "tr.querySelector('.end').dispatchEvent(new Event('change',{bubbles:true}));})()"
        )
        assert "ends before it starts" in browser.js("document.getElementById('edit-problems').textContent")

        # nothing is lost by leaving: the index (a new page load) shows every decision from localStorage
        browser.navigate((site / "index.html").as_uri())
        shown = browser.js(
            "Object.fromEntries([...document.querySelectorAll('tbody tr')].map(tr=>"
            "[tr.querySelector('a').textContent, tr.querySelector('td.curation').textContent]))"
        )
        assert shown == {"clip-a": "rejected", "clip-b": "approved (edited)", "clip-c": "needs-fix (edited)"}
        assert "3 decision(s) not exported" in browser.js("document.getElementById('pending').textContent")
        browser.js(
            "document.getElementById('curator').value='ada';"
            "document.getElementById('curator').dispatchEvent(new Event('input'))"
        )
        browser.click("#export")
        exported = wait_for_file(downloads / "curation.json")
        assert (
            browser.js("document.getElementById('pending').textContent") == "nothing waiting to be exported"
        )
    finally:
        browser.close()

    document = json.loads(exported)
    assert {d["id"]: d["decision"] for d in document["decisions"]} == {
        "clip-a": "rejected",
        "clip-b": "approved",
        "clip-c": "needs-fix",
    }
    assert all(d["curator"] == "ada" for d in document["decisions"])
    export_file = tmp_path / "curation.json"
    export_file.write_text(exported)

    result = runner.invoke(app, ["curate", store.uri, "--apply", str(export_file)])
    assert result.exit_code == 2, result.output  # one decision was rejected ...
    assert "not recorded for 'clip-c'" in result.output and "ambience.0.end" in result.output
    assert "2 decision(s) recorded" in result.output  # ... and the other two are kept
    decisions = latest_decisions(store)
    assert {k[0]: d.decision for k, d in decisions.items()} == {"clip-a": "rejected", "clip-b": "approved"}
    assert decisions[("clip-a", "v1", "tiny-random")].curator == "ada"
    assert verify(store).clean  # curation files are outside data/ and _shards/
    assert "1 approved, 1 rejected" in (tmp_path / "store" / "README.md").read_text()

    status = runner.invoke(app, ["curate", store.uri, "--status"])
    assert status.exit_code == 0, status.output
    summary = json.loads(status.stdout.strip().splitlines()[-1])
    assert (summary["approved"], summary["rejected"], summary["undecided"], summary["edited"]) == (1, 1, 1, 1)

    # training: the rejected row is out, the edit is the target
    found = targets(store, tmp_path / "adapter")
    assert set(found) - {"_used"} == {"clip-b", "clip-c"}
    edited = found["clip-b"]["foley"]
    assert [c["description"] for c in edited] == ["Footsteps on wood.", "A porcelain cup clinks on a saucer."]
    assert edited[1]["start"] == 2.5
    assert found["clip-c"]["foley"][1]["description"] == "A cup is set down."  # not edited: the chain's
    used = found["_used"]["curation"]
    assert (used["used"], used["edited"], used["left_out_rejected"], used["undecided"]) == (2, 1, 1, 1)
    assert set(targets(store, tmp_path / "a2", curation="approved")) - {"_used"} == {"clip-b"}
    assert set(targets(store, tmp_path / "a3", curation="ignore")) - {"_used"} == set(IDS)


def test_latest_decision_wins_and_bad_input_is_named(tmp_path, scene_video):
    store = make_store(tmp_path / "store", scene_video)
    key = {"id": "clip-a", "prompt_version": "v1", "model": "tiny-random"}

    def export(*decisions: dict) -> str:
        return json.dumps({"format": "v2t-foley-curation/1", "curator": "bo", "decisions": list(decisions)})

    first = apply_curation(
        store, export({**key, "decision": "rejected", "decided_at": "2026-01-02T00:00:00Z"})
    )
    assert first.path and first.path.startswith("_curation/") and not first.rejected
    # an older decision applied later does not win; a newer one does
    apply_curation(store, export({**key, "decision": "approved", "decided_at": "2026-01-01T00:00:00Z"}))
    assert latest_decisions(store)[("clip-a", "v1", "tiny-random")].decision == "rejected"
    bad = apply_curation(
        store,
        export(
            {**key, "decision": "approved", "decided_at": "2026-01-03T00:00:00Z"},
            {**key, "id": "nope", "decision": "approved"},
            {**key, "id": "clip-b", "decision": "maybe"},
            {**key, "id": "clip-c", "decision": "approved", "script": {"foley": [{"start": 1}]}},
        ),
    )
    assert len(bad.recorded) == 1
    reasons = dict(bad.rejected)
    assert "no such row" in reasons["'nope' (v1, tiny-random)"]
    assert "is not one of" in reasons["'clip-b' (v1, tiny-random)"]
    assert "edited script" in reasons["'clip-c' (v1, tiny-random)"]
    decisions = latest_decisions(store)
    assert decisions[("clip-a", "v1", "tiny-random")].decision == "approved"
    assert len(list((tmp_path / "store" / "_curation").glob("*.json"))) == 3  # append-only
    assert curation_status(store)["approved"] == 1
    rows = read_store(store).rows
    kept, counts = curate_rows(rows, decisions, "approved")
    assert [r["id"] for r in kept] == ["clip-a"] and counts["left_out_not_approved"] == 2
    result = runner.invoke(app, ["curate", store.uri, "--apply", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_the_adapter_card_says_how_many_rows_of_each_kind_were_used(tmp_path, scene_video):
    from v2t_foley.training.card import write_model_card
    from v2t_foley.training.trainer import TrainResult

    store = make_store(tmp_path / "store", scene_video)
    apply_curation(
        store,
        json.dumps(
            {
                "decisions": [
                    {"id": "clip-a", "prompt_version": "v1", "model": "tiny-random", "decision": "rejected"}
                ]
            }
        ),
    )
    data = load_examples(training_config(store, tmp_path / "adapter"), tmp_path / "adapter")
    assert data.version["curation"]["left_out_rejected"] == 1 and data.used["curation"]["used"] == 2
    result = TrainResult(str(tmp_path / "adapter"), 1, 1.0, 0.5, 2, 0, data.version, "tiny-random")
    card = write_model_card(tmp_path / "adapter", training_config(store, tmp_path / "adapter"), result)
    assert "`not-rejected`: used 2 rows (0 approved, 0 needs-fix, 2 undecided" in card.read_text()
    assert "left out 1 rejected" in card.read_text()
