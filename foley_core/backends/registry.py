"""At most one loaded model per process: the batching instance every task of a process shares.

A shard's first model stage starts up to 16 tasks at once; each asks for the model. Loading happens
under one lock, so the first asker loads and the others wait for that load rather than start their own
(a 7B model loaded 16 times does not fit any GPU). Asking for another spec replaces the held model:
its batching thread is closed and every reference dropped before the new one loads, so two models never
sit in memory together. The same spec whose weights changed on disk since the load (an adapter
retrained into its folder, a moved Hub ref) is another model too: the held one is keyed by its
resolved revisions as well.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from v2t_foley.foley_core.backends.base import VideoLLM
from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
from v2t_foley.foley_core.backends.provenance import resolve_revisions

if TYPE_CHECKING:
    from v2t_foley.foley_core.backends import BackendSpec

log = logging.getLogger(__name__)

Loader = Callable[["BackendSpec"], VideoLLM]


class ModelRegistry:
    """Holds one `BatchingVideoLLM` and the spec it was loaded for."""

    def __init__(self, loader: Loader | None = None) -> None:
        self._loader = loader  # None: foley_core.backends.load_backend, looked up at load time
        self._lock = threading.Lock()
        self._spec: BackendSpec | None = None
        self._revisions: tuple[str, str] | None = None  # (model, adapter) of the held model
        self._held: BatchingVideoLLM | None = None

    @property
    def spec(self) -> BackendSpec | None:
        """The spec of the held model (None when none is held)."""
        return self._spec

    def get(self, spec: BackendSpec, revisions: tuple[str, str] | None = None) -> BatchingVideoLLM:
        """The held model when it is `spec`'s at `revisions` (default: as resolved now); otherwise free
        the held one and load `spec`."""
        with self._lock:  # held through the load: concurrent askers wait for it, then share it
            wanted = revisions if revisions is not None else resolve_revisions(spec)
            if self._held is not None and self._spec == spec and self._revisions == wanted:
                return self._held
            self._release()
            loader = self._loader
            if loader is None:
                from v2t_foley.foley_core.backends import load_backend

                loader = load_backend
            held = BatchingVideoLLM(loader(spec), max_batch=spec.batch_size)
            # what the loaded model reports (resolved after its load), so callers pinning those match
            self._held, self._spec = held, spec
            self._revisions = (held.revision, held.adapter_revision)
            return held

    def release(self) -> None:
        """Close and free the held model, if any."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        held, self._held, self._spec, self._revisions = self._held, None, None, None
        if held is None:
            return
        device = str(getattr(held.inner, "device", ""))
        held.close()  # ends its thread and drops the inner model
        del held
        gc.collect()  # models hold reference cycles (modules, hooks, PEFT wrappers)
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()  # give the freed blocks back, for the next model and other processes
        log.info("released the held model")


_registry = ModelRegistry()


def shared_model(spec: BackendSpec, revisions: tuple[str, str] | None = None) -> BatchingVideoLLM:
    """The process's model for `spec`, loaded once (see `ModelRegistry.get`)."""
    return _registry.get(spec, revisions)


def release_shared_model() -> None:
    """Free the process's model (tests, and processes done with the GPU)."""
    _registry.release()
