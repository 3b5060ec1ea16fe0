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

from tests.conftest import make_manifest_videos
from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.flows.cli import app
from v2t_foley.foley_core.backends.base import GenerationRequest
from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
from v2t_foley.foley_core.chain.simple import load_simple_prompt
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.schema import validate_script
from v2t_foley.foley_core.schema.rows import row_script
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.video import open_video
from v2t_foley.training.collate import SFTCollator
from v2t_foley.training.config import TrainConfig
from v2t_foley.training.evaluate import evaluate_adapter
from v2t_foley.training.lora import apply_lora, training_step
from v2t_foley.training.trainer import train

runner = CliRunner()


@pytest.fixture(scope="module")
def store(training_store: str) -> str:
    return training_store


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
        eval_steps=4,
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
    # the Trainer: a cosine schedule after warm-up, evaluation loss on the held-out video every 4 steps
    lrs = [
        json.loads(line)["lr"] for line in (tmp_path / "adapter" / "train_log.jsonl").read_text().splitlines()
    ]
    assert max(lrs) == pytest.approx(3e-3) and lrs[-1] < lrs[5] < max(lrs)
    evals = [json.loads(line) for line in (tmp_path / "adapter" / "eval_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [4, 8, 12] and result.eval_examples == 1
    assert result.eval_loss == evals[-1]["eval_loss"] and "## Evaluation loss" in card
    assert f"| 12 | {result.eval_loss} |" in card
    assert (tmp_path / "adapter" / "train_log.csv").read_text().startswith("step,loss,lr")


def test_resume_continues_the_step_count(store, tmp_path):
    out = tmp_path / "adapter"
    train(config(store, out, max_steps=4))
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # the Trainer's own checkpoint
    result = train(config(store, out, max_steps=6))
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6] and result.steps == 6 and result.steps_run == 2


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
        f"store: {store}\nbase_model: tiny-random\nmax_steps: 2\neval_fraction: 0.0\n"
        # the Trainer's names and any other TrainingArguments field
        "gradient_accumulation_steps: 1\nlr_scheduler_type: linear\nwarmup_steps: 0\nsave_steps: 1\n"
        "save_total_limit: 1\n"
        "report_to: [csv, tensorboard]\n"
    )
    result = runner.invoke(app, ["train", "--config", str(cfg), "--output-dir", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "eval loss" in result.output
    assert [p.name for p in (tmp_path / "a" / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    assert list((tmp_path / "a" / "checkpoints" / "runs").rglob("events.out.tfevents.*"))
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert lrs[-1] < lrs[0]  # linear decay, no warm-up
    report = json.loads((tmp_path / "a" / "eval.json").read_text())  # the test split is held out
    # no references: no F1 (the chain against itself is 1.0 by construction), validity and cost only
    assert report["videos"] == 1 and report["scored"] is False and "F1" in report["note"]
    assert "overall" not in report["base_full_chain"] and "overall" not in report["adapter_simple_prompt"]
    assert report["adapter_simple_prompt"]["tokens_per_video"] > 0
    assert report["base_full_chain"]["seconds_per_video"] > 0
    assert "No F1" in (tmp_path / "a" / "eval.md").read_text()

    # with references both sides are scored against them
    refs = tmp_path / "refs"
    refs.mkdir()
    held_out = [r for r in DatasetStore(store).read_rows() if r["status"] == "ok" and r["split"] == "test"]
    assert len(held_out) == 1
    (refs / f"{held_out[0]['id']}.json").write_text(row_script(held_out[0]).model_dump_json())
    scored = evaluate_adapter(
        config(store, tmp_path / "a", eval_fraction=0.0), str(tmp_path / "a"), references=str(refs)
    )
    assert scored["scored"] and scored["base_full_chain"]["overall"]["f1"] == 1.0  # its own script
    assert "f1" in scored["adapter_simple_prompt"]["overall"]
    assert "F1 overall" in (tmp_path / "a" / "eval.md").read_text()


def test_config_maps_onto_training_arguments(tmp_path):
    """The YAML sets TrainConfig fields, the Trainer's names of them, and any TrainingArguments field."""
    from v2t_foley.training.arguments import training_arguments

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "store: s\nlearning_rate: 0.001\nper_device_train_batch_size: 4\nnum_train_epochs: 2\n"
        "lr_scheduler_type: linear\nsave_total_limit: 3\noptim: adamw_torch\n"
        "training_args: {gradient_accumulation_steps: 2, label_smoothing_factor: 0.1}\n"
    )
    config = TrainConfig.from_yaml(cfg, max_steps=7)
    assert (config.batch_size, config.epochs, config.grad_accum, config.max_steps) == (4, 2, 2, 7)
    assert config.training_args == {
        "save_total_limit": 3,
        "optim": "adamw_torch",
        "label_smoothing_factor": 0.1,
    }
    args = training_arguments(replace(config, device="cpu"), tmp_path / "a", max_steps=7, has_eval=True)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.max_steps) == (4, 2, 7)
    assert args.learning_rate == 0.001 and args.lr_scheduler_type == "linear"
    assert args.save_total_limit == 3 and args.label_smoothing_factor == 0.1
    assert (
        args.eval_strategy == "steps"
        and args.eval_steps == 50
        and args.output_dir == str(tmp_path / "a" / "checkpoints")
    )
    assert args.remove_unused_columns is False and args.label_names == ["labels"]
    for bad in ("remove_unused_columns: true\n", "training_args: {no_such_field: 1}\n"):
        cfg.write_text("store: s\n" + bad)
        with pytest.raises(InputError, match="unknown training option"):
            TrainConfig.from_yaml(cfg)


def test_unknown_yaml_option_is_refused(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("store: x\nlearning_rat: 1\n")
    result = runner.invoke(app, ["train", "--config", str(cfg)])
    assert result.exit_code == 2 and "learning_rat" in result.output


def test_train_lora_flow_records_the_training(store, tmp_path):
    from v2t_foley.flows.events import last_training
    from v2t_foley.flows.train_lora import train_lora

    record = train_lora(
        store=store,
        output=str(tmp_path / "a"),
        base_model="tiny-random",
        max_steps=2,
        evaluate=False,
        num_processes=2,  # torchrun on the worker (gloo processes on CPU)
    )
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()
    assert last_training(store)["ok_rows"] == 3 and record["steps"] == 2 and record["processes"] == 2
    assert last_training(store)["eval_loss"] is not None


def test_factory_with_an_adapter_runs_one_pass(store, tmp_path):
    train(config(store, tmp_path / "adapter", max_steps=2))
    manifest, _durations = make_manifest_videos(tmp_path / "videos")
    summary = build_dataset(
        manifest=manifest, store=str(tmp_path / "s2"), model="tiny-random", adapter=str(tmp_path / "adapter")
    )
    assert summary.new_ok_rows == 3 and set(summary.computed) == {"sample", "simple", "validate"}


# --- several processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_on_cpu_share_the_data_and_rank_0_writes(store, tmp_path, monkeypatch):
    """torchrun with 2 gloo processes on the tiny model, through the launcher `foley train
    --num-processes` and the train-lora flow use: each rank trains on its own examples, only rank 0
    writes the adapter folder (rank 1 writes only its RNG state into the Trainer's checkpoints), and the
    adapter loads."""
    from v2t_foley.training.data import examples_from_rows, read_store, split_examples
    from v2t_foley.training.launch import launch

    monkeypatch.setenv("FOLEY_DDP_PROBE", str(tmp_path))
    out = tmp_path / "adapter"
    cfg = config(store, out, max_steps=2, batch_size=1, save_steps=1, eval_steps=1, device="cpu")
    result = launch(cfg, 2, module="tests.ddp_probe")
    assert result.processes == 2 and result.steps == 2 and result.steps_run == 2
    assert result.eval_loss is not None and [e["step"] for e in result.eval_losses] == [1, 2]

    examples = examples_from_rows(read_store(DatasetStore(store)).rows, load_simple_prompt())
    train_ids = {e.id for e in split_examples(examples, 0.0, 0)["train"]}
    assert len(train_ids) == 2
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    seen = [[i for i in r["seen"] if i in train_ids] for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 2  # one example per rank per step (batch 1, 2 steps)
    for step in range(2):  # disjoint at every step, and together the whole training split
        assert {seen[0][step], seen[1][step]} == train_ids

    def inside(writes: list[str]) -> set[str]:
        return {
            str(Path(w).resolve().relative_to(out.resolve()))
            for w in writes
            if Path(w).resolve().is_relative_to(out.resolve())
        }

    rank0, rank1 = inside(ranks[0]["writes"]), inside(ranks[1]["writes"])
    assert {"adapter_model.safetensors", "README.md", "splits.json", "train_log.jsonl"} <= rank0
    assert rank1 and all(
        Path(p).name == "rng_state_1.pth" and p.startswith("checkpoints/checkpoint-") for p in rank1
    )
    llm = TransformersVideoLLM("tiny-random", adapter=str(out))
    assert llm.adapter and any("lora_" in name for name, _ in llm.model.named_parameters())


# --- the README's commands, as written ------------------------------------------------------------


def test_readme_train_then_script_without_model(store, tmp_path, scene_video):
    """`foley train --store S --output-dir A` then `foley script clip.mp4 --adapter A` on a tiny-random
    store, offline: both use the store's model (HF_HUB_OFFLINE makes a Hub lookup fail at once)."""
    adapter = str(tmp_path / "adapter")
    result = runner.invoke(app, ["train", "--store", store, "--output-dir", adapter])
    assert result.exit_code == 0, result.output
    assert json.loads(Path(adapter, "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "tiny-random"
    )
    assert json.loads(Path(adapter, "eval.json").read_text())["base_model"] == "tiny-random"
    steps = json.loads(Path(adapter, "train_result.json").read_text())["steps"]

    again = runner.invoke(app, ["train", "--store", store, "--output-dir", adapter])
    assert again.exit_code == 0, again.output
    assert again.output.strip().splitlines() == [
        f"{adapter}: already trained {steps} steps; pass --max-steps larger than {steps} to continue"
    ]

    more = runner.invoke(
        app,
        ["train", "--store", store, "--output-dir", adapter, "--max-steps", str(steps + 2), "--no-evaluate"],
    )
    assert more.exit_code == 0, more.output
    logged = [json.loads(line)["step"] for line in Path(adapter, "train_log.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 3))

    out = tmp_path / "script.json"
    scripted = runner.invoke(app, ["script", str(scene_video), "--adapter", adapter, "--out", str(out)])
    assert scripted.exit_code == 0, scripted.output
    validate_script(json.loads(out.read_text()), open_video(str(scene_video)).info.duration)


def test_build_dataset_with_an_adapter_uses_its_base_model(store, tmp_path, scene_video):
    adapter = tmp_path / "adapter"
    train(config(store, adapter, max_steps=1))
    manifest = tmp_path / "one.csv"
    manifest.write_text(f"video,id\n{scene_video},scene\n")
    built = runner.invoke(
        app,
        [
            "build-dataset",
            "--manifest",
            str(manifest),
            "--store",
            str(tmp_path / "s"),
            "--adapter",
            str(adapter),
        ],
    )
    assert built.exit_code == 0, built.output
    (row,) = DatasetStore(str(tmp_path / "s")).read_rows()
    assert row["status"] == "ok" and row["model_id"] == "tiny-random" and row["adapter"] == str(adapter)


def test_an_adapter_names_its_base_model(tmp_path, scene_video):
    from v2t_foley.training.basemodel import adapter_base_model

    folder = tmp_path / "a"
    folder.mkdir()
    for recorded, expected in (
        ("/root/.cache/foley/models/tiny-random-v1", "tiny-random"),  # adapters from before the fix
        ("/cache/models/tiny-random-qwen2.5-vl-v1", "tiny-random-qwen2.5-vl"),
        ("LanguageBind/Video-LLaVA-7B-hf", "LanguageBind/Video-LLaVA-7B-hf"),
    ):
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": recorded}))
        assert adapter_base_model(str(folder)) == expected
    result = runner.invoke(app, ["script", str(scene_video), "--adapter", str(tmp_path)])
    assert result.exit_code == 2 and "not a LoRA adapter folder" in result.output
