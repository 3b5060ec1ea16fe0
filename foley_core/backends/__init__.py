"""Model backends behind one interface, `VideoLLM`, and `load_backend` to pick one by name."""

from __future__ import annotations

from foley_core.backends.base import Generation, GenerationParams, GenerationRequest, VideoLLM
from foley_core.errors import InputError

BACKENDS = ("transformers", "openai")


def load_backend(
    backend: str = "transformers",
    model: str | None = None,
    *,
    base_url: str | None = None,
    revision: str | None = None,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 8,
) -> VideoLLM:
    """A ready VideoLLM. transformers models are cached per process; openai clients are cheap."""
    if backend == "transformers":
        from foley_core.backends.transformers_backend import DEFAULT_MODEL, load_transformers_model

        return load_transformers_model(model or DEFAULT_MODEL, revision, adapter, device, dtype, batch_size)
    if backend == "openai":
        from foley_core.backends.openai_backend import OpenAIVideoLLM

        if not base_url or not model:
            raise InputError("the openai backend needs --base-url and --model (the served model's name)")
        if adapter:
            raise InputError("the openai backend cannot apply an adapter; serve the adapter with the model")
        return OpenAIVideoLLM(model, base_url)
    raise InputError(f"unknown backend {backend!r}; use one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Generation", "GenerationParams", "GenerationRequest", "VideoLLM", "load_backend"]
