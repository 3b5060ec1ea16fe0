"""The live part of a static KV cache, as a cache of its own: the decode step reads only that.

A `StaticCache` is allocated for the most rows and positions a decoder may need, and attention reads
every position of every row on each step, masked or not. Video-LLaVA-7B holds 0.5 MB of K/V per
position and row: 32 rows x 4,096 positions are 64 GB read per step, against 14.7 GB of weights, while
a chain on one clip keeps one to four rows live and its last write sits near position 2,500. A view
of the first `rows` rows and `columns` positions reads only that (a view: no copy; the writes land in
the full cache). Both are bucketed (rows to a power of two, positions by `bucket_columns`) so that a
step sees few shapes, and both are dynamic dimensions of one compiled graph
(`static_decode.compile_step`). Masked positions add exactly zero to attention, so the answers are
the same token for token (tests/test_cache_views.py, tests/test_static_decode.py,
tests/test_continuous.py).

A step writes one position a row. The static decoder's rows write at one column shared by all (the
cache's own write position, `cumulative_length`); the continuous decoder's rows each write at their
own column (`write_at`), so that a row's K/V starts at column 0 whenever it joined, and a view is as
wide as the longest live row, not as long as the decoder has been running.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer

COLUMN_BUCKET = 512  # a view's positions past this are a multiple of it (and at most the cache's
# length); under it, a quarter or a half of it (the continuous decoder's rows hold only what follows
# their stored video prefix: often a few hundred columns). At most 10 widths for Video-LLaVA's 4,096
# positions, each recorded once as a CUDA graph per row count


def bucket_columns(used: int, length: int) -> int:
    """Positions a step must see when positions [0, used) are in use, of a cache of `length`."""
    if used <= COLUMN_BUCKET:
        width = next(COLUMN_BUCKET >> k for k in (2, 1, 0) if used <= COLUMN_BUCKET >> k)
    else:
        width = -(-used // COLUMN_BUCKET) * COLUMN_BUCKET
    return min(length, width)


class CacheViews:
    """Views of one initialized `StaticCache`, made once per (rows, columns) and reused. With
    `write_at` ([rows] long, on the cache's device) each row writes at its own column (`RowWrites`)."""

    def __init__(self, cache: StaticCache, write_at: torch.Tensor | None = None) -> None:
        self.cache = cache
        self.write_at = write_at
        self._views: dict[tuple[int, int], StaticCache] = {}

    def get(self, rows: int, columns: int) -> StaticCache:
        """The first `rows` rows and `columns` positions of the cache (a view also when that is all of
        it: every step's cache then has the same dynamic dimensions, see `static_decode.compile_step`).
        Without `write_at` its layers share their write position (`cumulative_length`) with the
        cache's."""
        view = self._views.get((rows, columns))
        if view is None:
            view = copy.copy(self.cache)
            if self.write_at is None:
                view.layers = [_layer_view(layer, rows, columns) for layer in self.cache.layers]
            else:  # one slice for every layer: one input of the compiled step, not one a layer
                write_at = self.write_at[:rows]
                torch._dynamo.maybe_mark_dynamic(write_at, 0)
                view.layers = [RowWrites(layer, rows, columns, write_at) for layer in self.cache.layers]
            self._views[(rows, columns)] = view
        return view


def _layer_view(layer: Any, rows: int, columns: int) -> Any:
    """A copy of a `StaticLayer` whose keys and values are views of the layer's own."""
    view = copy.copy(layer)  # shares cumulative_length: a write through the view moves the cache's
    view.keys = layer.keys[:rows, :, :columns]
    view.values = layer.values[:rows, :, :columns]
    view.batch_size, view.max_cache_len = rows, columns
    _mark(view.keys, view.values)
    return view


def _mark(*views: torch.Tensor) -> None:
    # a view's storage is the cache's, whose address never moves: CUDA graphs need not copy it; its
    # rows and columns vary from step to step: one compiled graph serves them all
    for tensor in views:
        torch._dynamo.mark_static_address(tensor)
        torch._dynamo.maybe_mark_dynamic(tensor, 0)
        torch._dynamo.maybe_mark_dynamic(tensor, 2)


class RowWrites(StaticLayer):
    """The first `rows` rows and `columns` positions of a `StaticLayer`, where a decode step writes each
    row's one new position at that row's own column, `write_at[row]` ([rows]; the decoder keeps it: it
    moves on by one for every live row after each step). Not for prefills: one position a row."""

    def __init__(self, layer: StaticLayer, rows: int, columns: int, write_at: torch.Tensor) -> None:
        super().__init__(max_cache_len=columns)
        self.keys = layer.keys[:rows, :, :columns]
        self.values = layer.values[:rows, :, :columns]
        _mark(self.keys, self.values)
        self.cumulative_length = layer.cumulative_length  # not written here; `get_seq_length` reads it
        self.device, self.batch_size, self.num_heads = layer.device, rows, layer.num_heads
        self.k_head_dim, self.v_head_dim = layer.k_head_dim, layer.v_head_dim
        self.is_initialized = True
        # per-wave and small: copied into a CUDA graph's inputs at each replay, so not a static address
        self.write_at = write_at

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write `key_states`/`value_states` ([rows, heads, 1, dim]) at each row's column; return the
        whole view, as `StaticLayer.update` does."""
        where = self.write_at.view(-1, 1, 1, 1)
        self.keys.scatter_(2, where.expand_as(key_states), key_states)
        self.values.scatter_(2, where.expand_as(value_states), value_states)
        return self.keys, self.values
