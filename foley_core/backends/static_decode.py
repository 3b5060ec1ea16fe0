"""Greedy decoding with a static KV cache and one host sync per step: the GPU fast path.

`model.generate` spent 67-74 ms a decode step on Video-LLaVA-7B at batch 1 and at batch 32 alike
(bench/results, H200): the step was bound by the host (Python, kernel launches, a sync in the
grammar processor), not by the GPU. This loop removes that overhead:

- one prefill (the vision tower runs here) into a `StaticCache` of fixed shape: the batch rounded up
  to a power of two and the length rounded up to `LENGTH_BUCKET`, so shapes repeat across calls;
- each decode step is the language model on one token per row, reading the cache columns written so
  far (backends/cache_views.py) through its own 4-D mask; on CUDA `torch.compile(mode="reduce-overhead")`
  compiles it once with rows and columns dynamic and replays it as a CUDA graph recorded per shape;
- the grammar's bitmask for step t+1 is filled on the CPU while the GPU computes step t+1's logits
  (xgrammar's batch matcher), then applied on the device; the one sync per step is the copy of the
  chosen tokens to the host, which waits for the argmax, not for the next forward.

It answers exactly what `generate` answers (greedy, token for token; tests/test_static_decode.py).
Greedy only, and only families whose positions are one index per token (Video-LLaVA, LLaVA):
`TransformersVideoLLM` uses `generate` for sampling and for Qwen2.5-VL's 3-D positions.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from transformers import StaticCache

from v2t_foley.foley_core.backends.cache_views import CacheViews, bucket_columns
from v2t_foley.foley_core.backends.constrained import JsonSchemaLogitsProcessor

LENGTH_BUCKET = 512  # cache lengths are multiples of this: few shapes, few compiled graphs
FAMILIES = ("video_llava",)  # 1-D positions, and a prefill that takes only `pixel_values_videos`
KEEP_CACHES = 1  # static caches kept for reuse: each holds batch x length x layers of K/V (Video-LLaVA-7B
# in bf16: 0.5 MB a position a row, so 32 rows x 4,096 positions are 64 GB)
MEMORY_HEADROOM = 0.85  # a cache may take this share of the GPU memory free for it


def compile_step(step: Any) -> Any:
    """`step(ids, positions, mask, cache, *extra)` compiled for CUDA graphs, with its rows and its mask's
    columns marked dynamic from the first call (`extra`: the continuous decoder's prefix-store batch,
    which marks its own dimensions): a step's shape changes with the rows it computes and the cache
    columns it reads (backends/cache_views.py), and compiling each shape anew costs minutes on a 7B
    model. Dynamo then compiles one graph for every shape (a second where a size is 1, which it
    specializes), and CUDA graphs record each shape once, a replay's cost. Dynamo's default of 8
    compiled shapes per function, past which it silently runs eagerly, is raised as a safety net."""
    import torch._dynamo.config as dynamo

    dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
    compiled = torch.compile(step, mode="reduce-overhead")

    def run(
        ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any, *extra: Any
    ) -> torch.Tensor:
        for tensor in (ids, positions, mask):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        torch._dynamo.maybe_mark_dynamic(mask, mask.dim() - 1)
        return compiled(ids, positions, mask, cache, *extra)

    return run


def bucket_batch(n: int) -> int:
    """The batch a static cache is made for: the next power of two."""
    return 1 << max(n - 1, 0).bit_length()


def bucket_length(n: int) -> int:
    return -(-n // LENGTH_BUCKET) * LENGTH_BUCKET


def kv_shape(model: Any) -> tuple[int, int, int]:
    """(layers, K/V heads, head dim) of `model`'s language model: a position's K/V in a cache."""
    text = model.config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_hidden_layers, heads, head_dim


def kv_bytes(model: Any, rows: int, length: int) -> int:
    """Bytes of a static cache of `rows` x `length` positions for `model`'s language model."""
    layers, heads, head_dim = kv_shape(model)
    itemsize = next(model.parameters()).element_size()
    return 2 * layers * heads * head_dim * itemsize * rows * length


