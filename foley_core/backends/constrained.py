"""JSON Schema constrained decoding for transformers' generate, with xgrammar.

One grammar matcher per batch row; rows without a schema decode freely. Grammars are compiled once per
(tokenizer, schema) and cached, because compiling costs far more than masking.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import torch
import xgrammar as xgr
from transformers import LogitsProcessor

GRAMMARS_KEPT = 256  # compiled grammars a model keeps, the most recently used


class GrammarCache:
    """Compiles JSON Schemas for one tokenizer, keeping the compiled grammars."""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        # xgrammar's own cache off: it has no bound, and nearly every clip brings new schemas (its
        # duration is in them) to a process that may serve a whole build; the lru_cache bounds ours
        # (256 grammars of 0.3-0.8 MB each at a 32k vocabulary: bench/grammar_cost.py)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=False)
        self.vocab_size = vocab_size
        self._compile = lru_cache(maxsize=GRAMMARS_KEPT)(self._compile_uncached)

    def _compile_uncached(self, schema_json: str) -> xgr.CompiledGrammar:
        # Compact JSON with no free whitespace: bounded output, fewer tokens.
        return self.compiler.compile_json_schema(schema_json, any_whitespace=False, separators=(",", ":"))

    def compile(self, schema: dict[str, Any]) -> xgr.CompiledGrammar:
        # Not sort_keys: property order is the order the model writes the fields in.
        return self._compile(json.dumps(schema))


class JsonSchemaLogitsProcessor(LogitsProcessor):
    """Masks every token a row's grammar forbids. Use a new instance for each `generate` call.

    The rows' matchers advance and fill their masks together in xgrammar's thread pool
    (BatchGrammarMatcher): at batch 32 on Video-LLaVA's 32k vocabulary a Python loop over rows cost
    about 40 ms a decoding step (measured on an H200), a large share of the step.
    """

    def __init__(
        self, grammars: list[xgr.CompiledGrammar | None], vocab_size: int, pin: bool = False
    ) -> None:
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.vocab_size = vocab_size
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        if pin:
            self.bitmask = self.bitmask.pin_memory()
        self.batch = xgr.BatchGrammarMatcher(max_threads="auto")
        self.started = False

    def _active(self) -> list[int]:
        return [row for row, m in enumerate(self.matchers) if m is not None and not m.is_terminated()]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.advance([int(t) for t in input_ids[:, -1].tolist()] if self.started else None)
        return self.apply(scores)

    def advance(self, tokens: list[int] | None) -> None:
        """Each live row accepts its last token (None: the first step, nothing yet), then the bitmask
        for the next step is filled (on the host; `StaticDecoder` does this while the GPU runs)."""
        active = self._active()
        if tokens is not None and active:
            xgr.BatchGrammarMatcher.batch_accept_token(
                [self.matchers[r] for r in active], [tokens[r] for r in active]
            )
            active = self._active()
        self.started = True
        xgr.reset_token_bitmask(self.bitmask)
        if active:
            self.batch.batch_fill_next_token_bitmask(
                [self.matchers[r] for r in active], self.bitmask, indices=active
            )

    def apply(self, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Mask `scores` (its first rows are the grammar's rows; rows past them are left alone)."""
        rows = len(self.matchers)
        # The model's logits may be wider than the tokenizer's vocabulary (padding); those columns
        # are outside the bitmask and must never be chosen under a grammar.
        width = min(scores.shape[-1], self.vocab_size)
        constrained = scores[:rows, :width]
        if scores.device.type == "cuda":
            xgr.apply_token_bitmask_inplace(constrained, self.bitmask.to(scores.device, non_blocking=True))
        else:
            masked = constrained.float().cpu()
            xgr.apply_token_bitmask_inplace(masked, self.bitmask)
            scores[:rows, :width] = masked.to(scores.dtype)
        if scores.shape[-1] > width:
            grammar_rows = [i for i, m in enumerate(self.matchers) if m is not None]
            scores[grammar_rows, width:] = float("-inf")
        return scores


def greedy_under_masks(
    logits: torch.Tensor, bitmask: torch.Tensor, alive: torch.Tensor, pad_id: int, vocab_size: int
) -> torch.Tensor:
    """Each live row's greedy token under its xgrammar `bitmask` row (a free row's allows everything),
    `pad_id` for the others; `logits` [rows, vocab] is masked in place. No host copy: on CUDA the masks
    go up from (pinned) host memory without a wait. Columns past the tokenizer's `vocab_size` (a
    model's padding) are never chosen."""
    width = min(logits.shape[-1], vocab_size)
    if logits.device.type == "cuda":
        xgr.apply_token_bitmask_inplace(logits[:, :width], bitmask.to(logits.device, non_blocking=True))
    else:
        allowed = logits[:, :width].contiguous()
        xgr.apply_token_bitmask_inplace(allowed, bitmask)
        logits[:, :width] = allowed
    if logits.shape[-1] > width:
        logits[:, width:] = float("-inf")
    return logits.argmax(-1).masked_fill(~alive, pad_id)
