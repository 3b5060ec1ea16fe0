"""A decode step reads only the live part of its static cache (foley_core/backends/cache_views.py): the
rows up to the last live slot and the columns written so far, not the whole cache. The answers stay
`generate`'s, token for token, while the view grows across column buckets (made 8 wide here, so that a
short answer crosses several) and while fewer slots are live than the cache holds."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

import pytest
import torch

from tests.test_static_decode import PROMPTS, answers, clip
from v2t_foley.foley_core.backends import (
    BackendSpec,
    GenerationParams,
    GenerationRequest,
    cache_views,
    load_backend,
)
from v2t_foley.foley_core.backends.cache_views import CacheViews, bucket_columns
from v2t_foley.foley_core.backends.continuous import ContinuousDecoder
from v2t_foley.foley_core.backends.static_decode import StaticDecoder


@pytest.fixture(scope="module")
def llm():
    return load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=8))


def record_steps(decoder, masks: list[torch.Tensor] | None = None) -> list[tuple[int, int, int]]:
    """(rows, columns read, columns of the whole cache) of every decode step `decoder` runs; each
    step's mask too, into `masks`."""
    seen: list[tuple[int, int, int]] = []
    step = decoder.step

    def recorded(ids, positions, mask, cache, *shared):
        keys = cache.layers[0].keys
        assert keys.shape[0] == ids.shape[0] == mask.shape[0] and keys.shape[2] == mask.shape[-1]
        whole = keys.stride(1) // keys.shape[-1]  # columns of the memory it views (its row stride)
        seen.append((ids.shape[0], keys.shape[2], whole))
        if masks is not None:
            masks.append(mask.clone())
        return step(ids, positions, mask, cache, *shared)

    decoder.step = recorded
    return seen


@contextlib.contextmanager
def compiled_variant(llm, variant: str) -> Iterator[ContinuousDecoder]:
    """A compiled continuous decoder of 4 slots reading the prefix store, its attention as `variant`
    says ("kernels", the default; "small-ops"; "opaque"); afterwards `generate` again."""
    llm.continuous = decoder = ContinuousDecoder(llm, 4, compile=True)
    decoder.opaque_attention = variant == "opaque"
    decoder.attention_kernels = variant != "small-ops"
    llm.share_video_prefix = True
    try:
        yield decoder
    finally:
        llm.use_decoder("generate")
        llm.share_video_prefix = False


@pytest.mark.parametrize("name", ["static", "continuous"])
def test_steps_read_the_written_columns_and_write_generates_tokens(llm, monkeypatch, name):
    monkeypatch.setattr(cache_views, "COLUMN_BUCKET", 8)
    requests = [GenerationRequest(clip(20 + k), PROMPTS[k]) for k in range(3)]
    params = GenerationParams(max_new_tokens=24)
    plain = answers(llm, "generate", requests, params)
    llm.use_decoder(name)
    try:
        decoder: StaticDecoder | ContinuousDecoder = llm.static or llm.continuous
        seen = record_steps(decoder)
        fast = [(g.text, g.new_tokens, g.finished) for g in llm.generate(requests, params)]
    finally:
        llm.use_decoder("generate")
    assert fast == plain
    columns = [c for _, c, _ in seen]
    assert len(set(columns)) >= 3  # 24 tokens crossed at least two 8-column boundaries
    # one batch: the written part only grows (the continuous decoder's width follows its longest
    # live row, which may leave first)
    if name == "static":
        assert columns == sorted(columns)
    assert all(c < whole for _, c, whole in seen), seen  # never the whole cache (bucketed to 512)


