"""GPU benchmark of v2t-foley's own paths on Video-LLaVA-7B shapes with random weights (no download).

    PYTHONPATH=. python bench/gpu_foley.py               # on an H100/H200: under 8 minutes
    bench/run_gpu.sh "$OUT"                              # it and both baselines, one device call
    SCALE=tiny PYTHONPATH=. python bench/gpu_foley.py    # the same code on CPU, under a minute

Run it in the same call as bench/baselines/gpu_videollava_baseline.py (plain generate + a plain LoRA
step) and gpu_videollava_static_compile.py, so the numbers come from the same card. One JSON line per
measurement:
- attention: one decode step's attention at the 7B layer shapes, video prefixes copied into every
  row against read once per video from the prefix store (bench/prefix_attention.py; not with SCALE=tiny);
- generate: the transformers backend (left-padded batches, xgrammar JSON-Schema decoding) at batch 1
  and 32, tokens/s, constrained and free, with `generate` and the continuous decoder (32 slots, video
  prefixes in the prefix store), and after the factory the static decoder (static KV cache, CUDA
  graphs, one sync per step; the warm-up of each is the same call once, which compiles that shape)
  and the continuous decoder with the prefix copied into every row, constrained at batch 32 (the
  store's gain);
- profile: a warm 32-row free decode on the continuous decoder under torch.profiler (bench/gpu_profile.py):
  the GPU's kernel time per step against the step's wall time, and the kernels that take it;
- joined alone: the continuous decoder at batch 32, constrained, with every question prefilled alone
  (`join_together=False`, the decoder before join prefills): their gain on the same card;
- small ops: after the static decoder, the continuous decoder once more with the store's attention
  written out as small ops (`attention_kernels=False`, the decoder before fused kernels), constrained
  at batch 32 and 1: the fused kernels' gain on the same card, and its compile beside theirs;
- opaque: then with the store's attention as one operator a layer in the compiled step
  (`opaque_attention`), constrained at batch 32 and 1: its warm-up is its compile;
- chain: the chain on one 10 s clip (measured timing, 8 frames), against a one-pass caption of it
  for the "chain costs at most 2x a caption" target: continuous decoder with the shared video prefix
  (cold, then warm), and after the factory `generate` without it (SCALE=tiny: 16-token answers,
  batches 1 and 3); with the answers' dependent path in tokens (each step's longest answer, summed)
  over the caption's tokens, the ratio that the answers' lengths alone set;
- factory: the build-dataset flow (continuous decoder, shared prefix) over 32 such clips (2 with
  SCALE=tiny; FACTORY_CLIPS=N sets it) with its real process-shard task runner, step cache and store,
  on the one model in memory (the registry's loader hands it out; the model folder holds only its
  config and processor), with wall time, clips per hour and each step's wall time;
- lora_step: one optimizer step of training/lora.py on one (clip, script) example built by the
  trainer's own collator, gradient checkpointing on, peak memory.
Beside the timings: graphs dynamo compiled, CUDA graphs recorded, and the continuous decoder's
distinct decode-step shapes (`step_shapes`: on CUDA, its recordings; on the CPU, the same count, a
forecast of them).
The model's tokenizer is the tiny offline one (the real one cannot be downloaded there); the model's
shapes, the 8 x 257 video tokens, its 4,096 positions (so the chain's answer bounds are cut to fit, as
for the real model) and the processor are the real model's. A section that would start after
BUDGET_S (default 420 s) is skipped and logged as skipped, so the whole run stays under 8 minutes;
ONLY=part,part runs those parts alone (bench/gpu_run.py), for a short call after a full one:
    ONLY=generate_generate_b32_constrained,generate_continuous_b32 BUDGET_S=200 python bench/gpu_foley.py
A section that fails logs its error as its own line and the run goes on with the next; when a decode
through the prefix store fails, it is tried once with the prefixes copied, and when that succeeds,
every later continuous figure is measured with copies too (`prefix_store: false` in their lines).
A way of the store's attention that fails its check on the card is not used (`attention_ran`, and
`attention_failed` with why; backends/attention_check.py).
bench/targets.py reads it all back.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

# beside this script (python bench/gpu_foley.py puts bench/ first on sys.path)
from gpu_chain import chain_one_clip
from gpu_counters import (
    RECORDINGS,
    compiled_graphs,
    count_cudagraph_recordings,
    cudagraph_counters,
    peak_gib,
)
from gpu_factory import factory
from gpu_lora import lora_steps
from gpu_model import build_model
from gpu_profile import profile_decode
from gpu_run import (
    COPIES_TRIED,
    DEVICE,
    FACTORY_CLIPS,
    STORE,
    TINY,
    WAYS,
    guarded,
    in_budget,
    log,
    sync,
)


def main() -> None:
    from transformers import AutoProcessor

    from v2t_foley.foley_core.backends.base import GenerationParams, GenerationRequest
    from v2t_foley.foley_core.backends.tiny import tiny_model_path
    from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
    from v2t_foley.foley_core.chain import ChainConfig
    from v2t_foley.foley_core.schema import SchemaLimits, identify_schema
    from v2t_foley.foley_core.schema.decoding import max_output_bytes
    from v2t_foley.foley_core.schema.fitting import fit_limits
    from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
    from v2t_foley.foley_core.video import open_video

    count_cudagraph_recordings()
    if not TINY and in_budget("attention"):
        import prefix_attention  # bench/prefix_attention.py, beside this script

        for live, videos in prefix_attention.MIXES:
            guarded(
                "attention",
                lambda live=live, videos=videos: log(**prefix_attention.mix(live, videos), step="attention"),
            )
        if DEVICE == "cuda":
            torch.cuda.empty_cache()  # the slots that fit are counted from the free memory
    work = Path(tempfile.mkdtemp(prefix="foley-gpu-"))
    os.environ.setdefault("FOLEY_CACHE_DIR", str(work / "cache"))
    processor = AutoProcessor.from_pretrained(tiny_model_path("tiny-random"))
    started = time.perf_counter()
    model = build_model(processor)
    sync()
    log(
        step="init",
        s=round(time.perf_counter() - started, 2),
        device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        params_b=round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
    )
    llm = TransformersVideoLLM.from_parts(model, processor, "random-video-llava-7b-shapes", batch_size=32)

    def scene(k: int) -> SceneSpec:
        return SceneSpec(
            duration=10.0, fps=12.0, cuts=(5.0,), motions=((2.0, 4.0),), clicks=(1.0 + 0.1 * k, 6.5), seed=k
        )

    clip = write_scene_video(work / "clip.mp4", scene(0))
    video = open_video(str(clip), max_side=512)
    frames = video.uniform(8)
    # identify's bounds as the chain cuts them to fit the 4,096 positions (prompt + 2,056 video tokens)
    prompt = "List the events."
    limits, cut = fit_limits(
        "identify",
        SchemaLimits(),
        lambda lim: (
            max_output_bytes(identify_schema(video.info.duration, lim)) + 1,
            llm.answer_room(frames, prompt),
        ),
    )
    schema = identify_schema(video.info.duration, limits)
    log(step="limits", identify=limits.__dict__, cut=cut)

    plain: dict[tuple[int, bool], list[str]] = {}  # generate's answers, to compare the fast decoders with

    def generate(
        batch: int,
        constrained: bool,
        new_tokens: int | None,
        decoder: str,
        prefix_store: bool = True,
        opaque: bool = False,
        kernels: bool = True,
        join_together: bool = True,
    ) -> None:
        llm.use_decoder(decoder)  # the fast decoders share the video prefix
        if llm.continuous is not None:
            llm.continuous.prefix_store = prefix_store
            # a switch of either compiles the step anew (the warm-up)
            llm.continuous.opaque_attention = opaque
            llm.continuous.attention_kernels = kernels
            llm.continuous.join_together = join_together  # eager: no compile
        requests = [GenerationRequest(frames, prompt, schema if constrained else None)] * batch
        params = GenerationParams(max_new_tokens=new_tokens)
        compiled_before = compiled_graphs()
        t0 = time.perf_counter()
        if decoder in ("static", "continuous"):  # the same call once: compiles and captures its shape
            llm.generate(requests, params)
        else:
            llm.generate(requests[:1], GenerationParams(max_new_tokens=2))
        sync()
        warm_s = time.perf_counter() - t0
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        graphs, recordings = compiled_graphs(), RECORDINGS[0]
        compiled_before_timed = graphs
        store_steps = llm.continuous.store_steps if llm.continuous is not None else 0
        cont = llm.continuous
        counted = (cont.steps, cont.view_columns, cont.joined_together) if cont is not None else (0, 0, 0)
        shapes = set(llm.continuous.step_shapes) if llm.continuous is not None else set()
        t0 = time.perf_counter()
        out = llm.generate(requests, params)
        sync()
        seconds = time.perf_counter() - t0
        compiled_in_timed_call = compiled_graphs() - graphs  # should be 0: the warm-up compiled it all
        recorded_in_timed_call = RECORDINGS[0] - recordings  # and recorded every (rows, width) it needs
        tokens = sum(o.new_tokens for o in out)
        texts = [o.text for o in out]
        if decoder == "generate":
            plain[(batch, constrained)] = texts
        reference = plain.get((batch, constrained))
        log(
            step="generate",
            decoder=decoder,
            batch=batch,
            constrained=constrained,
            new_tokens=tokens,
            warmup_s=round(warm_s, 1),
            compiled_in_warmup=compiled_before_timed - compiled_before,  # > 0: the warm-up is a compile
            graphs=compiled_graphs(),
            compiled_in_timed_call=compiled_in_timed_call,
            recorded_in_timed_call=recorded_in_timed_call,
            cudagraphs=cudagraph_counters(),
            s=round(seconds, 3),
            tok_s_total=round(tokens / seconds, 1),
            ms_per_step=round(1000 * seconds / max(max(o.new_tokens for o in out), 1), 2),  # prefill included
            same_answers_as_generate=None
            if reference is None
            else sum(a == b for a, b in zip(texts, reference, strict=True)),
            # the rows and columns (length) of the continuous decoder's cache
            slots=None if cont is None else cont.wave_cache.shape[0],
            columns=None if cont is None else cont.wave_cache.shape[1],
            prefix_store_steps=None if llm.continuous is None else llm.continuous.store_steps - store_steps,
            # the own columns a step read (its view's width): K/V bytes a step beside the weights and store
            view_columns_per_step=None
            if cont is None
            else round((cont.view_columns - counted[1]) / max(cont.steps - counted[0], 1)),
            prefix_store=prefix_store if llm.continuous is not None else None,
            opaque_attention=opaque if llm.continuous is not None else None,
            attention_kernels=kernels if llm.continuous is not None else None,
            # how the store's attention ran (the way asked for, unless it failed its check on this card)
            attention_ran=None
            if cont is None
            else WAYS[cont.attention_way()]
            if cont.store_steps > store_steps
            else "copies",
            attention_failed={WAYS[way]: why for way, why in cont.attention_failed.items()} if cont else None,
            join_together=join_together if cont is not None else None,
            # the questions prefilled through the store in join prefills (backends/join_prefill.py)
            joined_together=None if cont is None else cont.joined_together - counted[2],
            new_step_shapes=None if llm.continuous is None else len(llm.continuous.step_shapes - shapes),
            peak_gib=peak_gib(),
        )

    def decodes(decoders: tuple[str, ...]) -> None:
        """Each decoder at batch 1 and 32, constrained and free."""
        for decoder in decoders:
            for batch in (1, 32) if not TINY else (1, 3):
                if not in_budget(f"generate_{decoder}_b{batch}"):
                    continue
                for constrained, new_tokens in (
                    (True, None if not TINY else 16),
                    (False, 128 if not TINY else 16),
                ):
                    name = f"generate_{decoder}_b{batch}_{'constrained' if constrained else 'free'}"
                    if not in_budget(name):
                        continue
                    store = STORE[0] if decoder == "continuous" else True
                    if guarded(
                        name, partial(generate, batch, constrained, new_tokens, decoder, prefix_store=store)
                    ):
                        continue
                    llm.use_decoder("generate")  # whatever failed, the next call starts a fresh decoder
                    retry_name = f"{name}_prefixes_copied"
                    if (
                        decoder == "continuous"
                        and store
                        and not COPIES_TRIED[0]
                        and in_budget(retry_name, needs_s=0 if TINY else 60)
                    ):
                        # once a run: the store is blamed only when copies succeed where it failed (an OOM
                        # fails both); then every later continuous figure is measured with copies
                        COPIES_TRIED[0] = True
                        retry = partial(generate, batch, constrained, new_tokens, decoder, prefix_store=False)
                        STORE[0] = not guarded(retry_name, retry)

    # generate first (the in-code baseline whose answers the fast decoders are compared with), then the
    # continuous decoder (the factory's), whose figures are the targets; the static decoder
    # comes after the factory: a call cut short (a compile takes minutes on a fresh machine) loses
    # the figures that matter least
    decodes(("generate", "continuous"))

    def profiled() -> None:
        b32 = 32 if not TINY else 3
        llm.use_decoder("continuous")
        llm.continuous.prefix_store = STORE[0]
        requests = [GenerationRequest(frames, prompt)] * b32
        # 128 tokens, as the free batch-32 decode line, whose ms a step (its 32 prefills spread over its
        # 128 steps) this is read beside
        params = GenerationParams(max_new_tokens=128 if not TINY else 8)
        llm.generate(requests, params)  # its shapes recorded before the profiler starts
        result = profile_decode(lambda: llm.generate(requests, params))
        log(step="profile", decoder="continuous", batch=b32, constrained=False, **result)

    if in_budget("profile_continuous_b32"):
        guarded("profile_continuous_b32", profiled)
    # every question joining alone, as before join prefills (backends/join_prefill.py): eager, no compile
    b32, tokens = (32, None) if not TINY else (3, 16)
    if in_budget(name := f"generate_continuous_joined_alone_b{b32}_constrained"):
        guarded(name, partial(generate, b32, True, tokens, "continuous", STORE[0], join_together=False))

    config = ChainConfig(timing="measured")  # default limits: the chain cuts them to the context itself

    def chains(runs: tuple[tuple[str, bool, str], ...]) -> None:
        for decoder, share, run in runs:
            if in_budget(f"chain_{decoder}_{run}"):
                guarded(
                    f"chain_{decoder}_{run}",
                    partial(chain_one_clip, llm, video, frames, config, decoder, share, run),
                )

    chains((("continuous", True, "cold"), ("continuous", True, "warm")))

    llm.use_decoder("continuous")
    llm.share_video_prefix = True
    llm.continuous.prefix_store = STORE[0]
    if in_budget("factory"):
        guarded("factory", lambda: factory(work, llm, processor, scene, n_clips=FACTORY_CLIPS))
    llm.model = model  # the registry closed its wrapper after the factory; the weights are the same
    decodes(("static",))
    # the store's attention as small ops (the decoder before fused kernels: 849 tok/s at batch 32 on the
    # H100), then as one opaque operator a layer (`opaque_attention`: PrefixBatch.opaque): each warm-up is its
    # compile (the small ops' took 144-163 s on the H100)
    for variant, options in (("small_ops", {"kernels": False}), ("opaque", {"opaque": True})):
        for batch in (32, 1) if not TINY else (3, 1):
            name = f"generate_continuous_{variant}_b{batch}_constrained"
            if not STORE[0]:
                log(step=name, skipped=True, why="the store failed: copies throughout")
            elif in_budget(name):
                run = partial(generate, batch, True, None if not TINY else 16, "continuous", **options)
                guarded(name, run)
    chains((("generate", False, "warm"),))  # the chain before this engine: slow, and only informative
    # the prefix store's gain on the same card; it compiles its step anew (the release reset dynamo)
    if not STORE[0]:
        log(
            step="generate_continuous_copied_prefix_b32",
            skipped=True,
            why="the store failed: copies throughout",
        )
    elif in_budget("generate_continuous_copied_prefix_b32", needs_s=0 if TINY else 90):
        b32 = 32 if not TINY else 3
        guarded(
            "generate_continuous_copied_prefix_b32",
            lambda: generate(b32, True, None if not TINY else 16, "continuous", prefix_store=False),
        )
    llm.close()  # its cache and compiled steps go before the LoRA step
    if in_budget("lora_step"):
        guarded("lora_step", lambda: lora_steps(model, llm, frames))


if __name__ == "__main__":
    sys.exit(main())
