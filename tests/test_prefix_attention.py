"""Attention over video prefixes held once per video (backends/prefix_attention.py,
backends/prefix_store.py): the same numbers as attention over each row's [prefix | own columns], for
rows grouped unevenly over entries, rows with no entry, padded groups and grouped-query heads, each part
run as one fused attention kernel (the default) and as small ops. The continuous decoder's tokens
against `generate`'s are in tests/test_continuous.py."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from v2t_foley.foley_core.backends import prefix_attention
from v2t_foley.foley_core.backends.prefix_store import PrefixStore


def tiny_llama(kv_heads: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        vocab_size=64,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


def prefix_cache(model, length: int, seed: int) -> DynamicCache:
    """A batch-1 cache of `length` random positions, as a prefill would leave it."""
    generator = torch.Generator().manual_seed(seed)
    text = model.config
    cache = DynamicCache(config=text)
    head_dim = text.hidden_size // text.num_attention_heads
    for layer in range(text.num_hidden_layers):
        shape = (1, text.num_key_value_heads, length, head_dim)
        cache.update(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator), layer)
    return cache


@pytest.mark.parametrize("queries", [1, 3], ids=["decode-step", "join-prefill"])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_split_attention_equals_attention_over_each_rows_whole_sequence(kv_heads, queries, kernels):
    """One query a row (a decode step), and three (a join prefill: causal over the row's own columns,
    the last three of which are its queries')."""
    model = tiny_llama(kv_heads)
    lengths = {"a": 7, "b": 5, "c": 9}  # three videos' prefixes, of different lengths
    store = PrefixStore.for_model(model, entries=6, length=12)
    caches = {name: prefix_cache(model, n, seed) for seed, (name, n) in enumerate(lengths.items())}
    frames = {name: object() for name in lengths}
    ids = {name: torch.arange(n) + 100 * k for k, (name, n) in enumerate(lengths.items())}
    entry = {name: store.place(frames[name], ids[name], caches[name]) for name in lengths}
    assert sorted(entry.values()) == [0, 1, 2]  # the lowest free entries, one per video
    assert store.place(frames["a"], ids["a"], caches["a"]) == entry["a"]  # a second reader: same entry
    rows = ["a", "b", "a", None, "a", "c"]  # uneven groups (a: 3 rows), and a row that holds all its K/V
    batch = store.batch([entry[r] if r else None for r in rows], kernels=kernels)
    assert batch.keys[0].shape[0] == 4 and batch.queries.shape[0] == 4 * 4  # 3 entries read as 4, groups of 4

    generator = torch.Generator().manual_seed(7)
    heads, dim, own = 4, 8, 6
    query = torch.randn(len(rows), heads, queries, dim, generator=generator)
    keys = torch.randn(len(rows), kv_heads, own, dim, generator=generator)
    values = torch.randn(len(rows), kv_heads, own, dim, generator=generator)
    column, place = torch.arange(own), torch.arange(queries)[:, None] + own - queries  # a query's own column
    seen = (column >= 2) & (column <= place)  # each row's first own columns hidden; causal
    mask = (
        torch.zeros(queries, own)
        .masked_fill(~seen, torch.finfo(torch.float32).min)
        .expand(len(rows), 1, -1, -1)
    )
    layer = 1
    got, _ = prefix_attention.prefix_attention(query, keys, values, mask, batch, layer)

    share = heads // kv_heads
    for r, name in enumerate(rows):
        k, v, m = keys[r], values[r], mask[r, 0]
        if name is not None:
            k = torch.cat([caches[name].layers[layer].keys[0], k], dim=1)
            v = torch.cat([caches[name].layers[layer].values[0], v], dim=1)
            m = torch.cat([torch.zeros(queries, lengths[name]), m], dim=1)
        k, v = k.repeat_interleave(share, 0), v.repeat_interleave(share, 0)
        weights = torch.softmax(query[r] @ k.transpose(-1, -2) * dim**-0.5 + m, dim=-1)
        expected = (weights @ v).transpose(0, 1)  # [queries, heads, dim], as the function lays it out
        torch.testing.assert_close(got[r], expected, rtol=1e-5, atol=1e-5)


def test_an_entry_is_kept_for_its_next_question_and_reused_only_when_free():
    model = tiny_llama(4)
    store = PrefixStore.for_model(model, entries=2, length=8)
    video, other, third = object(), object(), object()
    ids = torch.arange(5)
    first = store.place(video, ids, prefix_cache(model, 5, 0))
    store.place(other, ids, prefix_cache(model, 5, 1))
    assert store.find(video, torch.arange(9)) == first  # a longer prompt that starts with the prefix
    assert store.find(video, torch.arange(5)) is None  # no question after it: nothing to continue
    assert not store.can_place(third, ids)  # both entries are read by live rows
    store.leave(first)
    assert store.find(video, torch.arange(9)) == first  # kept after its last reader left
    assert store.place(third, ids, prefix_cache(model, 5, 2)) == first  # until its place is needed
    assert store.find(video, torch.arange(9)) is None
    assert not store.can_place(object(), torch.arange(9))  # longer than an entry


def test_enable_routes_only_decode_steps_with_a_prefix_and_leaves_other_calls_as_they_were():
    model = tiny_llama(2)
    ids = torch.tensor([[3, 5, 7, 11, 13]])
    padded = torch.tensor([[0, 0, 3, 5, 7], [9, 8, 7, 6, 5]])  # a left-padded batch: its mask must be built
    attend = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    before = model(input_ids=ids).logits, model(input_ids=padded, attention_mask=attend).logits
    assert prefix_attention.enable(model)
    assert model.config._attn_implementation == prefix_attention.NAME
    after = model(input_ids=ids).logits, model(input_ids=padded, attention_mask=attend).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    eager = tiny_llama(2)
    eager.set_attn_implementation("eager")
    assert not prefix_attention.enable(eager)  # another implementation: rows keep copying prefixes


def test_the_batched_product_takes_the_strided_operands_it_is_given_without_copying_them():
    """On CUDA in bf16 the scores come from one `bmm` writing float32 (not testable here); its reshapes
    must give `matmul`'s numbers for the views it gets, and copy neither a store entry nor a cache view."""
    store = torch.randn(6, 4, 32, 8)  # [entries, heads, positions, dim]
    keys = store[:2].transpose(-1, -2)  # the first entries, transposed: what the prefix part reads
    cache = torch.randn(8, 4, 64, 8)
    own = cache[:3, :, :16]  # a cache view: the first rows and columns
    queries = torch.randn(2, 4, 5, 8)
    for a, b in (
        (queries, keys),
        (torch.randn(3, 4, 1, 8), own.transpose(-1, -2)),
        (torch.randn(3, 4, 1, 16), own),
    ):
        torch.testing.assert_close(prefix_attention.batched_product(a, b), torch.matmul(a, b))
        assert b.reshape(-1, *b.shape[-2:]).data_ptr() == b.data_ptr()  # a view, not a copy


@torch.no_grad()
def test_a_decode_step_through_the_store_gives_each_row_the_logits_of_its_own_prompt(kernels):
    """What tokens cannot show (the tiny Video-LLaVA writes the same text whatever it is asked): rows
    grouped on one entry, each with its own question, each get the logits of their own whole prompt
    from one decode step through the model. Three rows read video a's entry, one reads b's, one has
    no entry and holds all its K/V."""
    torch.manual_seed(0)
    model = tiny_llama(2)
    assert prefix_attention.enable(model)
    prefixes = {"a": torch.randint(0, 64, (7,)), "b": torch.randint(0, 64, (5,))}
    frames = {"a": object(), "b": object()}
    rows = [("a", 3), ("a", 2), ("b", 4), (None, 9), ("a", 1)]  # (video, tokens of the row's own)
    own_ids = [torch.randint(0, 64, (n,)) for _, n in rows]
    fed = torch.randint(0, 64, (len(rows),))  # the token each row is fed this step
    store = PrefixStore.for_model(model, entries=4, length=8)
    config, width = model.config, max(n for _, n in rows)
    head_dim = config.hidden_size // config.num_attention_heads
    keys = torch.zeros(config.num_hidden_layers, len(rows), config.num_key_value_heads, width, head_dim)
    values = torch.zeros_like(keys)
    mask = torch.full((len(rows), 1, 1, width + 1), torch.finfo(torch.float32).min)
    mask[..., width] = 0  # the column this step writes
    entries, positions = [], []
    for r, ((video, n), ids) in enumerate(zip(rows, own_ids, strict=True)):
        start = len(prefixes[video]) if video else 0
        kv = None
        if video:
            kv = model.model(input_ids=prefixes[video][None], use_cache=True).cache
            entries.append(store.place(frames[video], prefixes[video], kv))
        else:
            entries.append(None)
        where = torch.arange(start, start + n)[None]
        kv = model.model(input_ids=ids[None], position_ids=where, cache=kv, use_cache=True).cache
        for layer in range(config.num_hidden_layers):  # the row's own K/V, right-aligned before the write
            keys[layer, r, :, width - n :] = kv.layers[layer].keys[0, :, start:]
            values[layer, r, :, width - n :] = kv.layers[layer].values[0, :, start:]
        mask[r, ..., width - n : width] = 0
        positions.append(start + n)
    cache = DynamicCache(config=config)
    for layer in range(config.num_hidden_layers):
        cache.update(keys[layer], values[layer], layer)
    out = model.model(
        input_ids=fed[:, None],
        position_ids=torch.tensor(positions)[:, None],
        attention_mask=mask,
        cache=cache,
        use_cache=True,
        shared_prefix=store.batch(entries, kernels=kernels),
    )
    logits = model.lm_head(out.last_hidden_state[:, -1])
    for r, (video, _) in enumerate(rows):
        whole = torch.cat(
            [prefixes[video] if video else torch.tensor([], dtype=torch.long), own_ids[r], fed[r : r + 1]]
        )
        torch.testing.assert_close(
            logits[r], model(input_ids=whole[None]).logits[0, -1], rtol=1e-4, atol=1e-5
        )


def test_the_cuda_kernels_call_gives_the_merge_the_shapes_it_expects(monkeypatch):
    """The CUDA branch (memory-efficient attention with an additive bias) cannot run on this machine.
    On meta tensors its ATen op checks the call against its schema and gives its outputs' shapes and
    layout (the output transposed in memory, the log-sum-exp padded to a multiple of 32 queries): the
    whole split attention then runs through them, grouped-query heads and padded groups included, to
    the shape transformers expects. The numbers are the CPU kernel's, tested above."""
    monkeypatch.setattr(prefix_attention, "kernels_on", lambda device: True)
    meta = {"device": "meta", "dtype": torch.bfloat16}
    rows, heads, kv_heads, dim, own, entries, group, length = 6, 8, 4, 16, 128, 2, 4, 64
    out, lse = prefix_attention._fused(
        torch.empty(entries, kv_heads, 2 * group, dim, **meta),
        torch.empty(entries, kv_heads, length, dim, **meta),
        torch.empty(entries, kv_heads, length, dim, **meta),
        torch.empty(entries, 1, 1, length, **meta),
        dim**-0.5,
    )
    assert out.shape == (entries, kv_heads, 2 * group, dim) and lse.shape == (entries, kv_heads, 2 * group)
    assert lse.dtype == torch.float32
    batch = prefix_attention.PrefixBatch(
        keys=(torch.empty(entries, kv_heads, length, dim, **meta),),
        values=(torch.empty(entries, kv_heads, length, dim, **meta),),
        mask=torch.empty(entries, 1, 1, length, **meta),
        queries=torch.empty(entries * group, dtype=torch.long, device="meta"),
        groups=torch.empty(rows, dtype=torch.long, device="meta"),
        has=torch.empty(rows, device="meta"),
    )
    for queries in (1, 64):  # a decode step; a join prefill (a question's tokens a row)
        got, _ = prefix_attention.prefix_attention(
            torch.empty(rows, heads, queries, dim, **meta),
            torch.empty(rows, kv_heads, own, dim, **meta),
            torch.empty(rows, kv_heads, own, dim, **meta),
            torch.empty(rows, 1, queries, own, **meta),
            batch,  # kernels=True by default: the fused kernels' call is what this test checks
            0,
        )
        assert got.shape == (rows, queries, heads, dim) and got.dtype == torch.bfloat16
