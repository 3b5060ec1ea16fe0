"""Serving a trained adapter where users serve models: vLLM's LoRA support, then `foley script
--backend openai` against it.

    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --enable-lora --max-lora-rank 16 \\
        --lora-modules foley=./adapter --limit-mm-per-prompt '{"image": 16}'
    foley script clip.mp4 --backend openai --base-url http://127.0.0.1:8000/v1 --model foley \\
        --adapter ./adapter

vLLM applies the adapter to requests whose `model` is the LoRA's name (`foley`); `--adapter` tells
`foley script` to ask the one-pass simple prompt (its folder is not loaded: the server has the
weights). What vLLM needs from the folder, and what `check_servable` checks offline:
- every LoRA weight sits in the language model's attention projections (vLLM applies LoRA to the
  language model of Qwen2.5-VL; the vision tower and projector stay the base model's);
- the rank fits `--max-lora-rank` (one of vLLM's sizes: 1, 8, 16, 32, 64, 128, 256, 320, 512);
- `base_model_name_or_path` is the Hub id (or folder) the server loads, not a local test model.

One difference to know: the transformers backend, which trained the adapter, shows the frames as one
video input; the openai backend sends them as JPEG images with their times. The adapter sees the same
frames and prompt, laid out as images; check its numbers on references (`foley eval`) before relying
on the served adapter. vLLM versions that refuse a regex in `target_modules` take the list
`[q_proj, k_proj, v_proj, o_proj]` instead (the weights themselves only exist in the language model).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from v2t_foley.foley_core.backends.tiny import TINY_NAMES
from v2t_foley.foley_core.errors import InputError

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
# peft's key of a LoRA weight: ...<module path>.lora_A.weight / .lora_B.weight
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?:A|B)(?:\.[^.]+)?\.weight$")


@dataclass
class ServingCheck:
    adapter: str
    base_model: str
    rank: int
    modules: list[str]  # the module paths that carry LoRA weights
    problems: list[str] = field(default_factory=list)  # empty: vLLM can serve it

    @property
    def ok(self) -> bool:
        return not self.problems

    def vllm_command(self, name: str = "foley", images: int = 16) -> str:
        max_rank = next((r for r in VLLM_RANKS if r >= self.rank), self.rank)
        return " ".join(
            [
                "vllm serve",
                shlex.quote(self.base_model),
                "--enable-lora",
                f"--max-lora-rank {max_rank}",
                f"--lora-modules {shlex.quote(f'{name}={self.adapter}')}",
                f"--limit-mm-per-prompt {shlex.quote(json.dumps({'image': images}))}",
            ]
        )


def check_servable(adapter: str | Path) -> ServingCheck:
    """What vLLM will find in `adapter` (a folder `foley train` wrote), read offline."""
    from safetensors import safe_open

    folder = Path(adapter)
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{adapter}: not a readable LoRA adapter folder ({err})") from None
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as weights:
        keys = list(weights.keys())
    modules = sorted({m.group("module") for k in keys if (m := _KEY.match(k))})
    check = ServingCheck(
        adapter=str(folder),
        base_model=str(config.get("base_model_name_or_path") or ""),
        rank=int(config.get("r", 0)),
        modules=modules,
    )
    outside = [m for m in modules if "language_model" not in m or m.rsplit(".", 1)[-1] not in ATTENTION]
    if not modules:
        check.problems.append("no LoRA weights")
    if outside:
        check.problems.append(f"LoRA outside the language model's attention: {', '.join(outside[:3])}")
    if any(k for k in keys if not _KEY.match(k)):
        check.problems.append("weights other than LoRA A/B (embeddings, heads): vLLM serves LoRA A/B only")
    if not 0 < check.rank <= VLLM_RANKS[-1]:
        check.problems.append(f"rank {check.rank}: vLLM serves ranks up to {VLLM_RANKS[-1]}")
    if not check.base_model:
        check.problems.append("adapter_config.json names no base model")
    elif check.base_model in TINY_NAMES:
        check.problems.append(f"base model {check.base_model} is a local test model; vLLM cannot load it")
    return check