def test_a_lone_request_reads_two_rows_of_the_continuous_cache(llm):
    """One live slot of 8: the step computes 2 rows (not 8; not 1, a size dynamo compiles apart)."""
    request = GenerationRequest(clip(30), PROMPTS[0])
    params = GenerationParams(max_new_tokens=6)
    plain = answers(llm, "generate", [request], params)
    llm.use_decoder("continuous")
    try:
        seen = record_steps(llm.continuous)
        fast = [(g.text, g.new_tokens, g.finished) for g in llm.generate([request], params)]
        slots = llm.continuous.wave_cache.shape[0]
    finally:
        llm.use_decoder("generate")
    assert fast == plain
    assert slots == llm.batch_size == 8
    assert {rows for rows, _, _ in seen} == {2}


def test_late_joins_and_shared_prefixes_through_small_views_write_generates_tokens(llm, monkeypatch):
    """Five questions (three about one video) through two slots: later ones join as slots free, each
    continuing from a copy of its video's prefix, while the views grow 8 columns at a time."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    monkeypatch.setattr(cache_views, "COLUMN_BUCKET", 8)
    shared = clip(50)
    requests = [GenerationRequest(shared if k < 3 else clip(51 + k), PROMPTS[k % 4]) for k in range(5)]
    params = GenerationParams(max_new_tokens=12)
    plain = answers(llm, "generate", requests, params)
    llm.continuous = ContinuousDecoder(llm, 2)
    llm.share_video_prefix = True
    try:
        fast = [(g.text, g.new_tokens, g.finished) for g in llm.generate(requests, params)]
        decoder = llm.continuous
    finally:
        llm.use_decoder("generate")
        llm.share_video_prefix = False
    assert fast == plain
    assert decoder.steps < 5 * 12  # rows decoded side by side, not one after another


def test_continuous_rows_write_from_column_0_and_a_step_reads_the_longest_live_row(llm, monkeypatch):
    """The continuous decoder's rows each write at their own next column (cache_views.RowWrites): a
    row's K/V start at column 0 whenever it joined, so a step reads as many columns as its longest live
    row has (bucketed), not as many as the decoder has run steps. Eight questions about one video
    through two slots, constrained and free by turns so that rows end at different steps: every step's
    mask shows each row a run of columns from 0 (a row whose slot is empty sees column 0 alone, where it
    writes), and the step's width is the bucket of the longest run; generate's tokens."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    monkeypatch.setattr(cache_views, "COLUMN_BUCKET", 8)
    shared = clip(52)
    from tests.test_continuous import SCHEMA

    requests = [GenerationRequest(shared, PROMPTS[k % 4], SCHEMA if k % 2 else None) for k in range(7)]
    params = GenerationParams(max_new_tokens=12)
    plain = answers(llm, "generate", requests, params)
    llm.continuous = decoder = ContinuousDecoder(llm, 2)
    llm.share_video_prefix = True
    masks: list[torch.Tensor] = []
    record_steps(decoder, masks)
    try:
        fast = [(g.text, g.new_tokens, g.finished) for g in llm.generate(requests, params)]
    finally:
        llm.use_decoder("generate")
        llm.share_video_prefix = False
    assert fast == plain
    assert decoder.waves == 1 and decoder.late_joins >= 5 and decoder.store_steps == decoder.steps
    empty_rows = 0
    for mask in masks:
        seen = mask[:, 0, 0] == 0  # [rows, columns]
        runs = seen.sum(-1)
        assert all(bool(seen[r, :n].all()) for r, n in enumerate(runs.tolist())), seen
        assert mask.shape[-1] == bucket_columns(int(runs.max()), decoder.wave_cache.shape[1])
        empty_rows += int((runs == 1).sum())
    assert empty_rows > 0  # some step computed a row whose slot was empty
    assert max(mask.shape[-1] for mask in masks) < decoder.steps  # one column a step would pass it


