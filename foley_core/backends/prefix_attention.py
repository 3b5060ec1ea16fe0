"""Decode-step attention over video prefixes held once per video, not once per row.

With a copy of the video prefix in every row, each decode step reads that prefix once per live row:
Video-LLaVA-7B's 2,056 video positions are 1 GB of K/V (0.5 MB a position), so 32 rows asking about
one clip read 33 GB a step for the same numbers, twice the 14.7 GB of weights. Here the continuous
decoder keeps each video's prefix once, in an entry of a `PrefixStore` (backends/prefix_store.py),
and a row's own cache holds only what follows its prefix. A decode step's attention is then two
parts, merged exactly (the log-sum-exp of each part, as in flash-decoding's split-K):

- the prefix part: the rows are grouped by entry (queries gathered into `[entries, group]`, padded),
  so each entry's K/V is read once for all of its rows, by one batched matmul;
- the row part: each row against its own cache columns, under its 4-D additive mask, as before.

The two softmax halves are renormalized against their common maximum, so the result is the softmax
over the concatenated positions: the same attention, another order of summation (tests compare it
with attention over the concatenated K/V, and the decoder's tokens with `generate`'s). Only decode
steps (one query per row) take this path; every other call goes to transformers' SDPA attention
unchanged, so registering it on a model changes nothing else. Models whose language model uses
another attention implementation (flash attention) keep copying the prefix (`enable` says False).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "v2t_foley_shared_prefix"  # the attention implementation's registered name


class PrefixBatch(NamedTuple):
    """What one decode step passes to every layer (`shared_prefix=`); `E` entries read, groups of `G`
    rows each, `R` rows computed."""

    keys: tuple[torch.Tensor, ...]  # per layer: [E, kv heads, P, head dim], the store's first E entries
    values: tuple[torch.Tensor, ...]  # per layer: the same for values
    mask: torch.Tensor  # [E, 1, 1, P] additive: 0 on each entry's prefix positions, the dtype's min past them
    queries: torch.Tensor  # [E * G] long: the row whose query sits at (entry, place); R (a zero query) pads
    groups: torch.Tensor  # [R] long: each row's flat (entry, place) index; any index for rows without one
    has: torch.Tensor  # [R] float: 1 for rows that attend to an entry, 0 for rows that hold all their K/V


def enable(model: Any) -> bool:
    """Route `model`'s language-model attention through `attention` (registered once); False when it
    uses an implementation other than SDPA, which then stays as it is."""
    text = model.config.get_text_config()
    if text._attn_implementation == NAME:
        return True
    if text._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # masks are built as for SDPA
    key = next((k for k in model.config.sub_configs if getattr(model.config, k) is text), None)
    model.set_attn_implementation({key: NAME} if key else NAME)
    return text._attn_implementation == NAME


def attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    shared_prefix: PrefixBatch | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-interface signature; SDPA unless a decode step passes `shared_prefix`."""
    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return prefix_attention(
        query, key, value, attention_mask, shared_prefix, module.layer_idx, kwargs.get("scaling")
    )


def prefix_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    prefix: PrefixBatch,
    layer: int,
    scaling: float | None = None,
) -> tuple[torch.Tensor, None]:
    """Attention of one query per row over [its entry's prefix | its own columns]. `query` [R, H, 1, D];
    `key`/`value` [R, Hkv, C, D] (the row's own columns); `mask` [R, 1, 1, C] additive. Returns the
    output as transformers' attention functions do, [R, 1, H, D]."""
    rows, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    share = heads // kv_heads  # query heads per K/V head (grouped-query attention)
    scaling = dim**-0.5 if scaling is None else scaling
    p_keys, p_values = prefix.keys[layer], prefix.values[layer]
    entries = p_keys.shape[0]
    group = prefix.queries.shape[0] // entries

    # the prefix part, entry by entry: [E, Hkv, share * G, D] queries against the entry's P positions
    padded = torch.cat([query.reshape(rows, heads, dim), query.new_zeros(1, heads, dim)])
    grouped = padded[prefix.queries].view(entries, group, kv_heads, share, dim)
    grouped = grouped.permute(0, 2, 3, 1, 4).reshape(entries, kv_heads, share * group, dim)
    scores = torch.matmul(grouped, p_keys.transpose(-1, -2)).float() * scaling + prefix.mask
    top = scores.amax(-1, keepdim=True)
    weights = torch.exp(scores - top)
    total = weights.sum(-1, keepdim=True)
    out = torch.matmul(weights.to(p_values.dtype), p_values).float()  # [E, Hkv, share * G, D]

    def by_row(x: torch.Tensor) -> torch.Tensor:  # [E, Hkv, share * G, n] -> [R, Hkv, share, n]
        x = x.view(entries, kv_heads, share, group, -1).permute(0, 3, 1, 2, 4)
        return x.reshape(entries * group, kv_heads, share, -1)[prefix.groups]

    has = prefix.has.view(rows, 1, 1, 1)
    p_top, p_total, p_out = by_row(top), by_row(total) * has, by_row(out) * has

    # the row part: each row's own columns
    own = query.view(rows, kv_heads, share, dim)
    r_scores = torch.matmul(own, key.transpose(-1, -2)).float() * scaling + mask  # [R, Hkv, share, C]
    r_top = r_scores.amax(-1, keepdim=True)
    r_weights = torch.exp(r_scores - r_top)
    r_total = r_weights.sum(-1, keepdim=True)
    r_out = torch.matmul(r_weights.to(value.dtype), value).float()

    # merged: both halves scaled to their common maximum; a row without an entry has p_total 0, and
    # its (meaningless) prefix maximum is replaced so that no exp overflows into 0 * inf
    p_top = torch.where(has > 0, p_top, r_top)
    top = torch.maximum(p_top, r_top)
    p_scale, r_scale = torch.exp(p_top - top), torch.exp(r_top - top)
    merged = (p_out * p_scale + r_out * r_scale) / (p_total * p_scale + r_total * r_scale)
    return merged.to(query.dtype).reshape(rows, 1, heads, dim), None
