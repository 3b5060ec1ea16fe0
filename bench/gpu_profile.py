"""Where a decode step's time goes: one warm batch under torch.profiler, its CUDA kernels summed by
name, per step, beside the profiled wall time per step. It answers what the H100's first figures left
open (2026-11-27: 27 ms a step for 32 rows against 8 ms for one): whether a 32-row step is bound by
the GPU's kernels, and by which, or by the host between them. On the CPU it ranks the operators by
their own time instead. Bench instrumentation only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def _on_gpu(event: Any) -> bool:
    kind = event.device_type
    return getattr(kind, "name", str(kind)).upper().endswith("CUDA")


def profile_decode(generate_once: Callable[[], list], top: int = 12) -> dict:
    """`generate_once()` (a warm call: nothing left to compile or record) under the profiler. Its
    prefills are in its time, as in the decode lines' ms a step."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        out = generate_once()
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - started
    steps = max(max(o.new_tokens for o in out), 1)
    events = list(prof.key_averages())
    if cuda:  # kernels, copies and fills on the GPU; a CUDA graph's replay shows its kernels here
        events = [e for e in events if _on_gpu(e)]

    def own_us(event: Any) -> float:
        return event.self_device_time_total if cuda else event.self_cpu_time_total

    total = sum(own_us(e) for e in events)
    ranked = sorted(events, key=own_us, reverse=True)[:top]
    return {
        "steps": steps,
        "profiled_ms_per_step": round(1000 * wall / steps, 2),  # the profiler adds some host time
        "busy_ms_per_step": round(total / 1000 / steps, 2),  # the GPU's kernels (CPU: operators)
        "kernels": len(events),  # distinct names; 0 on CUDA: the profiler saw no kernel of the graphs
        "top": [
            {
                "name": e.key[:100],
                "ms_per_step": round(own_us(e) / 1000 / steps, 3),
                "calls_per_step": round(e.count / steps, 1),
                "share": round(own_us(e) / total, 3) if total else None,
            }
            for e in ranked
        ],
    }
