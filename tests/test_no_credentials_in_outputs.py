"""Credentials in a video URI (user:password, signed query strings) never reach what the project writes
for people and tools: exports of every post-production format, the review site, the card."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from v2t_foley.flows.cli import app
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.store import DatasetStore, render_card

SECRETS = ("hunter2pass", "SIGSECRET", "TOKSECRET", "AKIASECRETKEY")
VIDEOS = (
    "https://editor:hunter2pass@cdn.example/clips/a.mp4?X-Amz-Signature=SIGSECRET&token=TOKSECRET",
    "s3://AKIASECRETKEY:hunter2pass@bucket/clips/b.mp4",
)
runner = CliRunner()


def script() -> dict:
    cue = {"timestamp": "00:01", "start": 1.0, "end": 1.5, "description": "A door slams.", "event": 0}
    return {"foley": [cue], "fx": [], "ambience": [], "dialogue": []}


@pytest.fixture
def store(tmp_path) -> DatasetStore:
    dataset = DatasetStore(str(tmp_path / "store"))
    rows = [
        DatasetRow(
            id=f"v{k}",
            video=video,
            split="train",
            duration=3.0,
            fps=25.0,
            prompt_version="v1",
            model_id="m",
            backend="transformers",
            status="ok",
            script=script(),
        )
        for k, video in enumerate(VIDEOS)
    ]
    dataset.write_shard(rows, "run", 0)
    return dataset


def leaked(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            found += [f"{path.name}: {s}" for s in SECRETS if s in text]
    return found


@pytest.mark.parametrize("fmt", ["srt", "vtt", "spotting", "otio", "reaper", "premiere"])
def test_exports_carry_no_credentials(store, tmp_path, fmt):
    out = tmp_path / fmt
    result = runner.invoke(app, ["export", store.uri, "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert list(out.rglob("*")), "nothing was exported"
    assert leaked(out) == []
    assert not any(s in result.output for s in SECRETS)


def test_the_review_site_and_the_card_carry_no_credentials(store, tmp_path):
    out = tmp_path / "review"
    result = runner.invoke(app, ["review", store.uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert leaked(out) == []
    assert not any(s in render_card(store) for s in SECRETS)
