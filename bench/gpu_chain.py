"""The GPU benchmark's chain section: the chain on one 10 s clip against a one-pass caption of it, the
"chain costs at most 2x a caption" target, with the answers' lengths beside the times. Bench code only."""

from __future__ import annotations

import time

# beside bench/gpu_foley.py, which puts bench/ first on sys.path
from gpu_counters import compiled_graphs, counts, cudagraph_counters, decoder_work, step_shapes
from gpu_run import STORE, TINY, WAYS, log, sync


def tokens_by_step(calls) -> dict[str, list[int]]:
    """New tokens of every call, by step: the realistic answer lengths the chain asked for."""
    out: dict[str, list[int]] = {}
    for call in calls:
        out.setdefault(call.step, []).append(call.new_tokens)
    return out


def dependent_path_tokens(calls) -> int:
    """The chain's answers that must be decoded one after another: each step waits for the one before,
    while the calls of one step (a window's describe, an event's four questions) decode side by side.
    Against a caption's tokens, this is the chain/caption ratio that decoding alone sets at equal speed
    per step: what the answers' lengths allow, whatever the engine."""
    return sum(max(lengths) for lengths in tokens_by_step(calls).values())


def chain_one_clip(llm, video, frames, config, decoder: str, share: bool, run: str) -> None:
    """A caption of the clip, then the chain on it, on `decoder` (`share`: the shared video prefix);
    `run` names the line (cold: the first chain on this decoder, warm: after one)."""
    from v2t_foley.foley_core.backends.base import GenerationParams, GenerationRequest
    from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
    from v2t_foley.foley_core.chain import run_chain

    llm.use_decoder(decoder)
    llm.share_video_prefix = share
    if llm.continuous is not None:
        llm.continuous.prefix_store = STORE[0]
    t0 = time.perf_counter()
    caption = llm.generate(
        [GenerationRequest(frames, "Describe the clip.")],
        GenerationParams(max_new_tokens=128 if not TINY else 16),
    )
    sync()
    caption_s = time.perf_counter() - t0
    # as `foley script` and the factory's workers run it: behind a batching wrapper, so that a step's
    # questions (an event each) are asked side by side
    batching = BatchingVideoLLM(llm, max_batch=llm.batch_size)
    starts: list[tuple[str, float]] = []
    before = counts(llm.continuous)
    t0 = time.perf_counter()
    try:
        result = run_chain(
            video, batching, config=config, on_step=lambda name: starts.append((name, time.perf_counter()))
        )
        sync()
    finally:
        batching.stop()  # its thread only: the model stays the bench's
    chain_s = time.perf_counter() - t0
    ends = [t for _, t in starts[1:]] + [t0 + chain_s]
    step_wall_s = {name: round(end - start, 4) for (name, start), end in zip(starts, ends, strict=True)}
    tokens = sum(c.new_tokens for c in result.trace.calls)
    path = dependent_path_tokens(result.trace.calls)
    log(
        step="chain_one_clip",
        decoder=decoder,
        shared_video_prefix=share,
        run=run,
        caption_tokens=caption[0].new_tokens,
        caption_s=round(caption_s, 3),
        calls=len(result.trace.calls),
        new_tokens=tokens,
        s=round(chain_s, 3),
        over_caption=round(chain_s / caption_s, 2),
        dependent_path_tokens=path,
        path_over_caption_tokens=round(path / max(caption[0].new_tokens, 1), 2),
        graphs=compiled_graphs(),
        cudagraphs=cudagraph_counters(),
        step_shapes=step_shapes(llm),
        steps=result.trace.step_seconds,  # a per-event step's: its events' times, summed (they overlap)
        step_wall_s=step_wall_s,  # each step's wall time in this run
        **decoder_work(llm.continuous, before, 1),  # the chain's decode steps and videos prefilled
        prefix_store=STORE[0] if llm.continuous is not None else None,
        # a way that failed after its check made the plain loop ask its step again (5 s apart): in `s`
        attention_ran=None if llm.continuous is None else WAYS[llm.continuous.attention_way()],
        attention_failed=None
        if llm.continuous is None
        else {WAYS[way]: why for way, why in llm.continuous.attention_failed.items()},
        answer_tokens=tokens_by_step(result.trace.calls),
        notes=[n for n in result.trace.notes if "cut" in n or "shortened" in n],
    )
