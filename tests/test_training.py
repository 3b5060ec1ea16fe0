"""LoRA training on the tiny model over a store the factory made: the loss falls, the adapter changes
and the base does not, checkpoints resume the step count, and the adapter writes scripts in one pass."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from flows.build_dataset import build_dataset
from flows.cli import app
from foley_core.backends.base import GenerationRequest
from foley_core.backends.transformers_backend import TransformersVideoLLM
from foley_core.schema import validate_script
from foley_core.video import open_video
from tests.conftest import make_manifest_videos
from training.collate import SFTCollator
from training.config import TrainConfig
from training.lora import apply_lora, training_step
from training.trainer import train

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory, prefect_harness) -> str:
    root = tmp_path_factory.mktemp("train")
    manifest, _ = make_manifest_videos(root / "videos")
    path = str(root / "store")
    summary = build_dataset(manifest=manifest, store=path, model="tiny-random")
    assert summary.new_ok_rows == 3
    return path


def config(store: str, output: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        store=store,
        output_dir=str(output),
        base_model="tiny-random",
        learning_rate=3e-3,
        warmup_steps=1,
        grad_accum=1,
        batch_size=2,
        eval_fraction=0.0,
        save_steps=4,
        max_steps=12,
    )
    return replace(base, **changes)


def test_one_step_changes_the_adapter_and_not_the_base(scene_video):
    llm = TransformersVideoLLM("tiny-random")
    model = apply_lora(llm.model, TrainConfig())
    llm.model = model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    frames = open_video(str(scene_video)).uniform(8)
    batch = SFTCollator(llm).batch([GenerationRequest(frames, "Write the script.")], ['{"foley":[]}'])
    answer = llm.tokenizer('{"foley":[]}', add_special_tokens=False)["input_ids"]
    assert int((batch["labels"] != -100).sum()) == len(answer) + 1  # the answer and EOS, nothing else
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    training_step(model, [batch], optimizer, TrainConfig(), "cpu", torch.float32)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all("lora_" in name for name in changed)
    assert all("language_model" in name and "vision" not in name for name in changed)


def test_training_end_to_end(store, tmp_path):
    result = train(config(store, tmp_path / "adapter"))
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "adapter" / "train_log.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert weights and all("lora_" in k and "language_model" in k for k in weights)
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert (
        "base_model: tiny-random" in card and store in card and result.data_version["prompt_version"] in card
    )
    assert json.loads((tmp_path / "adapter" / "splits.json").read_text())


def test_resume_continues_the_step_count(store, tmp_path):
    out = tmp_path / "adapter"
    train(config(store, out, max_steps=4))
    assert (out / "checkpoints" / "step-4").is_dir()
    result = train(config(store, out, max_steps=6))
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6] and result.steps == 6


def test_adapter_writes_a_valid_script_in_one_pass(store, tmp_path, scene_video):
    train(config(store, tmp_path / "adapter", max_steps=2))
    out = tmp_path / "script.json"
    result = runner.invoke(
        app,
        [
            "script",
            str(scene_video),
            "--model",
            "tiny-random",
            "--adapter",
            str(tmp_path / "adapter"),
            "--out",
            str(out),
            "--trace",
            str(tmp_path / "t.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    validate_script(json.loads(out.read_text()), open_video(str(scene_video)).info.duration)
    steps = [c["step"] for c in json.loads((tmp_path / "t.json").read_text())["calls"]]
    assert steps == ["simple"]


def test_train_cli_from_yaml_with_evaluation(store, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"store: {store}\nbase_model: tiny-random\nmax_steps: 2\ngrad_accum: 1\neval_fraction: 0.0\n"
    )
    result = runner.invoke(app, ["train", "--config", str(cfg), "--output-dir", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "a" / "eval.json").read_text())  # the test split is held out
    assert report["videos"] == 1 and report["base_full_chain"]["overall"]["f1"] == 1.0
    assert report["adapter_simple_prompt"]["tokens_per_video"] > 0
    assert "adapter_simple_prompt" in (tmp_path / "a" / "eval.md").read_text()


def test_unknown_yaml_option_is_refused(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("store: x\nlearning_rat: 1\n")
    result = runner.invoke(app, ["train", "--config", str(cfg)])
    assert result.exit_code == 2 and "learning_rat" in result.output


def test_train_lora_flow_records_the_training(store, tmp_path):
    from flows.events import last_training
    from flows.train_lora import train_lora

    record = train_lora(
        store=store, output=str(tmp_path / "a"), base_model="tiny-random", max_steps=2, evaluate=False
    )
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()
    assert last_training(store)["ok_rows"] == 3 and record["steps"] == 2


def test_factory_with_an_adapter_runs_one_pass(store, tmp_path):
    train(config(store, tmp_path / "adapter", max_steps=2))
    manifest, _durations = make_manifest_videos(tmp_path / "videos")
    summary = build_dataset(
        manifest=manifest, store=str(tmp_path / "s2"), model="tiny-random", adapter=str(tmp_path / "adapter")
    )
    assert summary.new_ok_rows == 3 and set(summary.computed) == {"sample", "simple", "validate"}
