"""One request prefilled alone, ready to join the continuous decoder's wave (backends/continuous.py).

The vision tower and the prompt's prefill run here. With shared video prefixes a question continues
from its video's prefix instead of prefilling the video again: from the prefix store's entry when a
row reads that video there (backends/prefix_store.py), else from the last video's prefix, kept here
for its next questions until the store takes it (`forget`). A `DynamicCache` copies what it is given,
so neither the entry nor the kept K/V change under a prefill.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from transformers import DynamicCache

from v2t_foley.foley_core.backends.base import Generation, GenerationRequest
from v2t_foley.foley_core.backends.prefix_store import PrefixStore
from v2t_foley.foley_core.backends.video_prefix import video_prefix
from v2t_foley.foley_core.errors import TransientBackendError

if TYPE_CHECKING:
    from v2t_foley.foley_core.backends.continuous import Ask


class Prefilled(NamedTuple):
    """A request prefilled, alone or with others (backends/join_prefill.py), ready to join a wave."""

    length: int  # prompt tokens
    kv: DynamicCache  # their K/V (from `kv_from` on)
    logits: torch.Tensor  # the last position's logits
    video: tuple[Any, torch.Tensor] | None = None  # (frames, prefix ids) when the prompt starts with that
    # video prefix (backends/video_prefix.py), which a row may then read from the prefix store
    entry: int | None = None  # the store's entry holding that prefix, when it was read from there
    # (backends/join_prefill.py; the request is counted among its users)
    row: int = 0  # the row of `kv` that is this request's
    kv_from: int = 0  # the position that `kv`'s column 0 holds (its prefix's length when it was read from
    # the store, whose K/V `kv` then lacks)


class SoloPrefill:
    """Prefills requests one at a time for `llm`'s model (see the module docstring)."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.model = llm.model
        self.decoder = self.model.get_decoder()
        self.head = self.model.get_output_embeddings()
        # (frames, their prefix token ids on the host, its K/V): the last video's prefix
        self._kept: tuple[Any, torch.Tensor, DynamicCache] | None = None
        # videos prefilled (the vision tower and the video's tokens, about 2,000 of them for Video-LLaVA):
        # a prompt's whole prefill, or a video prefix made for sharing; a question that continues from a
        # stored or kept prefix adds none. For benchmarks: a factory's prefill cost per clip
        self.video_prefills = 0

    def forget(self, frames: Any = None) -> None:
        """Drop the kept prefix (only if it is of `frames`, when given)."""
        if frames is None or (self._kept is not None and self._kept[0] is frames):
            self._kept = None

    def __call__(self, ask: Ask, store: PrefixStore | None) -> Prefilled | None:
        """(prompt tokens, their K/V, the last position's logits) of one request alone; None (and the
        ask answered with the error) when it cannot run."""
        if ask.budget < 1:  # as generate with max_new_tokens=0: nothing to write
            ask.answer(
                Generation(text="", new_tokens=0, finished=False, constrained=bool(ask.request.json_schema))
            )
            return None
        try:
            inputs = self.llm.encode([ask.request])
            host_ids = inputs["input_ids"][0]  # compared with kept prefixes without a device sync
            inputs = inputs.to(self.head.weight.device)
            if "pixel_values_videos" in inputs:
                inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.head.weight.dtype)
            ids = inputs["input_ids"]
            if ids.shape[1] + 1 > self.llm.max_positions:
                raise ValueError(
                    f"the prompt and video take {ids.shape[1]} of {self.llm.max_positions} positions"
                )
            ask.budget = min(ask.budget, self.llm.max_positions - ids.shape[1])  # as generate's cap
            prefix = self._shared_prefix(ask.request, inputs, host_ids, store)
            if prefix is None:
                self.video_prefills += 1
                out = self.model(**dict(inputs), use_cache=True, logits_to_keep=1)
                return Prefilled(ids.shape[1], out.cache, out.logits[0, -1].float())
            prefix_ids, kv = prefix
            length = len(prefix_ids)
            positions = torch.arange(length, ids.shape[1], device=ids.device)[None]
            out = self.decoder(input_ids=ids[:, length:], position_ids=positions, cache=kv, use_cache=True)
            logits = self.head(out.last_hidden_state[:, -1])[0].float()
            return Prefilled(ids.shape[1], kv, logits, (ask.request.frames, prefix_ids))
        except Exception as error:  # this request's failure, not the wave's
            if isinstance(error, torch.OutOfMemoryError):  # a retry finds the kept prefix's memory free
                self.forget()
                torch.cuda.empty_cache()
                error = TransientBackendError(f"CUDA out of memory in a prefill: {error}")
            ask.answer(error)
            return None

    def _shared_prefix(
        self, request: GenerationRequest, inputs, ids: torch.Tensor, store: PrefixStore | None
    ) -> tuple[torch.Tensor, DynamicCache] | None:
        """(the prefix ids, a private copy of their K/V) of `request`'s video prefix, computed once per
        video; None without shared prefixes. `ids`: the prompt's token ids on the host."""
        if not self.llm.share_video_prefix:
            return None
        entry = store.find(request.frames, ids) if store is not None else None
        if entry is not None:
            return store.cache_of(entry, self.model.config)
        kept = self._kept
        same = kept is not None and kept[0] is request.frames and len(ids) > len(kept[1])
        if not (same and torch.equal(kept[1], ids[: len(kept[1])])):
            shared = video_prefix(self.model, inputs)
            if shared is None:
                return None
            self.video_prefills += 1
            kept = self._kept = (request.frames, ids[: shared[0]].clone(), shared[1])
        copy = DynamicCache(config=self.model.config)
        for k, layer in enumerate(kept[2].layers):
            copy.update(layer.keys, layer.values, k)
        return kept[1], copy
