"""Decode-step attention over video prefixes held once per video, not once per row.

With a copy of the video prefix in every row, each decode step reads that prefix once per live row:
Video-LLaVA-7B's 2,056 video positions are 1 GB of K/V (0.5 MB a position), so 32 rows asking about
one clip read 33 GB a step for the same numbers, twice the 14.7 GB of weights. Here the continuous
decoder keeps each video's prefix once, in an entry of a `PrefixStore` (backends/prefix_store.py),
and a row's own cache holds only what follows its prefix. A decode step's attention is then two
parts, merged exactly (the log-sum-exp of each part, as in flash-decoding's split-K):

- the prefix part: the rows are grouped by entry (queries gathered into `[entries, group]`, padded),
  so each entry's K/V is read once for all of its rows, by one batched call;
- the row part: each row against its own cache columns, under its 4-D additive mask, as before.

The two softmax halves are renormalized against their common maximum, so the result is the softmax
over the concatenated positions: the same attention, another order of summation (tests compare it
with attention over the concatenated K/V, and the decoder's logits and tokens with full prompts').

Each part runs in one of two ways (`PrefixBatch.kernels`, the decoder's choice: backends/attention_check.py):

- kernels (the default): each part is one call of PyTorch's own fused attention kernel, the one SDPA
  runs for a masked decode step (memory-efficient attention on CUDA, flash attention on the CPU), which
  also returns each query's log-sum-exp; the parts merge on those. On the H100 that kernel read the
  copies' K/V at 2.4-3.0 TB/s, where the small ops below read the store at 0.6-2.1
  (bench/results/README.md), and the compiler sees two operators a layer, not ~40;
- small ops: matmuls and a softmax written out, scores and sums in float32 as SDPA keeps them (on
  CUDA in bf16/fp16 the products come out of the matmul in float32, `bmm(..., out_dtype=float32)`, not
  rounded to bf16 first as transformers' eager attention rounds them). The reference, and the
  fallback on devices with neither kernel.

Only calls that pass `shared_prefix` take this path: decode steps (one query per row) and the join
prefill of questions about stored prefixes (a question's tokens per row, backends/join_prefill.py);
every other call goes to transformers' SDPA attention unchanged. Models whose language model uses
another attention implementation (flash attention) keep copying the prefix (`enable` says False).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "v2t_foley_shared_prefix"  # the attention implementation's registered name
# whether bf16 matmuls may write float32 (cuBLAS does it from compute capability 8.0 on); set outside
# the compiled step (`use_float32_products`), read in it as a constant
_BF16_TO_FLOAT32 = False


class PrefixBatch(NamedTuple):
    """What one decode step (or join prefill) passes to every layer (`shared_prefix=`); `E` entries
    read, groups of `G` rows each, `R` rows computed."""

    keys: tuple[torch.Tensor, ...]  # per layer: [E, kv heads, P, head dim], the store's first E entries
    values: tuple[torch.Tensor, ...]  # per layer: the same for values
    mask: torch.Tensor  # [E, 1, 1, P] additive: 0 on each entry's prefix positions, the dtype's min past them
    queries: torch.Tensor  # [E * G] long: the row whose query sits at (entry, place); R (a zero query) pads
    groups: torch.Tensor  # [R] long: each row's flat (entry, place) index; any index for rows without one
    has: torch.Tensor  # [R] float: 1 for rows that attend to an entry, 0 for rows that hold all their K/V
    # each part as one fused attention kernel (True) or as small ops (False); read while dynamo traces,
    # which guards on it (switching it compiles the step anew). A field, not a process-wide switch: each
    # decoder runs the way that passed its own check
    kernels: bool = True
    # a compiled step sees the attention as one opaque operator a layer (see `attention`), not its ops
    opaque: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """(E, E * G): what sets the step's shapes besides its rows and columns."""
        return self.keys[0].shape[0], self.queries.shape[0]


def enable(model: Any) -> bool:
    """Route `model`'s language-model attention through `attention` (registered once); False when it
    uses an implementation other than SDPA, which then stays as it is. The switch lasts for the
    model's life: its other calls (prefills, `generate`, training) still run SDPA, through `attention`
    (a decode step compiled before the switch is compiled once more)."""
    text = model.config.get_text_config()
    use_float32_products(next(model.parameters()).device)
    if text._attn_implementation == NAME:
        return True
    if text._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # masks are built as for SDPA
    key = next((k for k in model.config.sub_configs if getattr(model.config, k) is text), None)
    model.set_attn_implementation({key: NAME} if key else NAME)
    return text._attn_implementation == NAME


