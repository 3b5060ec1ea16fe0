"""A trained adapter, served: what vLLM needs is checked offline (LoRA only inside the language model's
attention, the rank, the base model id), and `foley script --backend openai --model NAME --adapter A`
asks a server for the one-pass simple prompt under the served adapter's name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.chat_server import ChatServer
from v2t_foley.flows.cli import app
from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
from v2t_foley.training.config import TrainConfig
from v2t_foley.training.lora import apply_lora
from v2t_foley.training.serving import check_servable

runner = CliRunner()


@pytest.fixture(scope="module")
def qwen_adapter(tmp_path_factory) -> Path:
    """An adapter as `foley train` makes it (same LoRA config and save), on the tiny Qwen2.5-VL."""
    folder = tmp_path_factory.mktemp("served") / "adapter"
    llm = TransformersVideoLLM("tiny-random-qwen2.5-vl")
    model = apply_lora(llm.model, TrainConfig(lora_r=16))
    for adapter_config in model.peft_config.values():
        adapter_config.base_model_name_or_path = "tiny-random-qwen2.5-vl"
    model.save_pretrained(folder, save_embedding_layers=False)
    return folder


def test_adapter_is_what_vllm_serves(qwen_adapter):
    check = check_servable(qwen_adapter)
    assert check.rank == 16 and check.modules
    assert all("language_model" in m and "visual" not in m for m in check.modules)
    assert {m.rsplit(".", 1)[1] for m in check.modules} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert check.problems == ["base model tiny-random-qwen2.5-vl is a local test model; vLLM cannot load it"]
    config = json.loads((qwen_adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2.5-VL-7B-Instruct"  # an adapter of the real model
    real = qwen_adapter.parent / "real"
    real.mkdir()
    (real / "adapter_config.json").write_text(json.dumps(config))
    (real / "adapter_model.safetensors").write_bytes(
        (qwen_adapter / "adapter_model.safetensors").read_bytes()
    )
    served = check_servable(real)
    assert served.ok, served.problems
    command = served.vllm_command("foley")
    assert command.startswith("vllm serve Qwen/Qwen2.5-VL-7B-Instruct --enable-lora --max-lora-rank 16 ")
    assert f"--lora-modules foley={real}" in command


def test_script_against_a_served_adapter(qwen_adapter, scene_video, tmp_path):
    with ChatServer() as server:
        out, trace = tmp_path / "script.json", tmp_path / "trace.json"
        args = ["script", str(scene_video), "--backend", "openai", "--base-url", server.url]
        result = runner.invoke(
            app,
            [
                *args,
                "--model",
                "foley",
                "--adapter",
                str(qwen_adapter),
                "--out",
                str(out),
                "--trace",
                str(trace),
            ],
        )
        assert result.exit_code == 0, result.output
        assert [c["step"] for c in json.loads(trace.read_text())["calls"]] == ["simple"]
        assert [r["model"] for r in server.requests] == ["foley"]  # the served LoRA's name
        assert json.loads(out.read_text())
        missing = runner.invoke(app, [*args, "--adapter", str(qwen_adapter)])
    assert missing.exit_code == 2 and "--lora-modules" in missing.output
