"""Video prefixes' K/V, held once per video for the continuous decoder's rows (prefix_attention.py).

An entry holds one video prefix (Video-LLaVA's template start and video tokens: backends/video_prefix.py)
for as long as a live row attends to it, and after that until its place is needed, so that the next
question about the same video finds it. The continuous decoder makes a store of a few entries and
doubles it (`grown`) while the GPU has room, up to its slots: with as many entries as slots a joining
request always finds its video's entry or a free one. Free entries are taken lowest first, so that a
step reads the fewest entries: `batch` reads entries up to the highest one in use, rounded up to a
power of two and at least 2. Prefix ids are kept on the host: comparing them costs no device sync.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from v2t_foley.foley_core.backends.prefix_attention import PrefixBatch
from v2t_foley.foley_core.backends.static_decode import kv_shape

PREFIX_BUCKET = 64  # an entry's positions: the first prefix's length rounded up to this
STORE_ENTRIES = 4  # a new store's entries (1 GB each for Video-LLaVA-7B); it doubles, up to the decoder's
# slots, when a video finds every entry read: the store grows with the videos decoded side by side


def bucket_power(n: int) -> int:
    """`n` rounded up to a power of two, and at least 2: dynamo compiles a size of 1 apart."""
    return max(2, 1 << max(n - 1, 0).bit_length())


@dataclass
class _Held:
    frames: Any  # the request's frames object: the same object is the same video
    ids: torch.Tensor  # the prefix's token ids (the template start and the video tokens), on the host
    users: int = 0  # live rows attending to it


class PrefixStore:
    """`entries` video prefixes of up to `length` positions each, for `layers` attention layers of
    `heads` K/V heads of `head_dim`."""

    def __init__(
        self,
        *,
        layers: int,
        heads: int,
        head_dim: int,
        entries: int,
        length: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (entries, heads, length, head_dim)
        self.length = length
        self.keys = tuple(torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers))
        self.values = tuple(torch.zeros_like(k) for k in self.keys)
        self.masked = torch.finfo(dtype).min
        self.mask = torch.full((entries, 1, 1, length), self.masked, dtype=dtype, device=device)
        self.held: list[_Held | None] = [None] * entries
        self._views: dict[int, tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor]] = {}
        # the last batch made, by its (entries, kernels, opaque): a step like the last reuses it
        self._last: tuple[tuple[tuple[int | None, ...], bool, bool], PrefixBatch] | None = None

    @classmethod
    def for_model(cls, model: Any, entries: int, length: int) -> PrefixStore:
        """A store shaped for `model`'s language model, in its dtype and on its device."""
        layers, heads, head_dim = kv_shape(model)
        weight = model.get_output_embeddings().weight
        return cls(
            layers=layers,
            heads=heads,
            head_dim=head_dim,
            entries=entries,
            length=length,
            dtype=weight.dtype,
            device=weight.device,
        )

    @classmethod
    def for_prefix(cls, model: Any, slots: int, prefix: int) -> PrefixStore:
        """A new store for a decoder of `slots` rows whose first prefix has `prefix` tokens: up to
        STORE_ENTRIES entries (at least 2: `batch` reads 2), each PREFIX_BUCKET-rounded that long."""
        length = -(-prefix // PREFIX_BUCKET) * PREFIX_BUCKET
        return cls.for_model(model, min(max(2, slots), STORE_ENTRIES), length)

    def serves(self, prefix: int) -> bool:
        """Whether this store is the one for a prefix of `prefix` tokens: long enough, or read by a
        live row (then kept: that prefix is copied into its row instead). Else a new one replaces it."""
        return self.length >= prefix or self.in_use()

    def with_room_for(
        self, frames: Any, prefix_ids: torch.Tensor, slots: int, has_room: Callable[[int], bool]
    ) -> PrefixStore | None:
        """A store that can `place` this prefix now: this one, or it `grown` to twice its entries (up
        to `slots`) when every entry is read and `has_room(bytes)` for the larger one; None when
        neither (the request then waits for the next wave)."""
        if self.can_place(frames, prefix_ids):
            return self
        entries = min(max(2, slots), 2 * self.entries)
        if entries <= self.entries or len(prefix_ids) > self.length:
            return None
        if not has_room(self.nbytes() // self.entries * entries):
            return None
        return self.grown(entries)

    @property
    def entries(self) -> int:
        return len(self.held)

    def find(self, frames: Any, ids: torch.Tensor) -> int | None:
        """The entry holding the prefix of these frames whose ids start `ids`, if any."""
        ids = ids.cpu()  # held on the host already: no copy then
        for entry, held in enumerate(self.held):
            if (
                held is not None
                and held.frames is frames
                and len(ids) > len(held.ids)
                and torch.equal(held.ids, ids[: len(held.ids)])
            ):
                return entry
        return None

    def holds(self, frames: Any) -> bool:
        """Whether an entry holds a prefix of these frames (`find` says which, for a prompt's ids)."""
        return any(held is not None and held.frames is frames for held in self.held)

    def can_place(self, frames: Any, prefix_ids: torch.Tensor) -> bool:
        """Whether `place` would give these frames an entry now."""
        prefix_ids = prefix_ids.cpu()
        if len(prefix_ids) > self.length:
            return False
        return any(
            held is None or held.users == 0 or (held.frames is frames and torch.equal(held.ids, prefix_ids))
            for held in self.held
        )

    def place(self, frames: Any, prefix_ids: torch.Tensor, kv: DynamicCache) -> int | None:
        """A user of the entry holding this prefix: the one that holds it already, or the lowest free
        one, into which the first `len(prefix_ids)` positions of `kv` are copied. None when it cannot."""
        prefix_ids = prefix_ids.cpu()
        if len(prefix_ids) > self.length:
            return None
        for entry, held in enumerate(self.held):
            if held is not None and held.frames is frames and torch.equal(held.ids, prefix_ids):
                held.users += 1
                return entry
        free = next((e for e, held in enumerate(self.held) if held is None or held.users == 0), None)
        if free is None:
            return None
        size = len(prefix_ids)
        for target_k, target_v, source in zip(self.keys, self.values, kv.layers, strict=True):
            target_k[free, :, :size] = source.keys[0, :, :size]
            target_v[free, :, :size] = source.values[0, :, :size]
        self.mask[free] = self.masked
        self.mask[free, 0, 0, :size] = 0
        self.held[free] = _Held(frames, prefix_ids, users=1)
        return free

    def use(self, entry: int) -> None:
        """One more user of `entry`, which holds a prefix already (`find`): until it `leave`s, no other
        prefix takes the entry's place."""
        self.held[entry].users += 1

    def in_use(self) -> bool:
        """Whether a live row reads any entry."""
        return any(held is not None and held.users for held in self.held)

    def grown(self, entries: int) -> PrefixStore:
        """A store of `entries` entries holding this one's prefixes at the same entries (and readers)."""
        keys = self.keys[0]
        new = PrefixStore(
            layers=len(self.keys),
            heads=keys.shape[1],
            head_dim=keys.shape[-1],
            entries=entries,
            length=self.length,
            dtype=keys.dtype,
            device=keys.device,
        )
        kept = self.entries
        for target, source in zip((*new.keys, *new.values), (*self.keys, *self.values), strict=True):
            target[:kept] = source
        new.mask[:kept] = self.mask
        new.held[:kept] = self.held
        return new

    def leave(self, entry: int) -> None:
        """One user of `entry` is done (the prefix stays until its place is needed)."""
        held = self.held[entry]
        if held is not None and held.users > 0:
            held.users -= 1

    def reset_users(self) -> None:
        """No row attends to any entry (a new wave); the prefixes stay for their next questions."""
        for held in self.held:
            if held is not None:
                held.users = 0

    def cache_of(self, entry: int, config: Any) -> tuple[torch.Tensor, DynamicCache]:
        """(the entry's prefix ids, a private copy of its K/V as a batch-1 cache), for a prefill (a
        `DynamicCache` copies what it is given: the entry may be overwritten later)."""
        held = self.held[entry]
        size = len(held.ids)
        cache = DynamicCache(config=config)
        for layer, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            part = slice(entry, entry + 1), slice(None), slice(0, size)
            cache.update(keys[part], values[part], layer)
        return held.ids, cache

    def batch(self, entries: list[int | None], kernels: bool = True, opaque: bool = False) -> PrefixBatch:
        """What a decode step over rows with these entries (None: the row holds all its K/V) reads, and
        how its attention runs (`kernels`, `opaque`: see PrefixBatch)."""
        key = (tuple(entries), kernels, opaque)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        used = [e for e in entries if e is not None]
        read = min(self.entries, bucket_power(max(used, default=0) + 1))
        group = bucket_power(max((used.count(e) for e in set(used)), default=1))
        rows = len(entries)
        queries = [rows] * (read * group)  # row `rows` is the zero query that pads a group
        groups, filled = [0] * rows, [0] * read
        for row, entry in enumerate(entries):
            if entry is not None:
                groups[row] = entry * group + filled[entry]
                queries[groups[row]] = row
                filled[entry] += 1
        keys, values, mask = self._view(read)
        batch = PrefixBatch(
            keys=keys,
            values=values,
            mask=mask,
            queries=self._to_device(queries, torch.long),
            groups=self._to_device(groups, torch.long),
            has=self._to_device([float(e is not None) for e in entries], torch.float32),
            kernels=kernels,
            opaque=opaque,
        )
        for tensor in (batch.queries, batch.groups, batch.has):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        self._last = (key, batch)
        return batch

    def _to_device(self, values: list, dtype: torch.dtype) -> torch.Tensor:
        """`values` on the store's device without waiting for it: from pinned memory, asynchronously
        (a copy from ordinary memory would wait for the step already queued)."""
        device = self.mask.device
        host = torch.tensor(values, dtype=dtype, pin_memory=device.type == "cuda")
        return host.to(device, non_blocking=True)

    def _view(self, read: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor]:
        """The first `read` entries of every layer, as views of the store's memory (whose address never
        moves: CUDA graphs need not copy it), their count a dynamic dimension of the compiled step."""
        views = self._views.get(read)
        if views is None:
            views = (
                tuple(k[:read] for k in self.keys),
                tuple(v[:read] for v in self.values),
                self.mask[:read],
            )
            for tensor in (*views[0], *views[1], views[2]):
                torch._dynamo.mark_static_address(tensor)
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
            self._views[read] = views
        return views

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))