def use_float32_products(device: torch.device) -> None:
    """Let bf16 matmuls on `device` write float32 when its GPU can (compute capability 8.0 or newer:
    cuBLAS refuses bf16 -> float32 before that, where the scores are rounded to bf16 first)."""
    global _BF16_TO_FLOAT32
    _BF16_TO_FLOAT32 = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    shared_prefix: PrefixBatch | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-interface signature; SDPA unless a decode step passes `shared_prefix`.

    With `shared_prefix.opaque`, a compiled step sees the attention as one operator a layer
    (`_prefix_attention_op`), not as its ~40 small ops. The compiler then sees one node a layer, as
    for SDPA, with no symbolic sizes of entries and groups inside: on the CPU the step's first call
    took about the copies' time (8 layers, inductor: 75.6 s -> 50.6 s, copies 46.1 s;
    bench/compile_time.py), where the H100 spent 144-163 s on the 7B step. Inside the operator its
    ops (the fused kernels, or the small ops) run as they are called, not fused with their neighbours
    by the compiler; whether that costs decode speed is for the GPU to say (bench/gpu_foley.py
    measures both)."""
    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if kwargs.get("sliding_window") or kwargs.get("softcap"):  # not in Video-LLaVA's Llama: not done
        raise NotImplementedError("prefix attention supports neither sliding windows nor softcapping")
    if shared_prefix.opaque and attention_mask is not None and torch.compiler.is_compiling():
        prefix, layer = shared_prefix, module.layer_idx
        scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
        out = _prefix_attention_op(
            query,
            key,
            value,
            attention_mask,
            prefix.keys[layer],
            prefix.values[layer],
            prefix.mask,
            prefix.queries,
            prefix.groups,
            prefix.has,
            float(scaling),
            prefix.kernels,
        )
        return out, None
    return prefix_attention(
        query, key, value, attention_mask, shared_prefix, module.layer_idx, kwargs.get("scaling")
    )


@torch.library.custom_op("v2t_foley::prefix_attention", mutates_args=())
def _prefix_attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    prefix_keys: torch.Tensor,
    prefix_values: torch.Tensor,
    prefix_mask: torch.Tensor,
    queries: torch.Tensor,
    groups: torch.Tensor,
    has: torch.Tensor,
    scaling: float,
    kernels: bool,
) -> torch.Tensor:
    """`prefix_attention` for one layer's store entries, as one operator (see `attention`)."""
    prefix = PrefixBatch((prefix_keys,), (prefix_values,), prefix_mask, queries, groups, has, kernels)
    return prefix_attention(query, key, value, mask, prefix, 0, scaling)[0].contiguous()


@_prefix_attention_op.register_fake
def _(query: torch.Tensor, *_args: object) -> torch.Tensor:
    rows, heads, length, dim = query.shape
    return query.new_empty(rows, length, heads, dim)


