"""publish-dataset: a dry run lists exactly what would land where; a real run against a local server
standing in for the Hugging Face Hub (a protocol test, not the Hub) commits the shards and the card."""

from __future__ import annotations

import logging

import pytest
import yaml
from typer.testing import CliRunner

from tests.hub_server import HubServer
from v2t_foley.flows.cli import app
from v2t_foley.flows.publish_dataset import publish_dataset
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.store import DatasetStore

runner = CliRunner()
TOKEN = "hf_test_token_that_must_never_be_logged"


@pytest.fixture
def store(tmp_path) -> DatasetStore:
    dataset = DatasetStore(str(tmp_path / "store"))
    base = {
        "video": "/v.mp4",
        "prompt_version": "v",
        "model_id": "m",
        "backend": "transformers",
        "status": "ok",
        "script": "{}",
    }
    marker = dataset.write_shard(
        [DatasetRow(id="a", split="train", **base), DatasetRow(id="b", split="test", **base)], "run", 0
    )
    dataset.shard_files = {split: paths[0] for split, paths in marker.files.items()}  # for the asserts
    (tmp_path / "store" / "data" / "train-orphan-00000.parquet").write_bytes(b"no marker, not published")
    return dataset


def test_dry_run_lists_and_uploads_nothing(store, prefect_harness, monkeypatch):
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        result = runner.invoke(app, ["publish", "--store", store.uri, "--repo-id", "org/foley", "--dry-run"])
        assert result.exit_code == 0, result.output
        assert hub.requests == []
    lines = [line for line in result.output.splitlines() if line.startswith("would upload")]
    assert [line.split(" -> ")[1].split(" (")[0].rsplit("/main/", 1)[1] for line in lines] == [
        "README.md",
        store.shard_files["test"],
        store.shard_files["train"],
    ]
    assert "orphan" not in result.output


