"""A check of the prefix store's attention on the model's own device and dtype, before a decoder uses it.

The store's attention (backends/prefix_attention.py) calls fused attention kernels through their ATen
ops, below SDPA's dispatcher, which would otherwise check a call and pick a kernel that takes it. A
GPU, a dtype or a torch version whose kernel refuses the call (an alignment, a dtype, a kernel that
was not built) would fail every decode step, and with them every video of a build. So a decoder first
runs each way of the attention once, on small random tensors of the model's heads, head size, device
and dtype, shaped as a decode step and a join prefill are (rows grouped over entries, a row without
an entry, masked prefix positions, grouped-query heads), and compares the result with attention over
each row's whole sequence in float32 on the CPU. The decoder then takes the first way that passes:
fused kernels, small ops, or no store at all (each row a copy of its prefix), and logs why.

The check is eager: a failure only the compiled step shows is caught where it happens instead
(`step_failed`): the way is not used again, and the questions of that forward fail with a transient
error, so that the step's task retries them, then through the next way (or copies).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from v2t_foley.foley_core.backends import prefix_attention
from v2t_foley.foley_core.backends.prefix_attention import PrefixBatch
from v2t_foley.foley_core.errors import TransientBackendError

log = logging.getLogger(__name__)

# the largest difference from the float32 reference a way may show: float32's rounding, or bf16's
# (8 bits of mantissa: about 0.4% of each product, over outputs that are averages of N(0, 1) values);
# a kernel misread (the wrong log-sum-exp, a padded query, a mask off by a row) is off by 0.1 or more
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 4e-2}
PREFIX, OWN = 128, 64  # an entry's positions and a row's own columns: multiples of the decoder's buckets


NAMES = {True: "fused kernels", False: "small ops"}  # the ways, by `PrefixBatch.kernels`


def failed_ways(model: Any) -> dict[bool, str]:
    """Why each way of the store's attention fails on `model`'s device and dtype (True: fused kernels,
    False: small ops; a way that passes is absent), each logged: a few small calls, once a decoder. A
    check that cannot run at all (a config it cannot read) fails both."""
    try:
        text = model.config.get_text_config()
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        head = model.get_output_embeddings().weight
        whys = {way: check_attention(head.device, head.dtype, heads, kv_heads, dim, way) for way in NAMES}
    except Exception as error:
        whys = dict.fromkeys(NAMES, f"the check could not run: {type(error).__name__}: {error}")
    for way, why in whys.items():
        if why is not None:
            log.warning("the prefix store's attention as %s failed its check (%s)", NAMES[way], why)
    return {way: why for way, why in whys.items() if why is not None}


def way(kernels: bool, failed: dict[bool, str]) -> bool | None:
    """The way to run the store's attention: fused kernels (True) when asked for (`kernels`) and not
    `failed`, else small ops (False) when not failed, else None (copies: no store)."""
    return next((way for way in ((True, False) if kernels else (False,)) if way not in failed), None)


def step_failed(failed: dict[bool, str], used: bool, error: Exception) -> TransientBackendError | None:
    """A forward through the store's attention (a decode step, a join prefill), run the `used` way,
    raised `error`: that way is not used again (a failure only the compiled step shows, which the eager
    check cannot). Returns what its questions fail with: transient, since asked again they go another
    way (a way that fails for no fault of its own costs a retry, and the ways run out after two). None
    for out of memory, no fault of the attention's."""
    if isinstance(error, torch.OutOfMemoryError):
        return None
    first = str(error).splitlines()[0] if str(error) else ""
    failed[used] = f"a forward through it failed: {type(error).__name__}: {first}"
    log.warning("the prefix store's attention as %s: %s; not used again", NAMES[used], failed[used])
    why = f"the prefix store's attention as {NAMES[used]}: {failed[used]}"
    retry = TransientBackendError(f"{why}; the decoder does not use it again")
    retry.__cause__ = error
    return retry


