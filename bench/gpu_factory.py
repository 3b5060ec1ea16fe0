"""The GPU benchmark's factory section: the build-dataset flow (process-shard, its task runner, step
cache and store) over generated 10 s clips, on the model already in memory. Bench code only."""

from __future__ import annotations

import os
import time
from pathlib import Path

# beside bench/gpu_foley.py, which puts bench/ first on sys.path
from gpu_counters import compiled_graphs, counts, cudagraph_counters, decoder_work, peak_gib, reserved_gib
from gpu_run import log, sync


def factory(work: Path, llm, processor, scene, n_clips: int) -> None:
    """The build-dataset flow (process-shard, its task runner, cache and store) on the in-memory model."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from v2t_foley.foley_core.backends import registry
    from v2t_foley.foley_core.manifest import write_manifest
    from v2t_foley.foley_core.synthetic import write_scene_video

    folder = work / "model"  # config + processor only: the flow resolves the frame policy and revision
    llm.model.config.save_pretrained(folder)
    processor.save_pretrained(folder)
    registry.release_shared_model()
    registry._registry._loader = lambda spec: llm  # the weights are in memory already (random, 7B shapes)
    rows = [
        {"video": str(write_scene_video(work / f"f{k}.mp4", scene(k))), "id": f"f{k}"} for k in range(n_clips)
    ]
    manifest = write_manifest(rows, str(work / "manifest.csv"))
    try:
        measured_factory(work, llm, folder, manifest, n_clips)
    finally:
        reserved = reserved_gib()
        registry.release_shared_model()
        # the registry closed its own wrapper, which holds the compiled steps' CUDA-graph pools; the
        # bench still holds the model (the LoRA step needs it), so what goes is what close() frees
        log(step="release", reserved_before_gib=reserved, reserved_after_gib=reserved_gib())


def measured_factory(work: Path, llm, folder: Path, manifest: str, n_clips: int) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from v2t_foley.flows.build_dataset import build_dataset

    decoder = llm.continuous
    before = set(decoder.step_shapes) if decoder is not None else set()
    counts_before = counts(decoder)
    processes = start_measuring()
    with prefect_test_harness(server_startup_timeout=120):
        t0 = time.perf_counter()
        summary = build_dataset(
            manifest=manifest,
            store=str(work / "store"),
            model=str(folder),
            batch_size=32,
            shard_size=n_clips,
            timing="measured",
        )
        sync()
        seconds = time.perf_counter() - t0
    log(
        step="factory",
        decoder="continuous" if llm.continuous is not None else "static" if llm.static else "generate",
        shared_video_prefix=llm.share_video_prefix,
        clips=n_clips,
        clip_s=10.0,
        frames=8,
        ok=summary.new_ok_rows,
        failed=summary.new_failed_rows,
        computed=summary.computed,
        measure_processes=processes,  # 0: measured in the step's threads
        step_seconds=summary.step_seconds,  # where the time went: the steps run one after another
        s=round(seconds, 3),
        clips_per_hour=round(3600 * n_clips / seconds),
        graphs=compiled_graphs(),
        cudagraphs=cudagraph_counters(),
        # the shapes the factory added (the decoder may have decoded the sections before it)
        new_step_shapes=None
        if llm.continuous is None
        else len(llm.continuous.step_shapes - (before if llm.continuous is decoder else set())),
        prefix_store=llm.continuous.prefix_store if llm.continuous is not None else None,
        # the decoder's work over the factory: decode steps, live rows per step (of its batch_size 32
        # slots: a bandwidth-bound step costs about the same at 16 rows as at 32) and videos prefilled
        # (the vision tower and about 2,000 tokens each) per clip
        **decoder_work(llm.continuous if llm.continuous is decoder else None, counts_before, n_clips),
        peak_gib=peak_gib(),
    )


def start_measuring() -> int:
    """The worker's measuring processes (proposals/processes.py: every core but two on a GPU host),
    started before the clock: a worker starts them once, at its first measured shard, not once a shard.
    Their start is its own line."""
    from v2t_foley.foley_core.proposals.processes import MeasuringPool, shared_measure

    measure = shared_measure()
    if not isinstance(measure, MeasuringPool):
        return 0
    started = time.perf_counter()
    measure.start()
    log(step="measure_pool", processes=measure.processes, s=round(time.perf_counter() - started, 2))
    return measure.processes
