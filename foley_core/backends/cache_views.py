"""The live part of a static KV cache, as a cache of its own: the decode step reads only that.

A `StaticCache` is allocated for the most rows and positions a decoder may need, and attention reads
every position of every row on each step, masked or not. Video-LLaVA-7B holds 0.5 MB of K/V per
position and row: 32 rows x 4,096 positions are 64 GB read per step, against 14.7 GB of weights, while
a chain on one clip keeps one to four rows live and its last write sits near position 2,500. A view
of the first `rows` rows and `columns` positions reads only that (a view: no copy; the writes land in
the full cache). Both are bucketed (rows to a power of two, positions to `COLUMN_BUCKET`) so that a
step sees few shapes, and both are dynamic dimensions of one compiled graph
(`static_decode.compile_step`). Masked positions add exactly zero to attention, so the answers are
the same token for token (tests/test_cache_views.py, tests/test_static_decode.py,
tests/test_continuous.py).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import StaticCache

COLUMN_BUCKET = 512  # a view's positions are a multiple of this (and at most the cache's length):
# at most 8 widths for Video-LLaVA's 4,096 positions, each recorded once as a CUDA graph per row count


def bucket_columns(used: int, length: int) -> int:
    """Positions a step must see when positions [0, used) are in use, of a cache of `length`."""
    return min(length, -(-used // COLUMN_BUCKET) * COLUMN_BUCKET)


class CacheViews:
    """Views of one initialized `StaticCache`, made once per (rows, columns) and reused."""

    def __init__(self, cache: StaticCache) -> None:
        self.cache = cache
        self._views: dict[tuple[int, int], StaticCache] = {}

    def get(self, rows: int, columns: int) -> StaticCache:
        """The first `rows` rows and `columns` positions of the cache (a view also when that is all of
        it: every step's cache then has the same dynamic dimensions, see `static_decode.compile_step`).
        Its layers share their write position (`cumulative_length`) with the cache's."""
        view = self._views.get((rows, columns))
        if view is None:
            view = copy.copy(self.cache)
            view.layers = [_layer_view(layer, rows, columns) for layer in self.cache.layers]
            self._views[(rows, columns)] = view
        return view


def _layer_view(layer: Any, rows: int, columns: int) -> Any:
    """A copy of a `StaticLayer` whose keys and values are views of the layer's own."""
    view = copy.copy(layer)  # shares cumulative_length: a write through the view moves the cache's
    view.keys = layer.keys[:rows, :, :columns]
    view.values = layer.values[:rows, :, :columns]
    view.batch_size, view.max_cache_len = rows, columns
    # the view's storage is the cache's, whose address never moves: CUDA graphs need not copy it; its
    # rows and columns vary from step to step: one compiled graph serves them all
    for tensor in (view.keys, view.values):
        torch._dynamo.mark_static_address(tensor)
        torch._dynamo.maybe_mark_dynamic(tensor, 0)
        torch._dynamo.maybe_mark_dynamic(tensor, 2)
    return view