def prefix_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    prefix: PrefixBatch,
    layer: int,
    scaling: float | None = None,
) -> tuple[torch.Tensor, None]:
    """Attention of each row's `T` queries over [its entry's prefix | its own columns]: `T` is 1 in a
    decode step, a question's tokens in a join prefill (backends/join_prefill.py). `query` [R, H, T, D];
    `key`/`value` [R, Hkv, C, D] (the row's own columns); `mask` [R, 1, T, C] additive (a query sees
    all of its entry's prefix). Each part runs as one fused kernel or as small ops, as `prefix.kernels`
    says. Returns the output as transformers' attention functions do, [R, T, H, D]."""
    rows, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    share = heads // kv_heads  # query heads per K/V head (grouped-query attention)
    scaling = dim**-0.5 if scaling is None else scaling
    p_keys, p_values = prefix.keys[layer], prefix.values[layer]
    entries = p_keys.shape[0]
    group = prefix.queries.shape[0] // entries

    # the prefix part, entry by entry: [E, Hkv, share * G * T, D] queries against the entry's P positions
    padded = torch.cat([query.transpose(1, 2), query.new_zeros(1, length, heads, dim)])  # [R + 1, T, H, D]
    grouped = padded[prefix.queries].view(entries, group, length, kv_heads, share, dim)
    grouped = grouped.permute(0, 3, 4, 1, 2, 5).reshape(entries, kv_heads, share * group * length, dim)
    # the row part's queries and mask: each row's own columns, a mask row per query (for every head
    # that shares a K/V head)
    own = query.reshape(rows, kv_heads, share * length, dim)
    own_mask = mask[:, :, None].expand(rows, 1, share, length, mask.shape[-1])
    own_mask = own_mask.reshape(rows, 1, share * length, mask.shape[-1])

    def by_row(x: torch.Tensor) -> torch.Tensor:  # [E, Hkv, share * G * T, n] -> [R, Hkv, share, T, n]
        x = x.reshape(entries, kv_heads, share, group, length, -1).permute(0, 3, 1, 2, 4, 5)
        return x.reshape(entries * group, kv_heads, share, length, -1)[prefix.groups]

    def out(merged: torch.Tensor) -> torch.Tensor:  # [R, Hkv, share, T, D] -> [R, T, H, D]
        return merged.to(query.dtype).permute(0, 3, 1, 2, 4).reshape(rows, length, heads, dim)

    def by_query(x: torch.Tensor) -> torch.Tensor:  # [R, Hkv, share * T, n] -> [R, Hkv, share, T, n]
        return x.reshape(rows, kv_heads, share, length, -1)

    has = prefix.has.view(rows, 1, 1, 1, 1)
    if prefix.kernels and kernels_on(query.device):
        p_out, p_lse = _fused(grouped, p_keys, p_values, prefix.mask, scaling)
        r_out, r_lse = _fused(own, key, value, own_mask, scaling)
        # a row without an entry takes nothing from the prefix part: its log-sum-exp is -inf there
        p_lse = torch.where(has > 0, by_row(p_lse[..., None]), float("-inf"))
        r_lse = by_query(r_lse[..., None])
        top = torch.maximum(p_lse, r_lse)  # finite: every query sees at least one of its own columns
        p_weight, r_weight = torch.exp(p_lse - top), torch.exp(r_lse - top)
        both = by_row(p_out).float() * p_weight + by_query(r_out).float() * r_weight
        merged = both / (p_weight + r_weight)
        return out(merged), None

    scores = _product(grouped, p_keys.transpose(-1, -2)) * scaling + prefix.mask
    top = scores.amax(-1, keepdim=True)
    weights = torch.exp(scores - top)
    total = weights.sum(-1, keepdim=True)
    p_out = _product(weights.to(p_values.dtype), p_values)  # [E, Hkv, share * G * T, D]
    p_top, p_total, p_out = by_row(top), by_row(total) * has, by_row(p_out) * has

    # the row part: each row's own columns
    r_scores = _product(own, key.transpose(-1, -2)) * scaling + own_mask  # [R, Hkv, share * T, C]
    r_top = r_scores.amax(-1, keepdim=True)
    r_weights = torch.exp(r_scores - r_top)
    r_total = by_query(r_weights.sum(-1, keepdim=True))
    r_out, r_top = by_query(_product(r_weights.to(value.dtype), value)), by_query(r_top)

    # merged: both halves scaled to their common maximum; a row without an entry has p_total 0, and
    # its (meaningless) prefix maximum is replaced so that no exp overflows into 0 * inf
    p_top = torch.where(has > 0, p_top, r_top)
    top = torch.maximum(p_top, r_top)
    p_scale, r_scale = torch.exp(p_top - top), torch.exp(r_top - top)
    merged = (p_out * p_scale + r_out * r_scale) / (p_total * p_scale + r_total * r_scale)
    return out(merged), None


def kernels_on(device: torch.device) -> bool:
    """Whether `device` has a fused attention kernel that returns its log-sum-exp (CUDA, the CPU)."""
    return device.type in ("cuda", "cpu")


def _fused(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(query @ key^T * scaling + bias) @ value, its log-sum-exp in float32): [B, H, M, D] and
    [B, H, M], from one call of the fused kernel SDPA would pick for a masked step. `bias` is additive,
    broadcast over heads and queries, its rows aligned as the kernel needs (the decoder's masks are
    multiples of 64 columns)."""
    batch, heads, queries, _ = query.shape
    if query.device.type != "cpu":  # CUDA (and meta tensors, whose shapes the tests check)
        bias = bias.expand(batch, heads, queries, key.shape[-2])
        out, lse, _seed, _offset = torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, bias, True, scale=scaling
        )
        return out, lse[..., :queries]  # its log-sum-exp is padded to a multiple of 32 queries
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, attn_mask=bias, scale=scaling
    )


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a @ b` over 4-D batches, in float32. On CUDA in half precision the matmul itself writes float32
    (what it accumulates), where `matmul(...).float()` would round every score to bf16 first (about
    4x SDPA's error at 2,056 positions)."""
    if a.is_cuda and (a.dtype == torch.float16 or (a.dtype == torch.bfloat16 and _BF16_TO_FLOAT32)):
        return batched_product(a, b, out_dtype=torch.float32)
    return torch.matmul(a, b).float()


def batched_product(a: torch.Tensor, b: torch.Tensor, **options: Any) -> torch.Tensor:
    """`a @ b` for [n, m, x, y] @ [n, m, y, z] through one `bmm` (which takes `out_dtype` on CUDA). The
    first two dimensions merge into a view for every operand here (a store entry's keys, transposed, or
    a cache view's rows), so nothing is copied."""
    product = torch.bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), **options)
    return product.view(*a.shape[:-1], b.shape[-1])
