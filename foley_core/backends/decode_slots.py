"""The rows of one continuous-decoding wave (backends/continuous.py) and their state on the device.

A wave's rows share one static KV cache, a row a slot. What a decode step reads of each row is kept
on the device, so that a step needs no host copy of it: the column it writes next (`write_at`), its
mask over its own columns, its next position id, whether it is live, its last logits. Its grammar's
token bitmask is on the host (pinned on CUDA), filled while the GPU runs the step. `seat` puts a
prefilled request in the first free slot; `vacate` frees a slot, whose K/V stay in the cache hidden by
its mask until the next row's own overwrite them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import xgrammar as xgr
from transformers import StaticCache

from v2t_foley.foley_core.backends.cache_views import CacheViews

if TYPE_CHECKING:
    from v2t_foley.foley_core.backends.continuous import Ask
    from v2t_foley.foley_core.backends.solo_prefill import Prefilled


@dataclass
class Row:
    """A request decoding in a slot."""

    ask: Ask
    matcher: xgr.GrammarMatcher | None
    tokens: list[int] = field(default_factory=list)
    entry: int | None = None  # its video prefix's entry in the prefix store, when it reads it there
    own: int = 0  # columns of its row that its prompt holds (what follows a stored video prefix)

    @property
    def at(self) -> int:
        """The column of its row that its next decode step writes (on the device: `write_at`)."""
        return self.own + len(self.tokens)


class DecodeSlots:
    """`len(rows)` slots of `cache`, each `length` columns; `rows` is the wave's list of them (None: a
    free slot), which the caller keeps, to answer its rows when the wave fails. `weight`: the model's
    output embeddings (their dtype, device and vocabulary); `vocab`: the grammars' vocabulary size."""

    def __init__(
        self, rows: list[Row | None], cache: StaticCache, length: int, weight: torch.Tensor, vocab: int
    ) -> None:
        slots, device = len(rows), weight.device
        self.rows, self.cache, self.length = rows, cache, length
        self.write_at = torch.zeros(slots, dtype=torch.long, device=device)  # each row's next column
        # a step reads the live slots' rows and the columns the longest of them wrote
        self.views = CacheViews(cache, self.write_at)
        self.masked = torch.finfo(weight.dtype).min
        self.mask = torch.full((slots, 1, 1, self.length), self.masked, dtype=weight.dtype, device=device)
        self.positions = torch.zeros((slots, 1), dtype=torch.long, device=device)
        self.alive = torch.zeros(slots, dtype=torch.bool, device=device)  # on the device: no host copy a step
        self.logits = torch.zeros((slots, weight.shape[0]), dtype=torch.float32, device=device)
        self.bitmask = xgr.allocate_token_bitmask(slots, vocab)
        if device.type == "cuda":
            self.bitmask = self.bitmask.pin_memory()

    def free(self) -> int:
        """How many slots no row holds."""
        return self.rows.count(None)

    def fed(self) -> list[int]:
        """The live rows' slots, in order."""
        return [k for k, row in enumerate(self.rows) if row is not None]

    def seat(self, row: Row, done: Prefilled, skip: int) -> None:
        """`row` in the first free slot, its first `row.own` columns the K/V of `done` (row `done.row`)
        from column `skip` on: what follows its video prefix when the store holds that prefix. Its next
        position id is its prompt's length (`done.length`), whatever its row holds of it."""
        slot, own = self.rows.index(None), row.own
        for target, source in zip(self.cache.layers, done.kv.layers, strict=True):
            target.keys[slot, :, :own] = source.keys[done.row, :, skip : skip + own]
            target.values[slot, :, :own] = source.values[done.row, :, skip : skip + own]
        self.mask[slot] = self.masked
        self.mask[slot, 0, 0, :own] = 0
        self.rows[slot] = row
        self.positions[slot, 0] = done.length
        self.write_at[slot] = own
        self.alive[slot] = True
        self.logits[slot] = done.logits
        if row.matcher is None:
            self.bitmask[slot] = -1  # every token allowed
        elif not row.matcher.is_terminated():
            row.matcher.fill_next_token_bitmask(self.bitmask, slot)

    def vacate(self, slot: int) -> None:
        """Free `slot`: its row is done."""
        self.rows[slot] = None
        self.alive[slot] = False
        self.mask[slot] = self.masked
        self.write_at[slot] = 0

    def stepped(self) -> None:
        """A decode step fed every live row a token: their next positions and columns move on."""
        self.positions += self.alive[:, None].long()
        self.write_at += self.alive.long()

    def advance_grammars(self, indices: list[int], grammars: xgr.BatchGrammarMatcher) -> None:
        """The constrained rows among those in slots `indices` accept their last token and fill their
        next bitmask together, in xgrammar's threads."""
        constrained = [k for k in indices if self.rows[k].matcher is not None]
        if constrained:
            matchers = [self.rows[k].matcher for k in constrained]
            xgr.BatchGrammarMatcher.batch_accept_token(
                matchers, [self.rows[k].tokens[-1] for k in constrained]
            )
            grammars.batch_fill_next_token_bitmask(matchers, self.bitmask, indices=constrained)
