"""One decode step's attention at Video-LLaVA-7B's layer shapes: each row holding a copy of its video
prefix (the continuous decoder before the prefix store) against the prefix read once per video from
the prefix store (foley_core/backends/prefix_attention.py).

    PYTHONPATH=. python3 bench/prefix_attention.py

On the CPU in fp32, eager (about a minute); on a GPU in bf16, each variant replayed as one CUDA graph
(bench/gpu_foley.py runs the same mixes first).

Per (rows, videos) mix, one JSON line: ms per layer for each variant, the K/V bytes each reads, and the
largest difference between their outputs. The store is read two ways: its parts written out as small
ops (`store_*`: the decoder before fused kernels) and each part as one fused attention kernel
(`kernels_*`: the decoder's default, `PrefixBatch.kernels`). Shapes: 32 heads of 128, a
2,056-position video prefix (8 frames x 257 tokens + the template's start; the store rounds it to
2,112), and 512 columns of each row's own (the rest of its prompt and its answer: one 512-column
view, as the H100's first figures had it; the decoder's rows now write from column 0, and a short
answer's view is 128 or 256 wide). A copy row reads the 2,056 prefix positions plus its own, 3,072
columns (the 512-column view past 2,568). The rows ask about
`videos` clips in turn (row r about clip r % videos): 32 rows about one clip is the decode benchmark's
batch, 32 about 4 clips a reason step over several videos, 32 about 32 an identify step. As in the
decoder, a step computes at least 2 rows and reads at least 2 store entries (a size of 1 would compile
apart): one live row is computed beside an empty one, which still reads its columns in a copy row.
The decode step runs this for each of the 32 layers; the weights' 14.7 GB a step come on top.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from v2t_foley.foley_core.backends.cache_views import bucket_columns
from v2t_foley.foley_core.backends.prefix_attention import (
    prefix_attention,
    use_float32_products,
)
from v2t_foley.foley_core.backends.prefix_store import PREFIX_BUCKET, PrefixStore

HEADS, DIM, PREFIX, OWN = 32, 128, 2056, 512
MIXES = ((1, 1), (32, 1), (32, 4), (32, 32))  # (live rows, videos); a step computes at least 2 rows
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32
REPS = 50 if CUDA else 5


def timed(fn) -> float:
    """Milliseconds per call: a CUDA graph replayed on the GPU (the decode step runs as one), the
    function itself on the CPU."""
    if CUDA:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        graph.replay()  # the first replay is not timed
        run = graph.replay
    else:
        fn()
        run = fn
    if CUDA:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(REPS):
        run()
    if CUDA:
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - started) / REPS


def mix(live: int, videos: int) -> dict:
    rows = max(2, live)
    generator = torch.Generator(device=DEVICE).manual_seed(rows * 100 + videos)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=DEVICE, dtype=DTYPE)

    length = -(-PREFIX // PREFIX_BUCKET) * PREFIX_BUCKET
    store = PrefixStore(
        layers=1, heads=HEADS, head_dim=DIM, entries=max(2, rows), length=length, dtype=DTYPE, device=DEVICE
    )
    prefixes = []
    for video in range(videos):
        kv = DynamicCache()
        kv.update(randn(1, HEADS, PREFIX, DIM), randn(1, HEADS, PREFIX, DIM), 0)
        prefixes.append(kv.layers[0])
        assert store.place(object(), torch.arange(PREFIX), kv) == video
    batch = store.batch([r % videos if r < live else None for r in range(rows)])

    query = randn(rows, HEADS, 1, DIM)
    own_k, own_v = randn(rows, HEADS, OWN, DIM), randn(rows, HEADS, OWN, DIM)
    own_mask = torch.zeros(rows, 1, 1, OWN, dtype=DTYPE, device=DEVICE)
    own_mask[..., OWN // 2 :] = torch.finfo(DTYPE).min  # columns not written yet
    columns = bucket_columns(PREFIX + OWN, 4096)
    copy_k = torch.zeros(rows, HEADS, columns, DIM, dtype=DTYPE, device=DEVICE)
    copy_v = torch.zeros_like(copy_k)
    copy_mask = torch.full((rows, 1, 1, columns), torch.finfo(DTYPE).min, dtype=DTYPE, device=DEVICE)
    for r in range(live):
        prefix = prefixes[r % videos]
        copy_k[r, :, :PREFIX], copy_v[r, :, :PREFIX] = prefix.keys[0], prefix.values[0]
        copy_k[r, :, PREFIX : PREFIX + OWN], copy_v[r, :, PREFIX : PREFIX + OWN] = own_k[r], own_v[r]
        copy_mask[r, ..., : PREFIX + OWN] = 0
        copy_mask[r, ..., PREFIX + OWN // 2 : PREFIX + OWN] = torch.finfo(DTYPE).min
    out: dict[str, torch.Tensor] = {}

    def copied() -> None:
        out["copy"] = F.scaled_dot_product_attention(query, copy_k, copy_v, attn_mask=copy_mask)

    def stored() -> None:
        out["store"] = prefix_attention(query, own_k, own_v, own_mask, batch._replace(kernels=False), 0)[0]

    def fused() -> None:
        out["kernels"] = prefix_attention(query, own_k, own_v, own_mask, batch._replace(kernels=True), 0)[0]

    copy_ms = timed(copied)
    store_ms = timed(stored)
    kernels_ms = timed(fused)
    itemsize = torch.finfo(DTYPE).bits // 8
    per_position = 2 * HEADS * DIM * itemsize  # K and V of one position, one layer
    copy_bytes = rows * columns * per_position
    store_bytes = (batch.keys[0].shape[0] * length + rows * OWN) * per_position
    expected = out["copy"].transpose(1, 2)[:live]
    difference = (expected - out["store"][:live]).abs().max().item()
    kernels_difference = (expected - out["kernels"][:live]).abs().max().item()
    return {
        "live_rows": live,
        "rows": rows,
        "videos": videos,
        "copy_ms": round(copy_ms, 3),
        "store_ms": round(store_ms, 3),
        "kernels_ms": round(kernels_ms, 3),
        "speedup": round(copy_ms / store_ms, 2),
        "kernels_speedup": round(copy_ms / kernels_ms, 2),
        "copy_mb_read": round(copy_bytes / 2**20, 1),
        "store_mb_read": round(store_bytes / 2**20, 1),
        "entries_read": batch.keys[0].shape[0],
        "copy_gb_s": round(copy_bytes / copy_ms / 1e6, 1),
        "store_gb_s": round(store_bytes / store_ms / 1e6, 1),
        "kernels_gb_s": round(store_bytes / kernels_ms / 1e6, 1),
        "max_abs_difference": difference,
        "kernels_max_abs_difference": kernels_difference,
    }


def main() -> None:
    use_float32_products(torch.device(DEVICE))  # as `enable` sets it for the decoder's model
    device = torch.cuda.get_device_name() if CUDA else "cpu"
    for rows, videos in MIXES:
        print(json.dumps({"step": "attention", "device": device, "dtype": str(DTYPE), **mix(rows, videos)}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
