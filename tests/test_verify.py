"""`foley verify`: a store damaged each way is reported (exit 1), repaired, and then clean (exit 0)."""

from __future__ import annotations

from collections import Counter

import datasets
from typer.testing import CliRunner

from tests.test_store_invariant import row
from v2t_foley.flows.cli import app
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.store.markers import STORE_FORMAT, ShardMarker
from v2t_foley.foley_core.store.verify import repair, verify

runner = CliRunner()


def legacy_shard(store: DatasetStore, rows, run: str, created: str) -> ShardMarker:
    """A shard as the pre-lease writer made it: no check against the rows already shown."""
    relative = f"data/train-{run}-00000.parquet"
    store.write_table(relative, [r.model_dump() for r in rows])
    marker = ShardMarker(
        run_id=run,
        index=0,
        files={"train": relative},
        rows=len(rows),
        split_rows={"train": len(rows)},
        ok=sum(r.status == "ok" for r in rows),
        failed=sum(r.status == "failed" for r in rows),
        keys=[(r.id, r.prompt_version, r.model_id, r.status) for r in rows],
        created_at=created,
    )
    store.write_marker(marker)
    return marker


def test_a_store_damaged_every_way_is_reported_and_repaired(tmp_path):
    root = tmp_path / "s"
    store = DatasetStore(str(root))
    # two overlapping legacy runs: a and b twice (b failed in the newer one), c once
    legacy_shard(store, [row("a"), row("b")], "old1", "2026-01-01T00:00:00")
    legacy_shard(store, [row("a"), row("b", "failed"), row("c")], "old2", "2026-01-02T00:00:00")
    # a shard whose file vanished, an orphan, a half-written staging file, junk and tampered markers
    gone = store.write_shard([row("d"), row("e", split="test")], "run3", 0)
    (root / gone.files["test"][0]).unlink()
    (root / "data" / "train-dead-00000.parquet").write_bytes(b"no marker")
    (root / "_tmp").mkdir(exist_ok=True)
    (root / "_tmp" / "half.parquet").write_bytes(b"half")
    (root / "_shards" / "junk.json").write_text("{not json")
    evil = gone.model_copy(update={"commit": "evil", "files": {"train": ["data/../../outside.parquet"]}})
    store.write_marker(evil)
    (root / "README.md").write_text("---\nconfigs: []\n---\n")

    report = verify(store)
    assert not report.clean
    assert len(report.duplicates) == 2 and all("old1" in d and "old2" in d for d in report.duplicates)
    assert report.missing_files == [f"{gone.files['test'][0]} (marker {gone.name})"]
    assert sorted(report.orphans) == ["_tmp/half.parquet", "data/train-dead-00000.parquet"]
    assert len(report.unreadable) == 1 and "junk.json" in report.unreadable[0]
    assert len(report.unsafe) == 1 and "evil" in report.unsafe[0]
    assert report.card  # lists nothing of what the markers hold

    result = runner.invoke(app, ["verify", str(root)])
    assert result.exit_code == 1, result.output
    assert "duplicate" in result.output and "orphan file" in result.output

    done = repair(store)
    assert done and verify(store).clean, verify(store).lines()
    rows = store.read_rows()
    assert Counter(r["id"] for r in rows) == Counter({"a": 1, "b": 1, "c": 1, "d": 1})
    assert {r["id"]: r["status"] for r in rows}["b"] == "ok"  # ok beats failed
    loaded = datasets.load_dataset(str(root))
    assert sorted(loaded["train"]["id"]) == ["a", "b", "c", "d"]
    assert all(m.format == STORE_FORMAT or not m.supersedes for m in store.markers())

    result = runner.invoke(app, ["verify", str(root)])
    assert result.exit_code == 0, result.output


def test_a_clean_store_verifies_clean(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a"), row("b", "failed")], "run1", 0)
    store.write_shard([row("b")], "run2", 0)
    assert verify(store).clean, verify(store).lines()