def test_publish_commits_shards_and_card(store, prefect_harness, monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    # the suite runs with HF_HUB_OFFLINE=1; this test's "Hub" is the local stand-in server
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    caplog.set_level(logging.DEBUG)
    with HubServer() as hub:
        result = publish_dataset(store=store.uri, repo_id="org/foley", endpoint=hub.url)
        assert (
            hub.repos["org/foley"]["type"] == "dataset" and hub.repos["org/foley"]["visibility"] == "private"
        )
        test_file, train_file = store.shard_files["test"], store.shard_files["train"]
        assert sorted(hub.files) == ["README.md", test_file, train_file]
        assert hub.files[train_file] == store.fs.cat_file(store.path(train_file))
        header = yaml.safe_load(hub.files["README.md"].decode().split("---")[1])
        assert header["configs"][0]["data_files"] == [
            {"split": "test", "path": [test_file]},
            {"split": "train", "path": [train_file]},
        ]
        for _method, _path, headers in hub.requests:
            assert {k.lower(): v for k, v in headers.items()}["authorization"] == f"Bearer {TOKEN}"
    assert result["commit"].startswith(hub.url)
    assert TOKEN not in caplog.text and TOKEN not in str(result)


def test_publish_without_a_token_is_bad_input(store, prefect_harness, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    result = runner.invoke(app, ["publish", "--store", store.uri, "--repo-id", "org/foley"])
    assert result.exit_code == 2 and "HF_TOKEN" in result.output


def test_a_shard_finishing_during_publish_is_in_neither_the_files_nor_the_card(
    store, prefect_harness, monkeypatch
):
    """A shard lands between the marker read and the upload (injected at the first file-size call)."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    size = store.fs.size
    landed = []

    def size_then_land_a_shard(path):
        if not landed:
            base = {"video": "/c.mp4", "prompt_version": "v", "model_id": "m", "backend": "transformers"}
            landed.append(
                DatasetStore(store.uri).write_shard(
                    [DatasetRow(id="c", split="train", status="ok", **base)], "late", 0
                )
            )
        return size(path)

    monkeypatch.setattr(type(store.fs), "size", lambda self, path: size_then_land_a_shard(path))
    with HubServer() as hub:
        publish_dataset(store=store.uri, repo_id="org/foley", endpoint=hub.url)
        uploaded = {p for p in hub.files if p.startswith("data/")}
        header = yaml.safe_load(hub.files["README.md"].decode().split("---")[1])
    listed = {p for files in header["configs"][0]["data_files"] for p in files["path"]}
    assert landed and listed == uploaded == set(store.shard_files.values())


def test_publish_refuses_a_marker_outside_the_store(store, tmp_path, prefect_harness, monkeypatch):
    secret = tmp_path / "credentials.parquet"
    secret.write_bytes(b"secret")
    marker = store.markers()[0]
    store.write_marker(marker.model_copy(update={"commit": "evil", "files": {"train": ["/etc/passwd"]}}))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        result = runner.invoke(app, ["publish", "--store", store.uri, "--repo-id", "org/foley", "--dry-run"])
        assert hub.requests == []
    assert result.exit_code == 2, result.output
    assert "evil" in result.output and "outside the store" in result.output and "/etc/passwd" in result.output


def test_a_curated_publish_leaves_rejected_rows_out_and_adds_the_curation_column(
    tmp_path, prefect_harness, monkeypatch
):
    """Curation recorded by `foley curate` shapes the upload (copies; the store is untouched), and
    `datasets` loads the uploaded repo through its card, DuckDB reads the new column."""
    import json

    import datasets
    import duckdb

    from v2t_foley.foley_core.curation import apply_curation

    dataset = DatasetStore(str(tmp_path / "store"))
    base = {"video": "/v.mp4", "prompt_version": "v", "model_id": "m", "backend": "transformers"}
    rows = [
        DatasetRow(id=name, split=split, status="ok", duration=10.0, script="{}", **base)
        for name, split in (("keep", "train"), ("drop", "train"), ("edit", "test"), ("open", "test"))
    ]
    dataset.write_shard(rows, "run", 0)
    gone = dataset.write_shard(
        [DatasetRow(id="gone", split="train", status="ok", duration=10.0, **base)], "run", 1
    )
    stored = {p: p.read_bytes() for p in (tmp_path / "store" / "data").glob("*.parquet")}
    cue = {"timestamp": "00:01", "start": 1.0, "end": 2.0, "description": "a door slams", "event": None}
    edited = {"foley": [cue], "fx": [], "ambience": [], "dialogue": []}
    decisions = [
        {"id": "keep", "decision": "approved"},
        {"id": "drop", "decision": "rejected", "note": "wrong video"},
        {"id": "gone", "decision": "rejected"},  # its shard file keeps no row: not published at all
        {"id": "edit", "decision": "needs-fix", "script": edited},
    ]
    export = {"decisions": [{**d, "prompt_version": "v", "model": "m"} for d in decisions], "curator": "ana"}
    assert not apply_curation(dataset, json.dumps(export)).rejected

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        dry = runner.invoke(
            app,
            ["publish", "--store", dataset.uri, "--repo-id", "org/foley", "--dry-run", "--exclude-rejected"],
        )
        assert dry.exit_code == 0, dry.output
        assert "curated copy" in dry.output and hub.requests == []
        publish_dataset(store=dataset.uri, repo_id="org/foley", endpoint=hub.url)  # before curation
        assert set(gone.paths()) <= set(hub.files)
        publish_dataset(
            store=dataset.uri,
            repo_id="org/foley",
            endpoint=hub.url,
            curation_column=True,
            exclude_rejected=True,
        )
        uploaded = dict(hub.files)
    assert {p: p.read_bytes() for p in (tmp_path / "store" / "data").glob("*.parquet")} == stored

    repo = tmp_path / "repo"
    for path, content in uploaded.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(content)
    loaded = datasets.load_dataset(str(repo))  # the card's configs and features, as the Hub would
    by_id = {row["id"]: row for split in loaded.values() for row in split}
    assert sorted(by_id) == ["edit", "keep", "open"]
    assert {s: len(loaded[s]) for s in loaded} == {"train": 1, "test": 2}
    assert by_id["keep"]["curation"]["decision"] == "approved"
    assert by_id["open"]["curation"]["decision"] == "undecided"
    assert (
        by_id["edit"]["curation"]["edited"]
        and by_id["edit"]["script"]["foley"][0]["description"] == cue["description"]
    )
    assert json.loads(by_id["edit"]["curation"]["chain_script"])["foley"] == []
    card = uploaded["README.md"].decode()
    assert "| `train` | 1 |" in card and "| `test` | 2 |" in card
    assert "without the 2 rejected row" in uploaded["README.md"].decode()
    # the first publish's copy of the all-rejected shard was deleted in the curated publish's commit
    assert not set(gone.paths()) & set(uploaded)
    assert set(gone.paths()) <= set(hub.commits[-1]["deleted"])
    # made on top of the commit whose files it read: a publish landing in between would be refused
    assert hub.commits[-1]["header"]["parentCommit"] == f"{len(hub.commits) - 1:040x}"
    # so a reader that globs data/ instead of following the card sees no rejected row either
    globbed = duckdb.sql(f"select id from read_parquet('{repo}/data/**/*.parquet', union_by_name=true)")
    assert sorted(row[0] for row in globbed.fetchall()) == ["edit", "keep", "open"]
    decided = duckdb.sql(f"select id, curation.decision from '{repo}/data/*.parquet' order by id").fetchall()
    assert decided == [("edit", "needs-fix"), ("keep", "approved"), ("open", "undecided")]


def test_a_repo_id_the_hub_refuses_exits_2_before_anything_runs(store):
    result = runner.invoke(app, ["publish", "--store", store.uri, "--repo-id", "bad repo id!!", "--dry-run"])
    assert result.exit_code == 2 and "--repo-id 'bad repo id!!'" in result.output, result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
