"""The store on local disk: shards, markers, the card, and what loaders can see."""

from __future__ import annotations

import logging

import datasets
import pytest

from v2t_foley.foley_core.schema.rows import FEATURES, DatasetRow
from v2t_foley.foley_core.store import DatasetStore, render_card


def row(row_id: str, split: str = "train", status: str = "ok", version: str = "v1") -> DatasetRow:
    return DatasetRow(
        id=row_id,
        video=f"/v/{row_id}.mp4",
        split=split,
        prompt_version=version,
        model_id="m",
        backend="transformers",
        status=status,
        script="{}" if status == "ok" else "",
        error="" if status == "ok" else "broken",
        events="[]",
    )


def test_shards_markers_and_done_keys(tmp_path):
    store = DatasetStore(str(tmp_path / "store"))
    marker = store.write_shard([row("a"), row("b", "test"), row("c", status="failed")], "run1", 0)
    prefix = f"run1-00000-{marker.commit}"
    assert marker.files == {
        "test": [f"data/test-{prefix}.parquet"],
        "train": [f"data/train-{prefix}.parquet"],
    }
    assert (marker.rows, marker.ok, marker.failed) == (3, 2, 1)
    assert store.done_keys() == {("a", "v1", "m"), ("b", "v1", "m"), ("c", "v1", "m")}
    assert store.done_keys(include_failed=False) == {("a", "v1", "m"), ("b", "v1", "m")}
    assert not list((tmp_path / "store" / "_tmp").glob("*.parquet"))


def test_load_dataset_reads_the_store_through_its_card(tmp_path):
    store = DatasetStore(str(tmp_path / "store"))
    store.write_shard([row("a"), row("b")], "run1", 0)
    store.write_shard([row("c"), row("d", "test")], "run1", 1)
    store.write_card(render_card(store))
    warned: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warned.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("datasets").addHandler(handler)
    try:
        loaded = datasets.load_dataset(str(tmp_path / "store"))
    finally:
        logging.getLogger("datasets").removeHandler(handler)
    assert not [w for w in warned if "dataset card" in w], warned  # the card's YAML reads as it is
    assert sorted(loaded["train"]["id"]) == ["a", "b", "c"] and loaded["test"]["id"] == ["d"]
    assert loaded["train"].features == FEATURES
    assert sorted(store.load()["train"]["id"]) == ["a", "b", "c"]


def test_a_shard_without_marker_is_invisible(tmp_path):
    store = DatasetStore(str(tmp_path / "store"))
    marker = store.write_shard([row("a")], "run1", 0)
    # a run killed after moving its file but before writing the marker
    orphan = tmp_path / "store" / "data" / "train-run2-00000.parquet"
    orphan.write_bytes((tmp_path / "store" / marker.files["train"][0]).read_bytes())
    store.write_card(render_card(store))
    assert datasets.load_dataset(str(tmp_path / "store"))["train"]["id"] == ["a"]
    assert store.done_keys() == {("a", "v1", "m")}


def test_shards_with_empty_and_full_columns_concatenate(tmp_path):
    """Explicit Features: a shard of failed rows (empty strings) and one of ok rows share one schema."""
    store = DatasetStore(str(tmp_path / "store"))
    store.write_shard([row("a", status="failed")], "r", 0)
    store.write_shard([row("b")], "r", 1)
    loaded = store.load()["train"]
    assert sorted(loaded["status"]) == ["failed", "ok"]


def test_card_header_lists_only_complete_shards(tmp_path):
    import yaml

    store = DatasetStore(str(tmp_path / "store"))
    marker = store.write_shard([row("a"), row("b", status="failed")], "run1", 0)
    card = render_card(store)
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": marker.files["train"]}]
    assert "| ok | 1 |" in card and "| failed | 1 |" in card


def test_empty_shard_is_refused(tmp_path):
    with pytest.raises(ValueError):
        DatasetStore(str(tmp_path)).write_shard([], "r", 0)


def test_a_license_set_on_a_run_that_adds_no_rows_reaches_the_card(tmp_path):
    """`--license` on a run with nothing new to build still changes the card the Hub reads (read back
    with huggingface_hub's own card parser)."""
    from huggingface_hub import DatasetCard

    from v2t_foley.foley_core.errors import InputError
    from v2t_foley.foley_core.store.card import set_license

    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a")], "run1", 0)
    assert DatasetCard.load(tmp_path / "s" / "README.md").data.license == "unknown"
    assert set_license(store, "cc-by-4.0") is True
    assert DatasetCard.load(tmp_path / "s" / "README.md").data.license == "cc-by-4.0"
    assert set_license(store, "cc-by-4.0") is False  # the card says so already: nothing rewritten
    store.update_card_settings(license="mit")  # as if a rewrite of the card had failed after this
    assert set_license(store, "mit") is True  # the card said cc-by-4.0: rewritten now
    assert DatasetCard.load(tmp_path / "s" / "README.md").data.license == "mit"
    for bad in ("Not a license!", "CC-BY-4.0", "", "a" * 80):
        with pytest.raises(InputError, match="no Hub license id"):
            set_license(store, bad)
    assert store.card_settings()["license"] == "mit"
