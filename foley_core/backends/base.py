"""The VideoLLM interface every backend implements: batched requests in, texts out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from v2t_foley.foley_core.video.reader import Frames
from v2t_foley.foley_core.video.sampling import FramePolicy

DEFAULT_MODEL = "LanguageBind/Video-LLaVA-7B-hf"


@dataclass(frozen=True)
class GenerationParams:
    """How to decode. Part of every cache key and every dataset row."""

    max_new_tokens: int | None = None  # None: the schema's length bound when constrained, else 1024
    temperature: float = 0.0  # 0 decodes greedily (reproducible); > 0 samples
    top_p: float = 1.0  # nucleus sampling mass when temperature > 0
    seed: int = 0  # sampling seed, so sampled runs are reproducible too

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_MAX_NEW_TOKENS = 1024


@dataclass(frozen=True)
class GenerationRequest:
    """One question about one video."""

    frames: Frames  # what the model sees, with absolute timestamps
    prompt: str  # the rendered user prompt (the backend adds its chat format and the video token)
    json_schema: dict[str, Any] | None = None  # constrain the answer to this schema when supported


@dataclass(frozen=True)
class Generation:
    """One answer."""

    text: str  # the decoded answer, special tokens removed
    new_tokens: int  # tokens generated
    finished: bool  # the model stopped by itself (EOS / grammar end), not at the token limit
    constrained: bool  # the answer was decoded under its JSON Schema


class VideoLLM(ABC):
    """A video-language model that answers batches of questions about videos."""

    backend: str = "abstract"  # "transformers", "openai": stored in rows
    model_id: str = ""  # Hub id, folder or served model name
    revision: str = ""  # commit or version of the weights, when known
    adapter: str | None = None  # LoRA adapter path, when one is applied
    adapter_revision: str = ""  # content hash of the adapter's files ("" without one)
    frame_policy: FramePolicy = FramePolicy()  # how the model wants its frames sampled
    supports_json_schema: bool = False  # can decode under a JSON Schema
    # requests it answers side by side when as many threads call `generate` at once (a batching
    # wrapper's batch or decode slots, a server's requests in flight); 1: call it from one thread at a
    # time. The executor sizes a model step's threads by it (chain/executor.py: step_threads)
    parallel_requests: int = 1

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], params: GenerationParams) -> list[Generation]:
        """Answer every request; the i-th answer belongs to the i-th request."""

    def answer_room(self, frames: Frames, prompt: str) -> int | None:
        """Tokens the model's context leaves for the answer (EOS included) to `prompt` about `frames`,
        after the chat template, the prompt and the video; None when the backend knows no limit."""
        return None

    def describe(self) -> dict[str, str | None]:
        """Identity of the model for rows, traces and cache keys."""
        identity = {
            "backend": self.backend,
            "model_id": self.model_id,
            "revision": self.revision,
            "adapter": self.adapter,
            "adapter_revision": self.adapter_revision,
        }
        decoder = getattr(self, "decoder", "generate")
        if decoder != "generate":  # bf16 kernels of another decoder may break a near-tie differently
            identity["decoder"] = decoder
        return identity

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the model or connections. Optional."""
