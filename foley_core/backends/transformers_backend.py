"""Video-LLMs run in-process with Hugging Face transformers: Video-LLaVA (default), Qwen2.5-VL, and
other `AutoModelForImageTextToText` models whose processor takes `videos=`.

Loading is not cached here: foley_core.backends.registry holds the one shared model of a process.
Batches are left-padded; requests with a JSON Schema decode under an xgrammar grammar.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from v2t_foley.foley_core.backends.base import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MODEL,
    Generation,
    GenerationParams,
    GenerationRequest,
    VideoLLM,
)
from v2t_foley.foley_core.backends.constrained import GrammarCache, JsonSchemaLogitsProcessor
from v2t_foley.foley_core.backends.context import ContextWindow, context_window, max_positions
from v2t_foley.foley_core.backends.model_choice import (
    model_location,
    pick_device,
    pick_dtype,
    policy_for_family,
)
from v2t_foley.foley_core.backends.prompt_inputs import PreparedPixels, prepared_inputs
from v2t_foley.foley_core.backends.provenance import resolve_adapter_revision, resolve_model_revision
from v2t_foley.foley_core.backends.video_prefix import continue_inputs, video_prefix
from v2t_foley.foley_core.errors import BackendError, ModelNotFoundError, TransientBackendError
from v2t_foley.foley_core.schema.decoding import max_output_bytes
from v2t_foley.foley_core.video.reader import Frames

log = logging.getLogger(__name__)


class TransformersVideoLLM(VideoLLM):
    """A transformers model and its processor, loaded once."""

    backend = "transformers"
    supports_json_schema = True

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        adapter: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        decoder: str = "generate",
    ) -> None:
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        self.model_id = model
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.batch_size = batch_size
        location = model_location(model)
        try:
            config = AutoConfig.from_pretrained(location, revision=revision)
            self.processor = AutoProcessor.from_pretrained(location, revision=revision)
        except OSError as err:
            raise ModelNotFoundError(
                f"cannot load model {model!r}: {err}. Give a Hub id this machine can download, a local "
                "folder saved with save_pretrained, or 'tiny-random' for the offline test model."
            ) from None
        self.family = config.model_type
        self.model = AutoModelForImageTextToText.from_pretrained(
            location, revision=revision, dtype=self.dtype
        ).to(self.device)
        self.model.eval()
        # resolved after the load: from_pretrained may just have downloaded or moved the Hub ref
        self.revision = resolve_model_revision(model, revision)
        if adapter:
            self._apply_adapter(adapter)
        self._prepare_decoding(config)
        self.use_decoder(decoder)

    def _prepare_decoding(self, config) -> None:
        """Left padding for batches, the grammar compiler, the frame policy."""
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        text_config = getattr(config, "text_config", config)
        self.grammars = GrammarCache(self.tokenizer, vocab_size=text_config.vocab_size)
        self.frame_policy = policy_for_family(self.family)
        self.config = config
        self.max_positions = max_positions(config)  # the language model's context
        self._windows: dict[tuple[int, int, int], ContextWindow] = {}
        # a fast tokenizer must not be entered from two threads at once ("Already borrowed")
        self._tokenizer_lock = threading.Lock()
        # pixel values made in the callers' threads (`prepare`), by frames object
        self.pixels = PreparedPixels(getattr(self.processor, "video_processor", None))
        # one video prefix per batch of questions about the same video (Video-LLaVA; backends/video_prefix.py)
        self.share_video_prefix = getattr(self, "share_video_prefix", False)
        self.static = self.continuous = None

    def use_decoder(self, decoder: str) -> None:
        """`generate` (transformers' loop) or `static` (backends/static_decode.py: greedy requests of
        Video-LLaVA-like families decode there; sampling and other families keep `generate`)."""
        from v2t_foley.foley_core.backends.continuous import ContinuousDecoder
        from v2t_foley.foley_core.backends.static_decode import FAMILIES, StaticDecoder

        current = self.static or self.continuous
        if current is not None and decoder == self.decoder and current.model is self.model:
            return  # keep its caches and compiled graphs
        self.static = self.continuous = None
        self.decoder = "generate"
        if self.family not in FAMILIES or self.model is None:
            return
        self.decoder = decoder
        # the fast decoders continue every question from its video's prefix (the vision tower and the
        # prefix's prefill once per video; the same tokens, tested); `generate` keeps full prompts
        self.share_video_prefix = decoder != "generate"
        compile = self.device.startswith("cuda")
        if decoder == "static":
            self.static = StaticDecoder(
                self.model,
                pad_id=self.tokenizer.pad_token_id,
                eos_id=self.tokenizer.eos_token_id,
                compile=compile,
            )
        elif decoder == "continuous":
            self.continuous = ContinuousDecoder(self, self.batch_size, compile=compile)

    def ask(self, request: GenerationRequest, params: GenerationParams, reply) -> Any:
        """`request` as the continuous decoder takes it (`reply` gets its Generation or its error)."""
        from v2t_foley.foley_core.backends.continuous import Ask

        return Ask(request, self.token_budget([request], params), reply)

    def _generate_continuously(
        self, requests: Sequence[GenerationRequest], params: GenerationParams
    ) -> list[Generation]:
        answers: list[Any] = [None] * len(requests)
        queue = deque(enumerate(requests))

        def take():
            if not queue:
                return None
            k, request = queue.popleft()
            return self.ask(request, params, lambda answer, k=k: answers.__setitem__(k, answer))

        self.continuous.serve(take)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return answers

    @classmethod
    def from_parts(
        cls,
        model,
        processor,
        model_id: str,
        revision: str = "",
        batch_size: int = 8,
        decoder: str = "generate",
    ):
        """Wrap a model already in memory (benchmarks with random weights of real shapes)."""
        llm = cls.__new__(cls)
        llm.model_id, llm.revision, llm.adapter, llm.batch_size = model_id, revision, None, batch_size
        llm.model, llm.processor = model.eval(), processor
        llm.device, llm.dtype = str(next(model.parameters()).device), next(model.parameters()).dtype
        llm.family = model.config.model_type
        llm._prepare_decoding(model.config)
        llm.use_decoder(decoder)
        return llm

    @classmethod
    def for_planning(cls, config, processor, model_id: str = ""):
        """No weights: formats prompts and says what room the context leaves (`answer_room`), so budgets
        can be checked on a real model's config and processor alone. `generate` is not available."""
        llm = cls.__new__(cls)
        llm.model_id, llm.revision, llm.adapter, llm.batch_size = model_id, "", None, 1
        llm.model, llm.processor, llm.device, llm.dtype = None, processor, "cpu", torch.float32
        llm.family = config.model_type
        llm._prepare_decoding(config)
        return llm

    def _apply_adapter(self, adapter: str) -> None:
        from peft import PeftModel

        if not Path(adapter, "adapter_config.json").exists():
            raise ModelNotFoundError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json)")
        with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.model = PeftModel.from_pretrained(self.model, adapter).to(self.device)
        self.model.eval()
        self.adapter = adapter
        self.adapter_revision = resolve_adapter_revision(adapter)

    def close(self) -> None:
        """Drop the weights, so a holder of this wrapper does not keep them in (GPU) memory.

        A compiled decode step goes too. Dynamo keeps compiled code in a process-wide cache on the
        step's code object, not on this model, and on CUDA that code holds its CUDA graphs' memory
        pool: without a reset the pool stays reserved after the model is gone, in the way of the next
        model or of training in the same process. The reset drops every compiled function of the
        process (in a worker, only these steps)."""
        compiled = any(decoder is not None and decoder.compiled for decoder in (self.static, self.continuous))
        self.model = None
        self.static = self.continuous = None  # they hold the model (and their static caches) too
        if compiled:
            torch._dynamo.reset()
            # the pools go when their compiled functions are collected (they were recorded on the
            # batching thread, whose graph state a reset here does not reach)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # prompt formatting -------------------------------------------------------------------------

    def format_prompt(self, prompt: str) -> str:
        """The full text the model reads, with the video placeholder and the chat format."""
        if self.family == "video_llava":
            return f"USER: <video>\n{prompt} ASSISTANT:"
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def context_of(self, frames: Frames) -> ContextWindow:
        """The context with these frames' video in it (from the config and the processor, cached)."""
        height, width = frames.images[0].shape[:2] if len(frames.images) else (0, 0)
        key = (len(frames.images), int(height), int(width))
        if key not in self._windows:
            video_processor = getattr(self.processor, "video_processor", None)
            self._windows[key] = context_window(self.config, *key, video_processor=video_processor)
        return self._windows[key]

    def answer_room(self, frames: Frames, prompt: str) -> int | None:
        """Exact: the tokenizer counts the templated prompt; the video's placeholder token becomes the
        video's tokens (see foley_core.backends.context)."""
        with self._tokenizer_lock:
            ids = self.tokenizer(self.format_prompt(prompt))["input_ids"]
        video = self._video_placeholder_ids()  # once: it asks the tokenizer (was once per token, 2 s a chain)
        placeholders = sum(1 for t in ids if t in video)
        return self.context_of(frames).room(len(ids) - placeholders)

    def _video_placeholder_ids(self) -> set[int]:
        tokens = [getattr(self.processor, "video_token", None), "<video>", "<|video_pad|>"]
        ids = {self.tokenizer.convert_tokens_to_ids(t) for t in tokens if t}
        return {i for i in ids if i is not None and i != self.tokenizer.unk_token_id}

    def prepare(self, requests: Sequence[GenerationRequest]) -> None:
        """Make now, in the calling thread, what the model's thread would otherwise make while its batch
        (every live row, on the continuous decoder) waits: each request's grammar (a new schema
        compiles in 7-18 ms at a 32k vocabulary, bench/grammar_cost.py, and lets other threads run; a
        clip's duration is in its schemas, so most clips bring new ones) and, for Video-LLaVA on the
        continuous decoder, its pixel values (backends/prompt_inputs.py: the decoder's thread then only
        tokenizes the prompt of a request it encodes alone; `generate`'s batches run the processor over
        all of theirs anyway). Callers prepare greedy requests (backends/batching.py)."""
        pixels = self.continuous is not None and self.family == "video_llava"
        for request in requests:
            if request.json_schema:
                self.grammars.compile(request.json_schema)
            if pixels:
                self.pixels.prepare(request.frames)

    def encode(self, requests: Sequence[GenerationRequest], answers: Sequence[str] | None = None) -> dict:
        """Processor inputs for a batch; with `answers`, each answer is appended (for training). One
        request whose frames are prepared is encoded without the processor's run over them."""
        if (
            answers is None
            and len(requests) == 1
            and (ready := prepared_inputs(self, requests[0])) is not None
        ):
            return ready
        with self._tokenizer_lock:
            return self._encode(requests, answers)

    def _encode(self, requests: Sequence[GenerationRequest], answers: Sequence[str] | None = None) -> dict:
        texts = [self.format_prompt(r.prompt) for r in requests]
        if answers is not None:
            eos = self.tokenizer.eos_token or ""
            texts = [f"{t}{a}{eos}" for t, a in zip(texts, answers, strict=True)]
        videos = [r.frames.images for r in requests]
        kwargs: dict[str, Any] = {}
        if self.family.startswith("qwen"):
            kwargs["videos_kwargs"] = {
                "do_sample_frames": False,
                "video_metadata": [_qwen_metadata(r) for r in requests],
            }
        return self.processor(text=texts, videos=videos, padding=True, return_tensors="pt", **kwargs)

    # generation -----------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], params: GenerationParams) -> list[Generation]:
        if self.continuous is not None and params.temperature == 0:
            return self._generate_continuously(requests, params)
        results: list[Generation] = []
        for start in range(0, len(requests), self.batch_size):
            results.extend(self._generate_batch(requests[start : start + self.batch_size], params))
        return results

    def token_budget(self, requests: Sequence[GenerationRequest], params: GenerationParams) -> int:
        """max_new_tokens for a batch: the caller's cap, or the longest answer the schemas allow."""
        if params.max_new_tokens is not None:
            return params.max_new_tokens
        if all(r.json_schema for r in requests):
            # A token is at least one byte, so the byte bound is a token bound; +1 for EOS.
            return max(max_output_bytes(r.json_schema) for r in requests) + 1
        return DEFAULT_MAX_NEW_TOKENS

    def context_cap(self, inputs) -> int:
        """The most new tokens the longest row of a batch can take before it runs past the context."""
        longest = int(inputs["attention_mask"].sum(dim=1).max())  # before any prefix sharing
        return self.max_positions - longest

    @torch.inference_mode()
    def _generate_batch(
        self, requests: Sequence[GenerationRequest], params: GenerationParams
    ) -> list[Generation]:
        inputs = self.encode(requests).to(self.device)
        static = self.static is not None and params.temperature == 0
        if static and len(requests) > 1:
            tokens = inputs["input_ids"].shape[1] + min(
                self.token_budget(requests, params), self.context_cap(inputs)
            )
            if not self.static.fits(len(requests), tokens):  # its static cache would not fit: halves
                half = len(requests) // 2
                return self._generate_batch(requests[:half], params) + self._generate_batch(
                    requests[half:], params
                )
        if "pixel_values_videos" in inputs:
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.dtype)
        shared = None
        if self.share_video_prefix and len({id(r.frames) for r in requests}) == 1:
            shared = video_prefix(self.model, inputs)
            if shared is not None:
                inputs = continue_inputs(inputs, *shared, pad=self.tokenizer.pad_token_id, repeat=not static)
        grammars = [self.grammars.compile(r.json_schema) if r.json_schema else None for r in requests]
        processor = (
            JsonSchemaLogitsProcessor(grammars, self.grammars.vocab_size, pin=self.device.startswith("cuda"))
            if any(grammars)
            else None
        )
        sampling: dict[str, Any] = {"do_sample": False}
        if params.temperature > 0:
            torch.manual_seed(params.seed)
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        cap = self.context_cap(inputs)
        if cap <= 0:
            raise BackendError(
                f"the prompt and video take {self.max_positions - cap} tokens: nothing is left "
                f"of the model's context ({self.max_positions}) for an answer"
            )
        budget = min(self.token_budget(requests, params), cap)
        try:
            if static:
                new = self.static.decode(dict(inputs), budget, processor, prefix=shared)
            else:
                output = self.model.generate(
                    **dict(inputs),
                    max_new_tokens=budget,
                    logits_processor=[processor] if processor else None,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                    **sampling,
                )
                new = output[:, inputs["input_ids"].shape[1] :]
        except torch.OutOfMemoryError as err:
            if self.static is not None:
                self.static.release()  # kept caches would make every retry fail the same way
            raise TransientBackendError(
                f"CUDA out of memory with a batch of {len(requests)}: {err}"
            ) from None
        results = []
        for row in range(len(requests)):
            tokens = new[row]
            ended = (tokens == self.tokenizer.eos_token_id) | (tokens == self.tokenizer.pad_token_id)
            count = int(ended.float().argmax()) if bool(ended.any()) else len(tokens)
            with self._tokenizer_lock:  # other threads tokenize prompts meanwhile
                text = self.tokenizer.decode(tokens[:count], skip_special_tokens=True)
            finished = bool(ended.any())  # pad only ever follows EOS
            results.append(
                Generation(
                    text=text, new_tokens=count, finished=finished, constrained=grammars[row] is not None
                )
            )
        return results


def _qwen_metadata(request: GenerationRequest) -> dict[str, Any]:
    times = request.frames.times
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    fps = (len(times) - 1) / span if span > 0 else 1.0
    return {"fps": fps, "total_num_frames": len(times), "frames_indices": list(range(len(times)))}


def load_transformers_model(
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 8,
    decoder: str = "generate",
) -> TransformersVideoLLM:
    """Load a model (uncached: share one through foley_core.backends.registry)."""
    t0 = time.perf_counter()
    llm = TransformersVideoLLM(
        model,
        revision=revision,
        adapter=adapter,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        decoder=decoder,
    )
    log.info("loaded %s (%s) on %s in %.1f s", model, llm.family, llm.device, time.perf_counter() - t0)
    return llm
