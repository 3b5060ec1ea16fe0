"""The static KV cache that the continuous decoder's waves run in (backends/continuous.py).

Each new cache shape costs CUDA-graph recordings of the compiled decode step (seconds and pool
memory), so the cache is held from one wave to the next and reused while it serves: when it has every
row and is long enough for the wave's first request, or when it has as many rows as a new one would
get (the GPU's room, `plan_cache`) and is long enough. A new one replaces it otherwise; the rows' masks
hide what earlier rows left in a reused one.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import StaticCache

from v2t_foley.foley_core.backends.static_decode import kv_bytes, kv_shape, plan_cache, room_for_caches


class WaveCache:
    """The held cache of a decoder of `slots` rows over `model`'s language model."""

    def __init__(self, model: Any, slots: int) -> None:
        self.model = model
        self.slots = slots
        self.cache: StaticCache | None = None
        self.shape = (0, 0)  # (rows, columns) of `cache`

    def size(self, need: int, want: int, kept: int = 0) -> tuple[int, int]:
        """(rows, columns) of the next wave's cache, whose first request needs `need` columns (`want`
        would also let longer requests join): the held cache's shape when it serves (see the module
        docstring), else a new one's. `kept`: bytes of a prefix store about to be made, whose room the
        rows leave (the held cache is then not reused for fewer rows: the plan's rows may have shrunk
        to leave that room). (0, need) when no row fits."""
        held = self.cache is not None and self.shape[1] >= need
        if held and self.shape[0] >= self.slots:  # more columns would only let more questions join
            return self.shape
        rows, columns = self._plan(need, want, kept)
        return self.shape if held and not kept and self.shape[0] >= rows else (rows, columns)

    def _plan(self, need: int, want: int, kept: int) -> tuple[int, int]:
        """A new cache's (rows, columns): `plan_cache` in the GPU's room, less `kept`; the held cache's
        bytes count as room, since the new one replaces it."""
        held = kv_bytes(self.model, *self.shape) if self.cache is not None else 0
        room = room_for_caches(self._weight().device, held)
        per_column = kv_bytes(self.model, 1, 1)
        return plan_cache(None if room is None else max(room - kept, 0), per_column, self.slots, need, want)

    def get(self, rows: int, columns: int) -> StaticCache:
        """The held cache when it has this shape, else a new one of it (the held one freed first)."""
        if self.cache is None or self.shape != (rows, columns):
            self.shape = (rows, columns)
            self.cache = None  # free the old one first
            self.cache = StaticCache(config=self.model.config, max_cache_len=columns)
            _layers, heads, head_dim = kv_shape(self.model)
            weight = self._weight()
            self.cache.early_initialization(rows, heads, head_dim, weight.dtype, weight.device)
        return self.cache

    def drop(self) -> None:
        """Free the held cache (the next wave makes a new one)."""
        self.cache = None

    def _weight(self) -> torch.Tensor:
        return self.model.get_output_embeddings().weight
