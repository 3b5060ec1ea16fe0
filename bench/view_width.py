"""The own columns a continuous-decoder step reads, on the CPU: a stream of questions about a few
clips through a few slots, as a worker's batching thread feeds them (later ones join as rows leave).

    PYTHONPATH=. python3 bench/view_width.py [--requests 48] [--max-new-tokens 24]

A step reads each computed row's own columns up to its view's width (the video prefixes come from the
prefix store, apart); on Video-LLaVA-7B a column of a row is 0.5 MB of K/V over the 32 layers, so at
32 rows 128 columns a step are 2 GB and 512 are 8.6 GB, beside the 14.7 GB of weights. One JSON line:
steps, the mean and largest width a step read, and the mean columns a live row holds (what it needs),
with the tiny model's question lengths (the 7B's prompts are as long in tokens, not its answers).
The decode step is wrapped to read its mask, so the same script measures any version of the decoder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's `tests` helpers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48, help="questions, about 4 clips in turn")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    import torch

    from tests.test_static_decode import PROMPTS, clip
    from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest, load_backend
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    llm = load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=8))
    clips = [clip(60 + k) for k in range(4)]
    asked = [GenerationRequest(clips[k % 4], PROMPTS[k % 4]) for k in range(args.requests)]
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    llm.continuous = decoder = ContinuousDecoder(llm, 8)
    llm.share_video_prefix = True
    widths: list[int] = []
    held: list[float] = []
    step = decoder.step

    def watched(ids, positions, mask, cache, *shared):
        widths.append(mask.shape[-1])
        live = (mask[:, 0, 0] == 0).sum(-1)
        held.append(float(live[live > 1].float().mean()) if bool((live > 1).any()) else 1.0)
        return step(ids, positions, mask, cache, *shared)

    decoder.step = watched
    with torch.inference_mode():
        llm.generate(asked, params)
    print(
        json.dumps(
            {
                "step": "view_width",
                "requests": len(asked),
                "slots": 8,
                "max_new_tokens": args.max_new_tokens,
                "waves": decoder.waves,
                "steps": len(widths),
                "mean_width": round(sum(widths) / len(widths), 1),
                "max_width": max(widths),
                "mean_columns_a_live_row_sees": round(sum(held) / len(held), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