def test_a_view_writes_into_its_cache():
    """The view is the cache's own memory: a write through it is in the cache, at the same place."""
    from transformers import LlamaConfig, StaticCache

    config = LlamaConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=1)
    cache = StaticCache(config=config, max_cache_len=32)
    cache.early_initialization(4, 2, 8, torch.float32, torch.device("cpu"))
    cache.layers[0].cumulative_length.fill_(5)
    views = CacheViews(cache)
    view = views.get(2, 8)
    assert views.get(2, 8) is view
    whole = views.get(4, 32)  # a view too, the same memory: every step's cache has the same kind
    assert whole is not cache and whole.layers[0].keys.data_ptr() == cache.layers[0].keys.data_ptr()
    widths = [bucket_columns(used, 4096) for used in (1, 128, 129, 256, 257, 512, 513, 4000)]
    assert widths == [128, 128, 256, 256, 512, 512, 1024, 4096] and bucket_columns(6, 32) == 32
    new = torch.ones(2, 2, 1, 8)
    keys, _ = view.layers[0].update(new, 2 * new)
    assert keys.shape == (2, 2, 8, 8)
    assert torch.equal(cache.layers[0].keys[:2, :, 5], new[:, :, 0])
    assert torch.equal(cache.layers[0].values[:2, :, 5], 2 * new[:, :, 0])
    assert int(cache.layers[0].cumulative_length) == 6  # the write position moved for the cache too
    assert not cache.layers[0].keys[2:].any()

    # each row at its own column: the continuous decoder's views
    write_at = torch.tensor([3, 0, 7, 1])
    rows = CacheViews(cache, write_at).get(2, 8)
    keys, _ = rows.layers[0].update(3 * new, 4 * new)
    assert keys.shape == (2, 2, 8, 8) and keys.data_ptr() == cache.layers[0].keys.data_ptr()
    assert torch.equal(cache.layers[0].keys[0, :, 3], 3 * new[0, :, 0])
    assert torch.equal(cache.layers[0].keys[1, :, 0], 3 * new[1, :, 0])
    assert torch.equal(cache.layers[0].values[1, :, 0], 4 * new[1, :, 0])
    assert int(cache.layers[0].cumulative_length) == 6  # the shared write position is not used
    assert not cache.layers[0].keys[2:].any()  # rows past the view: untouched


