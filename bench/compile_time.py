"""What a decoder's first call costs in compiling, on the CPU: the continuous decoder reading the prefix
store (its attention's parts as fused kernels, the default; written out as small ops:
`attention_kernels=False`; or as one opaque operator a layer: `opaque_attention`), the same with
prefixes copied into every row, and the static decoder, each in a fresh process with its own
inductor cache. The H100 spent 144-163 s in the continuous decoder's first call (2026-11-27), most of
a device call; this measures where that comes from, without a GPU.

    python bench/compile_time.py --layers 8                        # inductor, as the decoders compile
    python bench/compile_time.py --layers 32 --backend aot_eager   # dynamo + AOT only, the 7B's depth
    python bench/compile_time.py --layers 8 --variants store --warm  # and again on the cache it left

`--warm` runs each variant a second time, in another fresh process on the inductor cache the first
left (what a worker's next process on the same machine finds: inductor's caches live on its disk).

The tiny Video-LLaVA gets `--layers` text layers (compile work grows with layers, not widths). One JSON
line per variant: first call, second call (other requests: no new graph), graphs, graph breaks, and
whether every answer equals `generate`'s."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the repository first: its `tests` helpers (clips, prompts), not another package of that name
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("store", "store_small_ops", "store_opaque", "copies", "static")


def measure(variant: str, layers: int, backend: str) -> dict:
    import torch
    from transformers import VideoLlavaForConditionalGeneration

    from tests.test_static_decode import PROMPTS, clip
    from v2t_foley.foley_core.backends import BackendSpec, GenerationParams, GenerationRequest, load_backend
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder
    from v2t_foley.foley_core.backends.static_decode import StaticDecoder
    from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM

    if backend != "inductor":  # the decoders call torch.compile(step, mode=...): keep it, change the backend
        compile_for_real = torch.compile
        torch.compile = lambda step, **_: compile_for_real(step, backend=backend)
    tiny = load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=4))
    config = tiny.model.config
    config.text_config.num_hidden_layers = layers
    torch.manual_seed(0)
    model = VideoLlavaForConditionalGeneration(config).eval()
    llm = TransformersVideoLLM.from_parts(model, tiny.processor, f"tiny-{layers}-layers", batch_size=4)
    first = [GenerationRequest(clip(1) if k % 2 else clip(10 + k), PROMPTS[k % 4]) for k in range(4)]
    second = [GenerationRequest(clip(20 + k % 2), PROMPTS[k % 4]) for k in range(4)]
    params = GenerationParams(max_new_tokens=8)
    plain = [[llm.generate([r], params)[0].text for r in asked] for asked in (first, second)]
    if variant == "static":
        llm.use_decoder("static")
        llm.static = StaticDecoder(
            model, pad_id=llm.tokenizer.pad_token_id, eos_id=llm.tokenizer.eos_token_id, compile=True
        )
    else:
        llm.use_decoder("continuous")
        llm.continuous = ContinuousDecoder(llm, 4, compile=True, prefix_store=variant != "copies")
        llm.continuous.opaque_attention = variant == "store_opaque"
        llm.continuous.attention_kernels = variant != "store_small_ops"
    llm.share_video_prefix = True
    times, texts = [], []
    for asked in (first, second):
        started = time.perf_counter()
        texts.append([g.text for g in llm.generate(asked, params)])
        times.append(round(time.perf_counter() - started, 1))
    counters = torch._dynamo.utils.counters
    return {
        "variant": variant,
        "layers": layers,
        "backend": backend,
        "first_call_s": times[0],
        "second_call_s": times[1],
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": sum(counters["graph_break"].values()),
        "same_as_generate": texts == plain,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8, help="text layers of the tiny model")
    parser.add_argument("--backend", default="inductor", help="inductor, or aot_eager (no code generation)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--warm", action="store_true", help="each variant again, on the cache it left")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a variant, in this (child) process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.layers, args.backend)), flush=True)
        return 0
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            print(f"compile_time: no variant {variant!r}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
            return 2
    for variant in args.variants.split(","):
        cache = tempfile.mkdtemp(prefix="compile-time-")  # a cold inductor cache for each variant
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        command = [sys.executable, __file__, "--one", variant, "--layers", str(args.layers)]
        command += ["--backend", args.backend]
        try:
            for state in ("cold", "warm") if args.warm else ("cold",):
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                line = json.loads(lines[-1]) if lines else {"variant": variant, "error": done.stderr[-400:]}
                print(json.dumps(line | {"cache": state}), flush=True)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
