"""What it costs questions about one clip to join the continuous decoder, alone against together, on
the CPU: every question prefilled alone (`join_together=False`, the decoder before join prefills) or
every question but the clip's first prefilled together in one forward (backends/join_prefill.py).

    PYTHONPATH=. python3 bench/join_cost.py [--questions 32] [--repeats 3]

A 10 s synthetic clip, decoded to 8 frames of up to 512 pixels as the factory reads them, and the tiny
Video-LLaVA with the real processor (8 x 257 video tokens), `--questions` slots, one new token each: a
wave that is all joins. One JSON line per way: the wave's wall time (best of `--repeats`, after one
warm-up), the processor runs and language-model forwards it took, and the questions prefilled
together. Then `new_videos`: as many callers, each asking about a clip of its own through the batching
backend, with and without the callers preparing their frames' pixel values (backends/prompt_inputs.py):
the time the decoder's thread spent encoding. Last, the processor's time for one request against the
tokenizer's alone.
The tiny model's forwards cost little; on Video-LLaVA-7B each reads its language model's 13.4 GB
of weights (a few ms on an H100), so the forwards counted here are the figure that carries over,
with the processor's time, which is the same for any model of this processor.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest, load_backend
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder
    from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
    from v2t_foley.foley_core.video import open_video

    llm = load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=args.questions))
    work = Path(tempfile.mkdtemp(prefix="join-cost-"))
    scene = SceneSpec(duration=10.0, fps=12.0, cuts=(5.0,), motions=((2.0, 4.0),), clicks=(1.0, 6.5), seed=0)
    frames = open_video(str(write_scene_video(work / "clip.mp4", scene)), max_side=512).uniform(8)
    prompts = ("What makes a sound?", "Where does it happen, and on what surface exactly?", "Sounds?")
    requests = [GenerationRequest(frames, prompts[k % 3]) for k in range(args.questions)]
    params = GenerationParams(max_new_tokens=1)

    counts = {"processor_runs": 0, "language_model_forwards": 0}
    encode = llm.encode

    def counted_encode(*a, **k):
        counts["processor_runs"] += 1
        return encode(*a, **k)

    llm.encode = counted_encode
    llm.model.get_decoder().register_forward_hook(
        lambda *_: counts.__setitem__("language_model_forwards", counts["language_model_forwards"] + 1)
    )
    llm.continuous = decoder = ContinuousDecoder(llm, args.questions)
    llm.share_video_prefix = True
    for together in (False, True):
        decoder.join_together = together
        best, seen = float("inf"), {}
        for _ in range(args.repeats + 1):  # the first is the warm-up
            decoder.release()  # each wave from a cold prefix store: the clip's first question goes alone
            counts.update(processor_runs=0, language_model_forwards=0)
            joined = decoder.joined_together
            started = time.perf_counter()
            with torch.inference_mode():
                llm.generate(requests, params)
            best = min(best, time.perf_counter() - started)
            seen = dict(counts, joined_together=decoder.joined_together - joined)
        line = {"step": "join_cost", "join_together": together, "questions": args.questions}
        line |= {"s": round(best, 3), "ms_per_question": round(1000 * best / args.questions, 2), **seen}
        print(json.dumps(line), flush=True)

    new_videos(llm, frames, prompts, args.questions)

    def timed(call) -> float:
        call()
        started = time.perf_counter()
        for _ in range(20):
            call()
        return round((time.perf_counter() - started) / 20 * 1000, 3)

    tokenizer_ms = timed(lambda: llm.tokenizer(llm.format_prompt(prompts[1]), return_tensors="pt"))
    line = {
        "step": "prompt_ids",
        "processor_ms": timed(lambda: encode(requests[:1])),
        "tokenizer_ms": tokenizer_ms,
    }
    print(json.dumps(line), flush=True)


def new_videos(llm, frames, prompts, callers: int) -> None:
    """`callers` threads, each asking one question about a clip of its own through the batching
    backend (the continuous decoder's thread prefills each new video alone): the processor's runs in
    that thread and the time it spent encoding, with the callers preparing their frames (the default)
    and without."""
    import threading

    from v2t_foley.foley_core.backends import GenerationParams

    encode, spent = llm.encode, []

    def timed_encode(*a, **k):
        started = time.perf_counter()
        try:
            return encode(*a, **k)
        finally:
            if threading.current_thread().name == "foley-batcher":
                spent.append(time.perf_counter() - started)

    llm.encode = timed_encode
    params = GenerationParams(max_new_tokens=1)
    try:
        run_new_videos(llm, frames, prompts, callers, params, spent)
    finally:
        llm.encode = encode


def run_new_videos(llm, frames, prompts, callers: int, params, spent: list[float]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from v2t_foley.foley_core.backends import GenerationRequest
    from v2t_foley.foley_core.backends.batching import BatchingVideoLLM
    from v2t_foley.foley_core.video.reader import Frames

    for prepare in (False, True):
        # a frames object per caller: the same pixels, another video to the decoder
        clips = [Frames(np.array(frames.images), frames.times, frames.indices) for _ in range(callers)]
        asked = [GenerationRequest(c, prompts[k % 3]) for k, c in enumerate(clips)]
        llm.continuous.release()
        batching = BatchingVideoLLM(llm, max_batch=callers, prepare=prepare)
        spent.clear()
        started = time.perf_counter()
        try:
            with ThreadPoolExecutor(callers) as pool:
                list(pool.map(lambda r, b=batching: b.generate([r], params), asked))
        finally:
            batching.stop()
        line = {"step": "new_videos", "callers_prepare": prepare, "videos": callers}
        line |= {"s": round(time.perf_counter() - started, 3), "batching_thread_encodes": len(spent)}
        line |= {"batching_thread_encode_ms": round(1000 * sum(spent), 1)}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
