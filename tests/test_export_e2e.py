"""`foley export` on a store written by the real chain (the tiny random model, measured timing): the rows
as the factory makes them, trace proposals and events included, go out to every TV2A format."""

from __future__ import annotations

import json

import av
import pandas as pd
import pytest
from typer.testing import CliRunner

from v2t_foley.flows.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def chain_store(tiny_llm, tmp_path_factory) -> str:
    from v2t_foley.foley_core.backends import BackendSpec
    from v2t_foley.foley_core.chain.runner import run_chain
    from v2t_foley.foley_core.manifest import ManifestEntry
    from v2t_foley.foley_core.records import ok_row
    from v2t_foley.foley_core.store import DatasetStore
    from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
    from v2t_foley.foley_core.video import open_video

    folder = tmp_path_factory.mktemp("export-e2e")
    spec = SceneSpec(duration=17.0, cuts=(5.0, 11.0), motions=((1.0, 2.0), (12.0, 13.0)), clicks=(1.5, 12.5))
    path = write_scene_video(folder / "scene17.mp4", spec)
    video = open_video(str(path))
    result = run_chain(video, tiny_llm)
    entry = ManifestEntry(id="scene17", video=str(path))
    row = ok_row(entry, video, result, BackendSpec(model="tiny-random"), "run1")
    uri = str(folder / "store")
    DatasetStore(uri).write_shard([row], "run1", 0)
    return uri


@pytest.mark.parametrize("fmt", ["hunyuan", "mmaudio", "thinksound"])
def test_a_real_store_exports_to_every_tv2a_format(chain_store, tmp_path, fmt):
    result = runner.invoke(app, ["export", chain_store, "--format", fmt, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    segments = json.loads((tmp_path / "segments.json").read_text())["segments"]
    assert segments and segments[0]["start"] == 0.0
    limit = {"hunyuan": 15.0, "mmaudio": 8.0, "thinksound": 8.0}[fmt]
    for seg in segments:
        with av.open(str(tmp_path / seg["file"])) as container:
            stream = container.streams.video[0]
            seconds = sum(1 for _ in container.decode(stream)) / float(stream.average_rate)
        assert 1.0 <= seconds <= limit + 0.1
        assert seg["tokens"] <= 77
    table = {"hunyuan": "hunyuan.csv", "mmaudio": "mmaudio.tsv", "thinksound": "thinksound.csv"}[fmt]
    rows = pd.read_csv(tmp_path / table, sep="\t" if fmt == "mmaudio" else ",", keep_default_na=False)
    assert len(rows) == len(segments)