def room_for_caches(device: torch.device, held: int = 0) -> int | None:
    """Bytes a new static cache may take on `device` (`held`: bytes of caches it would replace); None
    when the device has no such limit (CPU)."""
    if device.type != "cuda":
        return None
    # blocks the allocator keeps but no tensor uses (an earlier, larger batch's activations, say) are
    # not free to the driver: without handing them back, a cache made right after a big batch got 2 rows
    # of 32 on the H100. It syncs: the decoders ask only when they plan a new cache or store
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(device)
    return int((free + held) * MEMORY_HEADROOM)


def plan_cache(room: int | None, per_column: int, slots: int, need: int, want: int) -> tuple[int, int]:
    """(rows, columns) of a wave's cache in `room` bytes (None: no limit), `per_column` bytes a row's
    column: `slots` rows of `want` columns when they fit; else as many rows as fit with `need` columns
    (at most `slots`), each as long as the room then allows (down to a multiple of LENGTH_BUCKET, at most
    `want`, at least `need`). Rows come first: each one decodes a request at the cost of one step,
    while a column past `need` only lets a later request join the wave. (0, need) when no row fits."""
    want = max(want, need)
    if room is None or slots * want * per_column <= room:
        return slots, want
    rows = min(slots, room // (per_column * need))
    if rows < 1:
        return 0, need
    columns = room // (per_column * rows) // LENGTH_BUCKET * LENGTH_BUCKET
    return rows, max(need, min(want, columns))


class StaticDecoder:
    """Greedy decoding of one model with static caches; `compile` captures the decode step (CUDA)."""

    def __init__(self, model: Any, *, pad_id: int, eos_id: int, compile: bool = False) -> None:
        self.model = model
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.pad_id, self.eos_id = pad_id, eos_id
        self.compiled = compile
        # not fullgraph: a break inside transformers' mask code costs a little, not the whole path
        self.step = compile_step(self._step) if compile else self._step
        self.caches: OrderedDict[tuple[int, int], StaticCache] = OrderedDict()

    def fits(self, rows: int, tokens: int) -> bool:
        """Whether a batch of `rows` with `tokens` positions (prompt + budget) has room for its cache."""
        device = self.head.weight.device
        held = sum(kv_bytes(self.model, b, n) for b, n in self.caches)
        room = room_for_caches(device, held)
        return room is None or kv_bytes(self.model, bucket_batch(rows), bucket_length(tokens)) <= room

    def release(self) -> None:
        """Drop the kept caches (after an out-of-memory error, or to give the memory back)."""
        self.caches.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _step(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: StaticCache):
        out = self.decoder(
            input_ids=ids, position_ids=positions, attention_mask=mask, cache=cache, use_cache=True
        )
        return self.head(out.last_hidden_state[:, -1]).float()

    def _cache(self, batch: int, length: int) -> StaticCache:
        key = (batch, length)
        cache = self.caches.pop(key, None)
        if cache is None:
            while len(self.caches) >= KEEP_CACHES:
                self.caches.popitem(last=False)
            cache = StaticCache(config=self.model.config, max_cache_len=length)
        else:
            cache.reset()
        self.caches[key] = cache
        return cache

    @torch.inference_mode()
    def decode(
        self,
        inputs: dict[str, Any],
        budget: int,
        grammars: JsonSchemaLogitsProcessor | None,
        prefix: tuple[int, Any] | None = None,
    ) -> torch.Tensor:
        """New tokens [rows, steps] (pad after each row's EOS), as greedy `generate` would write them.

        `inputs`: the processor's left-padded batch; `prefix`: (P, a batch-1 cache of the first P
        tokens that every row shares, from `video_prefix.video_prefix`), whose rows then continue from
        a copy of it (`inputs` laid out as `video_prefix.continue_inputs` makes them).
        """
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        rows, prompt = ids.shape
        batch, length = bucket_batch(rows), bucket_length(prompt + budget)
        if batch > rows:  # fill the bucket with copies of the last row; their answers are dropped
            extra = batch - rows
            ids = torch.cat([ids, ids[-1:].expand(extra, -1)])
            mask = torch.cat([mask, mask[-1:].expand(extra, -1)])
        full_mask = torch.zeros((batch, length), dtype=mask.dtype, device=mask.device)
        full_mask[:, :prompt] = mask
        full_mask[:, prompt:] = 1  # later slots are filled as decoding goes (and causally masked before)
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
        cache = self._cache(batch, length)
        logits = self._prefill(inputs, ids, positions, full_mask, cache, batch, prefix)
        views = CacheViews(cache)  # each step reads the positions written so far, not the whole cache
        # the decode steps' mask, additive and 4-D (transformers uses it as it is, so no mask is built
        # per step and the cache's length is no constant in the compiled graph): the prompt's tokens,
        # then each column as it is written
        dtype = self.head.weight.dtype
        attend = torch.full((batch, 1, 1, length), torch.finfo(dtype).min, dtype=dtype, device=ids.device)
        attend[:, 0, 0, :prompt].masked_fill_(mask.bool(), 0)
        # contiguous: at batch 1 a strided slice would make dynamo recompile for every prompt length
        last = positions[:, -1:].clone(memory_format=torch.contiguous_format)

        tokens = torch.full((batch, budget), self.pad_id, dtype=torch.long, device=ids.device)
        host = torch.empty(batch, dtype=torch.long, pin_memory=ids.device.type == "cuda")
        done = torch.zeros(batch, dtype=torch.bool)  # on the host: the stop test
        done[rows:] = True  # the bucket's filler rows never hold decoding up
        ended = done.to(ids.device)  # on the device: which rows write pad (no host copy per step)
        if grammars is not None:
            grammars.advance(None)
        ready = torch.cuda.Event() if ids.device.type == "cuda" else None
        steps = 0
        for step in range(budget):
            if grammars is not None:
                grammars.apply(logits)
            chosen = logits.argmax(-1).masked_fill(ended, self.pad_id)
            ended |= chosen == self.eos_id
            tokens[:, step] = chosen
            steps = step + 1
            host.copy_(chosen, non_blocking=True)
            if ready is not None:
                ready.record()
            if step + 1 < budget:  # the next forward is queued before the host waits for this token
                last += 1
                if self.compiled:  # each replay's outputs are new; the last ones are no longer read
                    torch.compiler.cudagraph_mark_step_begin()
                # this token is written at column prompt + step: the step reads columns up to it
                attend[:, 0, 0, prompt + step] = 0
                columns = bucket_columns(prompt + step + 1, length)
                step_mask = attend[..., :columns].contiguous()
                logits = self.step(chosen[:, None], last, step_mask, views.get(batch, columns))
            if ready is not None:
                ready.synchronize()
            picked = host.tolist()
            if grammars is not None:
                grammars.advance([picked[r] for r in range(len(grammars.matchers))])
            done |= host == self.eos_id
            if bool(done.all()):
                break
        return tokens[:rows, :steps]

    def _prefill(self, inputs, ids, positions, full_mask, cache, batch, prefix) -> torch.Tensor:
        if prefix is None:
            extra: dict[str, Any] = {}
            if "pixel_values_videos" in inputs:
                pixels = inputs["pixel_values_videos"]
                extra["pixel_values_videos"] = torch.cat(
                    [pixels, pixels[-1:].expand(batch - len(pixels), *pixels.shape[1:])]
                )
            out = self.model(
                input_ids=ids,
                attention_mask=full_mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
                **extra,
            )
            return out.logits[:, -1].float()
        length, shared = prefix
        cache.early_initialization(
            batch,
            shared.layers[0].keys.shape[1],
            shared.layers[0].keys.shape[-1],
            shared.layers[0].keys.dtype,
            shared.layers[0].keys.device,
        )
        for layer, source in zip(cache.layers, shared.layers, strict=True):
            layer.keys[:, :, :length] = source.keys[:, :, :length]
            layer.values[:, :, :length] = source.values[:, :, :length]
            layer.cumulative_length.fill_(length)
        out = self.decoder(
            input_ids=ids[:, length:],
            position_ids=positions[:, length:],
            attention_mask=full_mask,
            cache=cache,
            use_cache=True,
        )
        return self.head(out.last_hidden_state[:, -1]).float()
