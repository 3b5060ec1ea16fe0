"""What bench/gpu_foley.py counts beside its timings: graphs dynamo compiled, CUDA graphs recorded
(each a while and pool memory), and GPU memory. Bench instrumentation only."""

from __future__ import annotations

import torch


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (each one costs seconds to minutes on a 7B model)."""
    import torch._dynamo.utils

    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


RECORDINGS = [0]  # CUDA graphs recorded in this process (see count_cudagraph_recordings)


def count_cudagraph_recordings() -> None:
    """Count every CUDA-graph recording: dynamo's graph count misses them (one compiled graph with
    dynamic rows and columns records once per (rows, width) pair, each taking a while and pool memory).
    Bench instrumentation only: it wraps inductor's private tree manager, and is skipped where that
    method is missing (another torch), so the count then reads -1."""
    try:
        from torch._inductor.cudagraph_trees import CUDAGraphTreeManager
    except ImportError:
        RECORDINGS[0] = -1
        return
    record = getattr(CUDAGraphTreeManager, "record_function", None)
    if record is None:
        RECORDINGS[0] = -1
        return

    def counted(self, *args, **kwargs):
        RECORDINGS[0] += 1
        return record(self, *args, **kwargs)

    CUDAGraphTreeManager.record_function = counted


def cudagraph_counters() -> dict[str, int]:
    """Inductor's CUDA-graph counters (a "skip" means a compiled step runs without CUDA graphs) and the
    recordings so far."""
    import torch._dynamo.utils

    counters = {k: int(v) for k, v in torch._dynamo.utils.counters["inductor"].items() if "cudagraph" in k}
    return {**counters, "recordings": RECORDINGS[0]}


def reserved_gib() -> float | None:
    return round(torch.cuda.memory_reserved() / 2**30, 1) if torch.cuda.is_available() else None


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None


def step_shapes(llm) -> int | None:
    """The continuous decoder's distinct decode-step shapes so far: on CUDA, its CUDA-graph recordings."""
    return None if llm.continuous is None else len(llm.continuous.step_shapes)


def counts(decoder) -> tuple[int, int, int]:
    """The continuous decoder's (decode steps, live rows summed over them, videos prefilled) so far."""
    return (decoder.steps, decoder.row_steps, decoder.video_prefills) if decoder is not None else (0, 0, 0)


def decoder_work(decoder, before: tuple[int, int, int], clips: int) -> dict[str, float | int | None]:
    """What `decoder` ran since its `counts` were `before`: decode steps, mean live rows per step and
    videos prefilled per clip (`clips`; None without a continuous decoder)."""
    if decoder is None:
        return {"decode_steps": None, "rows_per_step": None, "video_prefills_per_clip": None}
    steps, rows, prefills = (now - then for now, then in zip(counts(decoder), before, strict=True))
    return {
        "decode_steps": steps,
        "rows_per_step": round(rows / steps, 2) if steps else None,
        "video_prefills_per_clip": round(prefills / clips, 2),
    }
