"""`foley review`: the static site, in a real headless Chromium (DOM, clicks that seek, highlights)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cdp import Browser, chromium_path
from v2t_foley.flows.cli import app
from v2t_foley.foley_core.safenames import safe_name
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.schema.script import Cue, FoleyScript
from v2t_foley.foley_core.store import DatasetStore

EVIL = '<img src=x onerror="window.pwned=1">/../../x'
SCRIPT = FoleyScript(
    foley=[Cue.at(0.4, 0.9, "Footsteps on wood.", 0), Cue.at(2.2, 2.6, "A cup is set down.", 1)],
    fx=[Cue.at(1.5, 1.7, "</script><script>window.pwned=2</script>", 1)],
    ambience=[Cue.at(0.0, 3.9, "Quiet room tone.")],
    dialogue=[Cue.at(3.0, 3.8, "A short hello.")],
)
PROPOSALS = {
    "duration": 4.0,
    "cuts": [{"kind": "cut", "start": 2.0, "end": 2.0, "strength": 3.0}],
    "motion": [{"kind": "motion", "start": 0.3, "end": 1.0, "strength": 2.0}],
    "onsets": [{"kind": "audio_onset", "start": 1.5, "end": 1.5, "strength": 4.0}],
    "speech": [{"kind": "speech", "start": 3.0, "end": 3.8, "strength": 1.0}],
    "notes": [],
}


def make_store(root: Path, video: Path) -> DatasetStore:
    base = dict(prompt_version="v1", model_id="tiny-random", backend="transformers", split="train")
    store = DatasetStore(str(root))
    store.write_shard(
        [
            DatasetRow(
                id="clip-a",
                video=str(video),
                status="ok",
                script=SCRIPT,
                duration=4.0,
                trace=json.dumps({"proposals": PROPOSALS}),
                **base,
            ),
            DatasetRow(id=EVIL, video=str(video), status="ok", script=SCRIPT, duration=4.0, **base),
            DatasetRow(
                id="broken",
                video="https://user:hunter2@videos.example/b.mp4?sig=s3cr3t",
                status="failed",
                error="<b>truncated</b> file",
                error_kind="corrupt",
                **base,
            ),
        ],
        "run1",
        0,
    )
    return store


def test_review_site_in_chromium(tmp_path, scene_video):
    binary = chromium_path()
    make_store(tmp_path / "store", scene_video)
    out = tmp_path / "site"
    result = CliRunner().invoke(app, ["review", str(tmp_path / "store"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    pages = sorted((out / "rows").glob("*.html"))
    assert {p.stem for p in pages} == {"clip-a", "broken", safe_name(EVIL)}
    text = "".join(p.read_text() for p in [*pages, out / "index.html"])
    assert "hunter2" not in text and "s3cr3t" not in text and "<b>truncated" not in text
    assert not (out / "media").exists()  # referenced, not copied

    browser = Browser(binary, width=900, height=820)
    try:
        browser.navigate((out / "index.html").as_uri())
        listed = browser.js(
            "[...document.querySelectorAll('tbody tr td:first-child')].map(td => td.textContent)"
        )
        assert sorted(listed) == sorted(["clip-a", EVIL, "broken"])
        assert browser.js("document.querySelectorAll('tbody tr')[0].children.length") == 11
        browser.js(
            "document.getElementById('status').value='failed';"
            "document.getElementById('status').dispatchEvent(new Event('input'))"
        )
        assert browser.js("[...document.querySelectorAll('tbody tr')].filter(r => !r.hidden).length") == 1
        assert browser.js("window.pwned === undefined")

        browser.navigate((out / "rows" / f"{safe_name(EVIL)}.html").as_uri())
        assert browser.js("document.getElementById('row-id').textContent") == EVIL
        assert browser.js("window.pwned === undefined")

        browser.navigate((out / "rows" / "clip-a.html").as_uri())
        shown = browser.js("[...document.querySelectorAll('.track .cue')].map(c => c.textContent)")
        assert sorted(shown) == sorted(c.description for _, c in SCRIPT.cues())
        assert browser.js("window.pwned === undefined")
        browser.wait_for("document.getElementById('player').readyState >= 1", timeout_s=30)
        # play() is counted, not run: playing on would move the time past a cue (0.4 s) on a slow machine
        browser.js(
            "window.played=0;"
            "document.getElementById('player').play=()=>{window.played++;return Promise.resolve()}"
        )
        browser.click(".fx .cue")
        browser.wait_for("Math.abs(document.getElementById('player').currentTime - 1.5) < 0.05")
        assert browser.js("window.played") == 1
        browser.click(".foley .cue[data-index='1']")
        browser.wait_for("Math.abs(document.getElementById('player').currentTime - 2.2) < 0.05")
        assert browser.js("window.played") == 2
        browser.wait_for(
            "document.querySelector('.foley .cue[data-index=\"1\"]').classList.contains('current')"
        )
        assert browser.js("document.querySelectorAll('.cue.current').length") >= 1
        assert browser.js("document.querySelector('.proposals').hidden")
        browser.click("#show-proposals")
        assert browser.js("[...document.querySelectorAll('.proposals')].every(l => !l.hidden)")
        assert browser.js("document.querySelectorAll('.proposal').length") == 4
        shot = tmp_path / "review.png"
        browser.screenshot(shot)
        assert shot.stat().st_size > 10_000
        if os.environ.get("FOLEY_UPDATE_SCREENSHOT"):
            (Path(__file__).resolve().parent.parent / "docs" / "review.png").write_bytes(shot.read_bytes())
    finally:
        browser.close()


def test_copy_media_copies_local_videos(tmp_path, scene_video):
    store = make_store(tmp_path / "store", scene_video)
    from v2t_foley.foley_core.review import build_review

    site = build_review(store, tmp_path / "site", copy_media=True)
    copied = sorted(p.name for p in (tmp_path / "site" / "media").iterdir())
    assert "clip-a.mp4" in copied and len(copied) == 2  # the failed row's URL is not reachable
    assert 'src="../media/clip-a.mp4"' in site.pages["clip-a"].read_text()


@pytest.mark.parametrize("video", ["s3://bucket/key.mp4"])
def test_unplayable_videos_are_named_not_linked(tmp_path, scene_video, video):
    from v2t_foley.foley_core.review import video_source

    assert video_source(video, tmp_path, tmp_path / "m", "x", copy_media=False) is None