@pytest.mark.skipif(
    not shutil.which("g++") and not shutil.which("c++"), reason="inductor needs a C++ compiler"
)
def test_the_compiled_step_compiles_once_for_every_row_count_and_width(llm, monkeypatch):
    """A step that reads a growing view sees a new shape at every column bucket and whenever the live
    rows change. Compiling each would cost minutes on a 7B model: rows and columns are dynamic from
    the first call, so the graph compiled then serves every later row count and width (CUDA graphs
    then record each shape once, a replay's cost)."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    monkeypatch.setattr(cache_views, "COLUMN_BUCKET", 8)
    requests = [GenerationRequest(clip(40 + k), PROMPTS[k]) for k in range(3)]
    params = GenerationParams(max_new_tokens=30)
    plain = {n: answers(llm, "generate", requests[:n], params) for n in (3, 1)}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    llm.continuous = ContinuousDecoder(llm, 4, compile=True)
    try:
        seen = record_steps(llm.continuous)
        first = [(g.text, g.new_tokens, g.finished) for g in llm.generate(requests, params)]
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        alone = [(g.text, g.new_tokens, g.finished) for g in llm.generate(requests[:1], params)]
    finally:
        llm.use_decoder("generate")
    assert (first, alone) == (plain[3], plain[1])
    assert {rows for rows, _, _ in seen} == {4, 2} and len({columns for _, columns, _ in seen}) >= 4
    assert not torch._dynamo.utils.counters["graph_break"]
    assert graphs >= 1 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


@pytest.mark.skipif(
    not shutil.which("g++") and not shutil.which("c++"), reason="inductor needs a C++ compiler"
)
@pytest.mark.parametrize("variant", ["kernels", "small-ops", "opaque"])
def test_the_compiled_step_reads_the_prefix_store_for_any_grouping_of_rows(llm, monkeypatch, variant):
    """Rows that read their video prefix from the prefix store group by entry, and the entries read
    and the group size change as rows come and go: like rows and columns they are dynamic from the
    first call, so one compiled graph serves every grouping, with no graph break, and the tokens are
    generate's: with the attention's parts as fused kernels (the default), as small ops, and as one
    opaque operator a layer (its fake shapes under inductor)."""
    monkeypatch.setattr(cache_views, "COLUMN_BUCKET", 8)
    shared = clip(45)
    mixed = [GenerationRequest(shared if k < 3 else clip(46), PROMPTS[k]) for k in range(4)]
    regrouped = [GenerationRequest(clip(47 + k % 2), PROMPTS[k]) for k in range(4)]
    params = GenerationParams(max_new_tokens=20)
    plain = [answers(llm, "generate", batch, params) for batch in (mixed, regrouped)]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with compiled_variant(llm, variant) as decoder:
        first = [(g.text, g.new_tokens, g.finished) for g in llm.generate(mixed, params)]
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        second = [(g.text, g.new_tokens, g.finished) for g in llm.generate(regrouped, params)]
    assert [first, second] == plain
    assert decoder.store_steps == decoder.steps > 0
    assert not torch._dynamo.utils.counters["graph_break"]
    assert graphs >= 1 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("variant", ["kernels", "small-ops", "opaque"])
def test_the_attention_reaches_the_compiled_graph_as_its_variant_says(llm, monkeypatch, variant):
    """What dynamo hands the compiler: by default two fused attention kernels a layer (the prefix part
    and the row part); with `opaque_attention` one `v2t_foley::prefix_attention` node a layer (so the
    compiler does not trace the attention's small ops and symbolic sizes, the bulk of a 144-163 s
    compile on the H100) and no kernel outside it; with the small ops neither; generate's tokens
    each way. The compiler is a backend that records the graph and runs it as traced (no inductor: the
    graph is the point here)."""
    graphs: list[torch.fx.GraphModule] = []

    def recorded(graph: torch.fx.GraphModule, example_inputs) -> object:
        graphs.append(graph)
        return graph.forward

    compile_for_real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda step, mode=None: compile_for_real(step, backend=recorded))
    asked = [GenerationRequest(clip(45) if k < 3 else clip(46), PROMPTS[k]) for k in range(4)]
    params = GenerationParams(max_new_tokens=12)
    plain = answers(llm, "generate", asked, params)
    torch._dynamo.reset()
    try:
        with compiled_variant(llm, variant):
            got = [(g.text, g.new_tokens, g.finished) for g in llm.generate(asked, params)]
    finally:
        torch._dynamo.reset()
    assert got == plain and graphs
    op = torch.ops.v2t_foley.prefix_attention
    fused = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu  # the CPU's fused kernel
    layers = llm.model.config.get_text_config().num_hidden_layers

    def count(graph: torch.fx.GraphModule, packet: torch._ops.OpOverloadPacket) -> int:
        targets = (packet, packet.default)
        return sum(node.op == "call_function" and node.target in targets for node in graph.graph.nodes)

    for graph in graphs:
        assert count(graph, op) == (layers if variant == "opaque" else 0)
        assert count(graph, fused) == (2 * layers if variant == "kernels" else 0)


@pytest.mark.skipif(
    not shutil.which("g++") and not shutil.which("c++"), reason="inductor needs a C++ compiler"
)
def test_closing_a_backend_drops_its_compiled_step():
    """Dynamo keeps compiled code on the step's code object, process-wide; on CUDA that code holds its
    CUDA graphs' memory pool. Closing the backend must drop it with the weights (on CPU inductor
    compiles the same step, without CUDA graphs)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    torch._dynamo.reset()
    own = load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=2))
    own.continuous, own.decoder = ContinuousDecoder(own, 2, compile=True), "continuous"
    own.generate([GenerationRequest(clip(60), PROMPTS[0])], GenerationParams(max_new_tokens=3))
    assert _debug_get_cache_entry_list(ContinuousDecoder._step.__code__)  # it was compiled
    own.close()
    assert not _debug_get_cache_entry_list(ContinuousDecoder._step.__code__)
