"""What training reads from a store and what it records: which rows become examples (chain rows, not
adapter rows unless asked; one prompt version; one model), and the retrain trigger's count of rows
since the last training, also for rows that land while it trains."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import make_manifest_videos
from tests.test_training import config
from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.flows.cli import app
from v2t_foley.foley_core.chain.simple import load_simple_prompt
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.store import DatasetStore, ShardMarker
from v2t_foley.training.evaluate import evaluate_adapter
from v2t_foley.training.trainer import train

runner = CliRunner()


@pytest.fixture(scope="module")
def store(training_store: str) -> str:
    return training_store


def copy_store(store: str, target: Path) -> str:
    """A private copy, for tests that add shards (the module's store is shared)."""
    shutil.copytree(store, target, ignore=shutil.ignore_patterns("_cache", "_tmp"))
    return str(target)


def add_shard(store: str, run_id: str, **changes: Callable[[dict], Any]) -> ShardMarker:
    """A new shard of the store's ok rows, changed as asked (new ids, another model, ...)."""
    rows = [r for r in DatasetStore(store).read_rows() if r["status"] == "ok" and not r["adapter"]]
    changed = [DatasetRow(**(r | {k: change(r) for k, change in changes.items()})) for r in rows]
    return DatasetStore(store).write_shard(changed, run_id, 0)


def test_rows_that_land_during_training_count_toward_the_next_trigger(store, tmp_path, monkeypatch):
    """A shard is added after train-lora read the store and before it trains: the hook is a monkeypatch
    of `training.trainer.apply_lora`, which runs after the data is read and before the first step."""
    from v2t_foley.flows.events import last_training, readiness_labels, training_labels
    from v2t_foley.flows.train_lora import train_lora
    from v2t_foley.training import trainer

    private = copy_store(store, tmp_path / "store")
    real_apply_lora = trainer.apply_lora
    late: list[ShardMarker] = []

    def land_rows_then_apply(model, config):
        late.append(add_shard(private, "late", **{"id": lambda r: f"late-{r['id']}"}))
        return real_apply_lora(model, config)

    monkeypatch.setattr(trainer, "apply_lora", land_rows_then_apply)
    train_lora(store=private, output=str(tmp_path / "a"), max_steps=1, evaluate=False)
    assert late and late[0].ok == 3
    last = last_training(private)
    assert last["ok_rows"] == 3 and late[0].name not in last["markers"]
    assert last["base_model"] == "tiny-random" and last["examples"] == 3
    assert sorted(k[0] for k in last["keys"]) == ["good0", "good1", "good2"]
    markers = DatasetStore(private).markers()
    # what build-dataset computes today, and the marker-based count
    assert training_labels(sum(m.ok for m in markers), last["ok_rows"], 3) == {
        "foley.rows-since-training": "3",
        "foley.train-ready": "true",
    }
    assert readiness_labels(markers, last, 3)["foley.rows-since-training"] == "3"


def test_adapter_rows_are_left_out_unless_asked_for(store, tmp_path):
    from v2t_foley.training.data import examples_from_rows, read_store, row_key

    adapter = tmp_path / "adapter"
    train(config(store, adapter, max_steps=1))
    mixed = copy_store(store, tmp_path / "mixed")
    manifest, _ = make_manifest_videos(tmp_path / "videos")
    build_dataset(manifest=manifest, store=mixed, model="tiny-random", adapter=str(adapter))
    rows = read_store(DatasetStore(mixed)).rows
    assert {bool(r["adapter"]) for r in rows if r["status"] == "ok"} == {True, False}  # both kinds
    prompts = load_simple_prompt()
    base_keys = sorted(row_key(r) for r in rows if r["status"] == "ok" and not r["adapter"])
    assert sorted(e.key for e in examples_from_rows(rows, prompts)) == base_keys
    both = examples_from_rows(rows, prompts, include_adapter_rows=True)
    assert any("@" in e.key[2] for e in both)
    result = train(config(mixed, tmp_path / "a2", max_steps=1))
    assert sorted(tuple(k) for k in result.used["keys"]) == base_keys
    # evaluation reads the same rows: the held-out video's chain row, not the adapter's
    report = evaluate_adapter(config(mixed, tmp_path / "a2", eval_fraction=0.0), str(tmp_path / "a2"))
    chain_row = next(r for r in rows if r["status"] == "ok" and r["split"] == "test" and not r["adapter"])
    chain_tokens = sum(c["new_tokens"] for c in json.loads(chain_row["trace"])["calls"])
    assert report["videos"] == 1 and report["base_full_chain"]["tokens_per_video"] == chain_tokens


def test_a_named_prompt_version_chooses_the_rows(store, tmp_path):
    from v2t_foley.training.data import examples_from_rows, read_store

    private = copy_store(store, tmp_path / "store")
    newer = {"prompt_version": lambda r: "v-newer", "created_at": lambda r: "9999-01-01T00:00:00"}
    add_shard(private, "newer", **newer)
    rows = read_store(DatasetStore(private)).rows
    old_version = next(r["prompt_version"] for r in rows if r["prompt_version"] != "v-newer")
    prompts = load_simple_prompt()
    assert {e.key[1] for e in examples_from_rows(rows, prompts)} == {"v-newer"}
    chosen = examples_from_rows(rows, prompts, prompt_version=old_version)
    assert {e.key[1] for e in chosen} == {old_version} and len(chosen) == 3


def test_readiness_counts_unread_shards_of_chain_rows():
    from v2t_foley.flows.events import readiness_labels, rows_since_training

    def marker(name: str, *models: str) -> SimpleNamespace:
        keys = [(f"v{k}", "p1", model, "ok") for k, model in enumerate(models)] + [("x", "p1", "m", "failed")]
        return SimpleNamespace(name=name, ok=len(models), keys=keys)

    markers = [marker("a", "m", "m"), marker("b", "m", "m@/adapters/one"), marker("c", "m")]
    last = {"ok_rows": 2, "markers": ["a"]}
    assert rows_since_training(markers, last) == 2  # b's chain row and c's; not the adapter's row
    assert rows_since_training(markers, last, include_adapter_rows=True) == 3
    assert rows_since_training(markers, {"ok_rows": 2}) == 3  # a record from before markers were kept
    assert rows_since_training(markers, {}) == 4
    assert readiness_labels(markers, last, 2) == {
        "foley.rows-since-training": "2",
        "foley.train-ready": "true",
    }


def test_a_store_of_several_models_asks_for_one(store, tmp_path):
    private = copy_store(store, tmp_path / "store")
    add_shard(private, "qwen", **{"model_id": lambda r: "tiny-random-qwen2.5-vl"})
    result = runner.invoke(app, ["train", "--store", private, "--output-dir", str(tmp_path / "a")])
    assert result.exit_code == 2, result.output
    assert "tiny-random, tiny-random-qwen2.5-vl" in result.output and "--model" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--max-steps", "0"], "max_steps must be a whole number of at least 1"),
        (["--learning-rate", "-1"], "learning_rate must be above 0"),
        (["--epochs", "0"], "epochs must be above 0"),
        (["--num-processes", "0"], "num_processes must be a whole number of at least 1"),
        (["--curation", "maybe"], "unknown curation 'maybe'"),
    ],
)
def test_training_numbers_and_modes_no_run_can_use_exit_2_before_any_work(
    training_store, tmp_path, flag: list[str], message: str
):
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["train", "--store", training_store, "--output-dir", str(out), *flag])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_training_on_a_folder_that_is_no_store_says_so(tmp_path):
    args = ["train", "--store", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "adapter")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "is not a store" in result.output, result.output
    assert not (tmp_path / "adapter").exists()


def test_a_broken_yaml_config_is_one_line(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("store: [unclosed\nmax_steps: 2\n")
    result = runner.invoke(app, ["train", "--config", str(config)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "cannot read the training config" in lines[0], lines


def test_train_config_takes_what_the_trainer_takes_and_refuses_the_rest():
    from v2t_foley.foley_core.errors import InputError
    from v2t_foley.training.config import TrainConfig

    assert TrainConfig(learning_rate="2e-4").learning_rate == 2e-4  # YAML reads 2e-4 as a string
    assert TrainConfig(save_steps=0.25).save_steps == 0.25  # a fraction of the run's steps
    for bad in ({"max_steps": True}, {"save_steps": 0}, {"save_steps": 1.5}, {"learning_rate": "fast"}):
        with pytest.raises(InputError):
            TrainConfig(**bad)
