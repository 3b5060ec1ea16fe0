"""Store format 3: nested script/events columns that `datasets`, DuckDB and polars read without JSON
parsing; stores of format 2 (JSON strings) still load, migrate on the next write or with `foley migrate`;
the card is ready for the Hub."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from v2t_foley.flows.cli import app
from v2t_foley.foley_core.schema.rows import DatasetRow, normalize_row, row_events, row_script
from v2t_foley.foley_core.schema.script import Cue, FoleyScript
from v2t_foley.foley_core.store import DatasetStore, render_card
from v2t_foley.foley_core.store.markers import STORE_FORMAT, ShardMarker
from v2t_foley.foley_core.store.verify import verify

SCRIPT = FoleyScript(
    foley=[Cue.at(0.5, 1.0, "Steps on gravel.", 0), Cue.at(2.0, 2.5, "A bag drops.", 1)],
    fx=[Cue.at(1.0, 1.2, "A door slams.", 1)],
    ambience=[Cue.at(0.0, 4.0, "Wind in trees.")],
    dialogue=[],
)
EVENTS = [
    {
        "index": 0,
        "start": 0.5,
        "end": 1.0,
        "summary": "walks",
        "timing": "measured",
        "onset": 0.5,
        "kind": "motion",
        "reasoning": {"main_object": "shoes", "action": "step", "context": "gravel", "sounds": ["crunch"]},
    },
    {
        "index": 1,
        "start": 1.0,
        "end": 2.5,
        "summary": "door",
        "timing": "measured",
        "onset": None,
        "kind": "audio_onset",
        "reasoning": None,
    },
]


def row(row_id: str, status: str = "ok", split: str = "train", model: str = "org/model") -> DatasetRow:
    ok = status == "ok"
    return DatasetRow(
        id=row_id,
        video=f"clips/{row_id}.mp4",
        split=split,
        prompt_version="v1",
        model_id=model,
        backend="transformers",
        status=status,
        script=SCRIPT if ok else None,
        events=EVENTS if ok else [],
        error="" if ok else "corrupt",
        error_kind="" if ok else "corrupt",
    )


def old_layout_shard(store: DatasetStore, rows: list[DatasetRow], run: str) -> ShardMarker:
    """A shard as store format 2 wrote it: script and events as JSON strings."""
    dicts = []
    for r in rows:
        d = r.model_dump()
        d["script"] = json.dumps(d["script"]) if d["script"] is not None else ""
        d["events"] = json.dumps(d["events"])
        dicts.append(d)
    schema = pa.schema(
        [
            pa.field(k, pa.string() if k in ("script", "events") else t.type)
            for k, t in zip(
                pa.Table.from_pylist(dicts).schema.names, pa.Table.from_pylist(dicts).schema, strict=True
            )
        ]
    )
    relative = f"data/train-{run}-00000-c0ffee00.parquet"
    store.fs.makedirs(store.path("data"), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(dicts, schema=schema), store.path(relative))
    marker = ShardMarker(
        run_id=run,
        index=0,
        commit="c0ffee00",
        files={"train": [relative]},
        rows=len(rows),
        split_rows={"train": len(rows)},
        ok=sum(r.status == "ok" for r in rows),
        failed=sum(r.status == "failed" for r in rows),
        keys=[(r.id, r.prompt_version, r.model_key, r.status, "") for r in rows],
        created_at="2026-01-01T00:00:00",
        format=2,
    )
    store.write_marker(marker)
    store.write_card(render_card(store))
    return marker


def test_nested_columns_load_with_datasets_duckdb_and_polars(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    store = DatasetStore(str(tmp_path / "store"))
    marker = store.write_shard([row("a"), row("b"), row("c", "failed"), row("d", split="test")], "run1", 0)
    assert marker.format == STORE_FORMAT == 3

    ds = datasets.load_dataset(str(tmp_path / "store"))  # through the card
    by_id = {r["id"]: r for r in ds["train"]}
    assert by_id["a"]["script"]["foley"][0] == {
        "timestamp": "00:00",
        "start": 0.5,
        "end": 1.0,
        "description": "Steps on gravel.",
        "event": 0,
    }
    assert by_id["a"]["events"][0]["reasoning"]["sounds"] == ["crunch"]
    assert by_id["a"]["events"][1]["reasoning"] is None
    assert by_id["c"]["script"] is None and by_id["c"]["events"] == []
    assert row_script(by_id["a"]) == SCRIPT and len(row_events(by_id["a"])) == 2
    assert len(ds["test"]) == 1

    files = [str(tmp_path / "store" / p) for p in marker.paths()]
    counts = duckdb.sql(
        "select id, len(script.foley) as foley, len(script.fx) as fx, len(script.ambience) as ambience, "
        f"len(script.dialogue) as dialogue from read_parquet({files!r}) order by id"
    ).fetchall()
    assert counts == [("a", 2, 1, 1, 0), ("b", 2, 1, 1, 0), ("c", None, None, None, None), ("d", 2, 1, 1, 0)]
    frame = (
        pl.read_parquet(files)
        .sort("id")
        .select(
            "id", *(pl.col("script").struct.field(t).list.len().alias(t) for t in ("foley", "fx", "dialogue"))
        )
    )
    assert frame.row(0) == ("a", 2, 1, 0)
    cue = pl.read_parquet(files).filter(pl.col("id") == "a")["script"].struct.field("fx").list.first()
    assert cue.struct.field("description").to_list() == ["A door slams."]


def test_old_layout_store_loads_then_migrates_on_write(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    old = old_layout_shard(store, [row("a"), row("b", "failed")], "old")
    assert store.old_markers() == [old]
    loaded = store.load()  # both layouts, converted in memory
    assert {r["id"]: r["script"] is None for r in loaded["train"]} == {"a": False, "b": True}
    assert next(r for r in store.read_rows() if r["id"] == "a")["script"]["foley"][1]["description"] == (
        "A bag drops."
    )
    assert normalize_row({"script": "", "events": ""}) == {"script": None, "events": []}

    store.write_shard([row("c")], "new", 0)  # the first write migrates the old shard in its marker write
    assert store.old_markers() == [] and all(m.format == STORE_FORMAT for m in store.markers())
    assert not (tmp_path / "s" / old.paths()[0]).exists()
    ds = datasets.load_dataset(str(tmp_path / "s"))
    assert sorted(ds["train"]["id"]) == ["a", "b", "c"]
    assert ds["train"].filter(lambda r: r["id"] == "a")[0]["script"]["ambience"][0]["description"] == (
        "Wind in trees."
    )
    assert verify(store).clean, verify(store).lines()


def test_foley_migrate_rewrites_old_shards(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    old_layout_shard(store, [row("a"), row("b")], "old")
    runner = CliRunner()
    result = runner.invoke(app, ["migrate", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "2 rows rewritten" in " ".join(result.output.split())
    assert store.old_markers() == []
    assert row_script(store.read_rows()[0]) == SCRIPT
    ds = datasets.load_dataset(str(tmp_path / "s"))
    assert sorted(ds["train"]["id"]) == ["a", "b"]
    again = runner.invoke(app, ["migrate", str(tmp_path / "s")])
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert verify(store).clean


def test_card_is_ready_for_the_hub(tmp_path):
    from huggingface_hub import DatasetCard, DatasetCardData

    root = tmp_path / "deep" / "store"
    store = DatasetStore(str(root))
    local_model = str(tmp_path / "models" / "my-local-model")
    store.write_shard([row("a"), row("b", split="test"), row("c", model=local_model)], "run1", 0)
    text = (root / "README.md").read_text()
    card = DatasetCard(text)
    assert isinstance(card.data, DatasetCardData)
    data = card.data.to_dict()
    assert data["license"] == "unknown" and "License: unknown" in text
    assert data["task_categories"] == ["video-text-to-text", "text-to-audio"]
    assert data["size_categories"] == ["n<1K"]
    assert data["language"] == ["en"] and "foley" in data["tags"]
    assert "splits" not in data["dataset_info"]  # datasets would ignore it, with a warning, lacking num_bytes
    assert "| `train` | 2 |" in card.text and "| `test` | 1 |" in card.text
    assert str(tmp_path) not in text and "/tmp" not in text and "file://" not in text
    assert "my-local-model (local folder)" in text and "org/model" in text
    assert "](" not in card.text and "http" not in card.text and "<" not in card.text  # no placeholders
    assert "MEANINGLESS" not in text
    listed = {
        p for c in yaml.safe_load(text.split("---")[1])["configs"] for f in c["data_files"] for p in f["path"]
    }
    assert listed == {p for m in store.markers() for p in m.paths()}

    store.update_card_settings(license="cc-by-4.0")  # kept in _card.json for every later card
    store.write_shard([row("d", model="tiny-random")], "run2", 0)
    later = DatasetCard((root / "README.md").read_text())
    assert later.data.license == "cc-by-4.0"
    assert "MEANINGLESS" in later.text and "synthetic-test-data" in later.data.tags
    assert json.loads((root / "_card.json").read_text()) == {"license": "cc-by-4.0"}
    assert verify(store).clean


def test_eval_init_ref_writes_templates_from_a_store(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a"), row("b", "failed")], "run1", 0)
    result = CliRunner().invoke(
        app, ["eval", "--pred", str(tmp_path / "s"), "--init-ref", str(tmp_path / "ref")]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "ref").iterdir()) == ["a.json"]
    assert FoleyScript.model_validate_json((tmp_path / "ref" / "a.json").read_text()) == SCRIPT
    assert "--init-ref" in CliRunner().invoke(app, ["eval", "--help"]).output


def test_build_progress_lines():
    from v2t_foley.flows.progress import BuildProgress

    tracker = BuildProgress()
    tracker.update("planned", {"total": 4, "skipped": 1})
    for status in ("ok", "failed", "ok"):
        tracker.update("video", {"status": status})
    line = tracker.line("shard", {"index": 0, "rows": 3})
    assert "videos 3/4 (2 ok, 1 failed)" in line and "ETA" in line and ("/s" in line or "s/video" in line)