def check_attention(
    device: torch.device, dtype: torch.dtype, heads: int, kv_heads: int, dim: int, kernels: bool
) -> str | None:
    """Why the store's attention run one way (`kernels`: fused kernels, else small ops) fails on
    `device` in `dtype` or gives other numbers than attention over the whole sequences; None when it
    gives the same, for a decode step and a join prefill alike."""
    for queries, call in ((1, "a decode step"), (3, "a join prefill")):
        try:
            got, expected = _attend(device, dtype, heads, kv_heads, dim, queries, kernels)
        except Exception as error:  # whatever the kernel raises (RuntimeError, NotImplementedError)
            return f"{type(error).__name__} in {call}: {str(error).splitlines()[0] if str(error) else ''}"
        if not torch.isfinite(got).all():
            return f"non-finite outputs ({call})"
        off = (got - expected).abs().max().item()
        if off > TOLERANCE.get(dtype, 4e-2):
            return f"outputs differ from attention over the whole sequences by {off:.3g} ({call})"
    return None


def _attend(
    device: torch.device, dtype: torch.dtype, heads: int, kv_heads: int, dim: int, queries: int, kernels: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the way's output, back on the CPU in float32; the reference) for 3 rows: two reading entry 0
    (valid up to 100 positions), one holding all its K/V; entry 1 (64 valid) read by nobody, as in a
    step that reads at least 2 entries; `queries` tokens a row, causal over each row's own columns."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    rows, entries, valid = 3, 2, (100, 64)
    masked = torch.finfo(dtype).min
    prefix_keys, prefix_values = randn(entries, kv_heads, PREFIX, dim), randn(entries, kv_heads, PREFIX, dim)
    prefix_mask = torch.full((entries, 1, 1, PREFIX), masked)
    for entry, length in enumerate(valid):
        prefix_mask[entry, ..., :length] = 0
    query = randn(rows, heads, queries, dim)
    keys, values = randn(rows, kv_heads, OWN, dim), randn(rows, kv_heads, OWN, dim)
    column, place = torch.arange(OWN), torch.arange(queries)[:, None] + 10 - queries  # rows hold 10 columns
    mask = torch.zeros(queries, OWN).masked_fill(column > place, masked).expand(rows, 1, -1, -1)
    batch = PrefixBatch(
        keys=(prefix_keys.to(device, dtype),),
        values=(prefix_values.to(device, dtype),),
        mask=prefix_mask.to(device, dtype),
        queries=torch.tensor([0, 1, rows, rows], device=device),  # entry 0: rows 0 and 1; entry 1: padding
        groups=torch.tensor([0, 1, 0], device=device),
        has=torch.tensor([1.0, 1.0, 0.0], device=device),
        kernels=kernels,
    )
    got, _ = prefix_attention.prefix_attention(
        query.to(device, dtype),
        keys.to(device, dtype),
        values.to(device, dtype),
        mask.to(device, dtype).contiguous(),
        batch,
        0,
    )
    # the reference: each row's [prefix | own columns] in float32, from the same (rounded) inputs
    share = heads // kv_heads
    expected = []
    for row in range(rows):
        k, v, m = keys[row], values[row], mask[row, 0]
        if row < 2:
            k = torch.cat([prefix_keys[0], k], dim=1)
            v = torch.cat([prefix_values[0], v], dim=1)
            m = torch.cat([prefix_mask[0, 0].expand(queries, -1), m], dim=1)
        k, v = _rounded(k, dtype).repeat_interleave(share, 0), _rounded(v, dtype).repeat_interleave(share, 0)
        weights = torch.softmax(_rounded(query[row], dtype) @ k.transpose(-1, -2) * dim**-0.5 + m, dim=-1)
        expected.append((weights @ v).transpose(0, 1))
    return got.float().cpu(), torch.stack(expected)


def _rounded(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`x` as the way sees it (rounded to `dtype`), in float32."""
    return x.to(dtype).float()
