"""Where a transformers model is loaded from, on which device and in which dtype, and the frames its
family reads: from its name and config alone, no weights (backends/transformers_backend.py loads)."""

from __future__ import annotations

from pathlib import Path

import torch

from v2t_foley.foley_core.backends.tiny import is_tiny, tiny_model_path
from v2t_foley.foley_core.errors import ModelNotFoundError
from v2t_foley.foley_core.video.sampling import FramePolicy


def policy_for_family(model_type: str) -> FramePolicy:
    """Qwen2.5-VL encodes absolute time, so it gets frames at a fixed rate; Video-LLaVA (and models
    like it) were trained on 8 frames spread over the clip."""
    if model_type.startswith("qwen"):
        return FramePolicy("fps", n=32, fps=2.0)
    return FramePolicy("uniform", n=8)


def model_location(model: str) -> str:
    """Where from_pretrained should look: the tiny model's cache folder, or the id/folder as given. A
    name written as a path (./, ../, /, ~) that is no folder is refused here: from_pretrained would
    answer with the Hub's rules for repo ids."""
    if is_tiny(model):
        return str(tiny_model_path(model))
    if model.startswith(("./", "../", "/", "~")):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(f"cannot load model {model!r}: no such folder")
        return str(folder)
    return model


def frame_policy_of(model: str, revision: str | None = None) -> FramePolicy:
    """The frame policy of a model, from its config alone (no weights are loaded)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_location(model), revision=revision)
    except OSError as err:
        raise ModelNotFoundError(f"cannot load model {model!r}: {err}") from None
    return policy_for_family(config.model_type)


def pick_device(device: str | None = None) -> str:
    """The device asked for, else the GPU when there is one."""
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: str | None = None) -> torch.dtype:
    """The dtype asked for (a torch name), else bf16 on a GPU and float32 on the CPU."""
    if dtype:
        return getattr(torch, dtype)
    return torch.bfloat16 if device.startswith("cuda") else torch.float32
