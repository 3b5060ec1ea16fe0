"""Model backends behind one interface, `VideoLLM`; `BackendSpec` names one, `load_backend` loads it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from v2t_foley.foley_core.backends.base import (
    DEFAULT_MODEL,
    Generation,
    GenerationParams,
    GenerationRequest,
    VideoLLM,
)
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.video.sampling import FramePolicy

BACKENDS = ("transformers", "openai")
DECODERS = ("generate", "static", "continuous")
DTYPES = ("bfloat16", "float16", "float32")
# torch's device strings (the GPU itself is checked where the model loads: a driver may plan on a CPU)
DEVICE = re.compile(r"(cpu|meta|(cuda|mps|xpu|npu|hpu|mtia)(:\d+)?)")


@dataclass(frozen=True)
class BackendSpec:
    """Which model to run, and where. Plain data: it travels as a flow parameter."""

    backend: str = "transformers"  # transformers (in-process) or openai (a server)
    model: str = DEFAULT_MODEL  # Hub id, local folder, served model name, or tiny-random
    revision: str | None = None  # Hub revision to pin
    adapter: str | None = None  # LoRA adapter folder (transformers only)
    base_url: str | None = None  # the server, for the openai backend
    device: str | None = None  # cuda, cuda:1, cpu (default: cuda when available)
    dtype: str | None = None  # bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)
    batch_size: int = 8  # requests per forward batch (transformers)
    concurrency: int = 16  # requests in flight at once (openai: the server batches them continuously)
    decoder: str = "generate"  # transformers: `generate`; `static` (static KV cache + CUDA graphs,
    # greedy, the same tokens; backends/static_decode.py); `continuous` (slots that requests take as
    # they free, video prefixes held once per video; backends/continuous.py); both fast decoders
    # continue each question from its video's prefix (backends/video_prefix.py)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r}; use one of: {', '.join(BACKENDS)}")
        if self.backend == "openai" and not self.base_url:
            raise InputError("the openai backend needs --base-url (and --model, the served model's name)")
        if self.decoder not in DECODERS:
            raise InputError(f"unknown decoder {self.decoder!r}; use one of: {', '.join(DECODERS)}")
        if self.concurrency < 1:
            raise InputError(f"--concurrency must be at least 1, not {self.concurrency}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.device is not None and not DEVICE.fullmatch(self.device):
            raise InputError(f"--device {self.device!r} is no torch device; use cuda, cuda:1 or cpu")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; use one of: {', '.join(DTYPES)}")
        if self.backend == "openai" and self.adapter:
            raise InputError("the openai backend cannot apply an adapter; serve the adapter with the model")

    @property
    def model_key(self) -> str:
        """The model's name in done-keys and rows: the model, plus the adapter when there is one."""
        return f"{self.model}@{self.adapter}" if self.adapter else self.model

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_backend(spec: BackendSpec) -> VideoLLM:
    """A newly loaded VideoLLM (one-shot use, like the CLI; tasks share one via `load_shared_backend`)."""
    if spec.backend == "transformers":
        from v2t_foley.foley_core.backends.transformers_backend import load_transformers_model

        return load_transformers_model(
            spec.model, spec.revision, spec.adapter, spec.device, spec.dtype, spec.batch_size, spec.decoder
        )
    from v2t_foley.foley_core.backends.openai_backend import OpenAIVideoLLM

    llm = OpenAIVideoLLM(spec.model, spec.base_url or "", max_concurrency=spec.concurrency)
    llm.revision = spec.revision or ""  # a server's weights are known only by what the caller pinned
    return llm


def load_shared_backend(spec: BackendSpec, revisions: tuple[str, str] | None = None) -> VideoLLM:
    """The process-wide, thread-safe, batching instance for `spec` (what Prefect tasks use): loaded once,
    under a lock; another spec, or other `revisions` (default: resolved now), replaces it (see
    backends/registry.py)."""
    from v2t_foley.foley_core.backends.registry import shared_model

    return shared_model(spec, revisions)


def frame_policy_for(spec: BackendSpec) -> FramePolicy:
    """How the model wants frames, known without loading weights."""
    if spec.backend == "transformers":
        from v2t_foley.foley_core.backends.model_choice import frame_policy_of

        return frame_policy_of(spec.model, spec.revision)
    return FramePolicy()


__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "BackendSpec",
    "Generation",
    "GenerationParams",
    "GenerationRequest",
    "VideoLLM",
    "frame_policy_for",
    "load_backend",
    "load_shared_backend",
]
