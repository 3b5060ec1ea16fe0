"""What it costs questions about one clip to join the continuous decoder, alone against together, on
the CPU: every question prefilled alone (`join_together=False`, the decoder before join prefills) or
every question but the clip's first prefilled together in one forward (backends/join_prefill.py).

    PYTHONPATH=. python3 bench/join_cost.py [--questions 32] [--repeats 3]

A 10 s synthetic clip, decoded to 8 frames of up to 512 pixels as the factory reads them, and the tiny
Video-LLaVA with the real processor (8 x 257 video tokens), `--questions` slots, one new token each: a
wave that is all joins. One JSON line per way: the wave's wall time (best of `--repeats`, after one
warm-up), the processor runs and language-model forwards it took, and the questions prefilled
together; then one line with the processor's time for one request against the tokenizer's alone.
The tiny model's forwards cost little; on Video-LLaVA-7B each reads its 14.7 GB of weights (a few ms
on an H100), so the forwards counted here are the figure that carries over, with the processor's
time, which is the same for any model of this processor.
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


if __name__ == "__main__":
    main()
