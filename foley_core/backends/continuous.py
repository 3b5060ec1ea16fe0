"""Continuous batching: decode slots over one static KV cache; a request takes a slot when one frees.

With fixed batches every row waits for the batch's longest answer, and a new request waits for the
whole batch. Here a batch is `slots` rows of one `StaticCache` that live on across requests:

- a request joins when a slot is free: it is prefilled (alone, backends/solo_prefill.py, where the
  vision tower runs; or, when the prefix store holds its video's prefix, together with the other
  questions that join then, a forward for each group of similar lengths, backends/join_prefill.py)
  and its K/V are copied into its slot from column 0, so it decodes from the next step on (its
  positions are its own: RoPE is in the keys, the column a key sits in does not matter);
- every decode step writes one column of each row, the row's own next one (`write_at`, kept on the
  device; backends/cache_views.RowWrites), and each row attends only to its own columns through a 4-D
  mask kept on the device. A step reads the columns of the longest live row, bucketed: a row that
  joins late costs the others nothing;
- with shared video prefixes, a row's video prefix goes to the prefix store (backends/prefix_store.py)
  once per video and only what follows it into the row; each step's attention reads an entry once
  for all of its rows (backends/prefix_attention.py). A 32-row step about one clip then reads the
  clip's 1 GB of prefix K/V (Video-LLaVA-7B) once instead of 32 times (plus one empty entry: a step
  reads at least 2). The store starts small and doubles while the GPU has room; when it cannot, a
  request about yet another video waits for the next wave (a copy of its prefix in its row would
  widen every step's view by the video's 2,056 columns);
- a row leaves when it writes EOS or its budget is spent; its answer goes to its caller at once.

A "wave" is one life of the cache, sized for its first request's own tokens and budget (more when
room allows, for longer ones: `_wave`): it ends when no row is live and no waiting request fits (its
own tokens and budget past the cache's columns, or a video the prefix store cannot take); the next
wave runs in the held cache when it is long enough and has as many rows as fit (the masks hide what
earlier rows left in it; `plan_cache` sizes a new one). Greedy only, and only families with one
position per token (static_decode.FAMILIES). Each answer equals `generate` on that request alone,
token for token (tests/test_continuous.py). On CUDA the decode step is compiled once, with CUDA graphs
recorded per shape (static_decode.compile_step).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import xgrammar as xgr
from transformers import StaticCache

from v2t_foley.foley_core.backends import attention_check, prefix_attention
from v2t_foley.foley_core.backends.base import Generation, GenerationRequest
from v2t_foley.foley_core.backends.cache_views import CacheViews, bucket_columns
from v2t_foley.foley_core.backends.constrained import greedy_under_masks
from v2t_foley.foley_core.backends.join_prefill import Tail, prefill_tails, stage
from v2t_foley.foley_core.backends.prefix_store import PREFIX_BUCKET, PrefixStore
from v2t_foley.foley_core.backends.solo_prefill import Prefilled, SoloPrefill
from v2t_foley.foley_core.backends.static_decode import (
    LENGTH_BUCKET,
    bucket_batch,
    bucket_length,
    compile_step,
    kv_bytes,
    kv_shape,
    plan_cache,
    room_for_caches,
)
from v2t_foley.foley_core.errors import TransientBackendError

STORE_ENTRIES = 4  # a new prefix store's entries (1 GB each for Video-LLaVA-7B); it doubles, up to the
# slots, when a video finds every entry read: the store grows with the videos decoded side by side


@dataclass
class Ask:
    """One request as the decoder sees it."""

    request: GenerationRequest
    budget: int  # most new tokens (EOS included), like generate's max_new_tokens
    reply: Callable[[Generation | BaseException], None]  # its caller's: see `answer`
    answered: bool = False

    def answer(self, result: Generation | BaseException) -> None:
        """Hand the caller its answer or its error, once (a later call is ignored)."""
        if not self.answered:
            self.answered = True
            self.reply(result)


@dataclass
class _Row:
    ask: Ask
    prompt_tokens: int
    position: int  # position id of the next token it is fed
    matcher: xgr.GrammarMatcher | None
    tokens: list[int] = field(default_factory=list)
    entry: int | None = None  # its video prefix's entry in the prefix store, when it reads it there
    own: int = 0  # columns of its row that its prompt holds (what follows a stored video prefix)

    @property
    def at(self) -> int:
        """The column of its row that its next decode step writes (on the device: `write_at`)."""
        return self.own + len(self.tokens)


class ContinuousDecoder:
    """Serves asks through `slots` rows of one static cache (see the module docstring)."""

    def __init__(self, llm: Any, slots: int, *, compile: bool = False, prefix_store: bool = True) -> None:
        self.llm = llm
        self.model = llm.model
        self.decoder = self.model.get_decoder()
        self.head = self.model.get_output_embeddings()
        self.slots = slots
        self.pad_id, self.eos_id = llm.tokenizer.pad_token_id, llm.tokenizer.eos_token_id
        self.compiled = compile
        self.step = compile_step(self._step) if compile else self._step
        self.cache: StaticCache | None = None
        self.shape = (0, 0)  # (slots, length) of `cache`
        self._grammars = xgr.BatchGrammarMatcher(max_threads="auto")
        self.waves = 0  # waves run, for tests and benchmarks
        self.steps = 0  # decode steps run
        self.late_joins = 0  # asks that took a slot of a wave that was already decoding
        self.store_steps = 0  # decode steps that read video prefixes from the prefix store
        self.joined_together = 0  # questions prefilled through the store, in join prefills (join_prefill.py)
        self.view_columns = 0  # the columns of its rows' own that each decode step read, summed over steps
        # the decode step's distinct input shapes (rows, columns[, store entries read, grouped queries]):
        # on CUDA each one is a CUDA-graph recording of the one compiled step, seconds and pool memory
        self.step_shapes: set[tuple[int, ...]] = set()
        self._prefill = SoloPrefill(llm)  # requests prefilled alone, the last video's prefix kept
        # video prefixes held once each for the rows that read them (backends/prefix_attention.py);
        # None until a wave shares prefixes
        self.store: PrefixStore | None = None
        self.prefix_store = prefix_store  # False: every row holds a copy of its prefix (for comparisons)
        # True: a compiled step sees the store's attention as one operator a layer (a faster compile;
        # PrefixBatch.opaque), not its small ops
        self.opaque_attention = False
        # True: each part of the store's attention is one fused attention kernel; False: small ops (the
        # reference; PrefixBatch.kernels), unless that way failed its check (`attention_failed`)
        self.attention_kernels = True
        self.join_together = True  # False: every question joins alone (for comparisons)
        self._prefix_attention: bool | None = None  # whether the model's attention can read the store
        # why a way of the store's attention failed its check (True: fused kernels; attention_check.py)
        self.attention_failed: dict[bool, str] = {}
        self._serving = threading.Lock()  # one serve at a time: they share the cache

    def _step(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: StaticCache,
        prefix: prefix_attention.PrefixBatch | None = None,
    ):
        extra = {"shared_prefix": prefix} if prefix is not None else {}
        out = self.decoder(
            input_ids=ids, position_ids=positions, attention_mask=mask, cache=cache, use_cache=True, **extra
        )
        return self.head(out.last_hidden_state[:, -1]).float()

    def _stores_prefixes(self) -> bool:
        """Whether this wave's rows read their video prefixes from the prefix store (shared prefixes on,
        and a model whose attention can read it) rather than from copies in their own rows."""
        if not (self.llm.share_video_prefix and self.prefix_store):
            return False
        if self._prefix_attention is None:
            self._prefix_attention = prefix_attention.enable(self.model)
            if self._prefix_attention:  # a kernel that refuses the calls would fail every decode step
                self.attention_failed = attention_check.failed_ways(self.model)
        return self._prefix_attention and self.attention_way() is not None

    def attention_way(self) -> bool | None:
        """Fused kernels (True), small ops (False) or copies (None): see attention_check.way."""
        return attention_check.way(self.attention_kernels, self.attention_failed)

    def _attention_failed(self, error: Exception, used: bool) -> None:
        """A forward through the store's attention (a decode step, a join prefill) run the `used` way
        raised `error`: that way is not used again (see attention_check.step_failed). The way the
        forward ran, not the decoder's way now: an earlier forward's failure may have changed that."""
        attention_check.step_failed(self.attention_failed, used, error)

    def _store_for(self, slots: int, video: tuple[Any, torch.Tensor]) -> PrefixStore | None:
        """The prefix store with an entry for this video's prefix (its own, or a free one), made when
        there is none (or it is too short for this prefix and no row reads it), doubled up to the
        slots when every entry is read; None when no entry can be had (the request then waits for the
        next wave)."""
        store, prefix = self.store, video[1]
        if store is None or (store.length < len(prefix) and not store.in_use()):
            self.store = None  # free the old one first
            length = -(-len(prefix) // PREFIX_BUCKET) * PREFIX_BUCKET
            self.store = store = PrefixStore.for_model(self.model, min(max(2, slots), STORE_ENTRIES), length)
        if store.can_place(*video):
            return store
        entries = min(max(2, slots), 2 * store.entries)
        if entries <= store.entries or len(prefix) > store.length:
            return None
        if not self._has_room(store.nbytes() // store.entries * entries):
            return None
        self.store = store = store.grown(entries)
        return store

    def _has_room(self, nbytes: int) -> bool:
        """Whether the GPU has room for `nbytes` more (beside what is allocated now)."""
        room = room_for_caches(self.head.weight.device)
        return room is None or room >= nbytes

    @torch.inference_mode()
    def serve(self, take: Callable[[], Ask | None]) -> None:
        """Answer asks from `take` (non-blocking: None when nothing waits) until none is left. A failure
        of the decode step (CUDA out of memory) answers the wave's live rows with it; serving goes on."""
        with self._serving:
            self._serve(take)

    def _serve(self, take: Callable[[], Ask | None]) -> None:
        waiting, prefilled = take(), None
        while waiting is not None:
            prefilled = prefilled or self._prefill(waiting, self.store)
            if prefilled is None:  # it failed alone (and was answered)
                waiting, prefilled = take(), None
                continue
            waiting, prefilled = self._wave(waiting, prefilled, take)

    # a wave ---------------------------------------------------------------------------------------

    def _wave(self, first: Ask, prefilled: Prefilled, take) -> tuple[Ask | None, Prefilled | None]:
        """Run one life of the cache; returns the ask that did not fit (the next wave's first, with
        its prefill), or what `take` gives next."""
        stores = self._stores_prefixes()
        if self.store is not None:
            self.store.reset_users()  # no row is live between waves
        # the columns the first request needs in its own row: what follows its video prefix, when
        # that prefix is read from the store
        stored = len(prefilled.video[1]) if stores and prefilled.video is not None else 0
        own = prefilled.length - stored
        # the columns the first request needs, and those that also let longer requests join
        need = min(self.llm.max_positions, bucket_length(own + first.budget))
        want = min(self.llm.max_positions, bucket_length(own + 2 * first.budget + LENGTH_BUCKET))
        rows: list[_Row | None] = []
        held: list[tuple[Ask, Prefilled]] = []  # taken, not fitting this wave: the next wave's first
        try:
            if self.cache is not None and self.shape[0] >= self.slots and self.shape[1] >= need:
                # the held cache, every row and long enough: same graphs (more columns than `need` would
                # only let more questions join; not worth new recordings)
                slots, length = self.shape
            else:
                # a first prefix store is made for the first request: its room is kept from the rows
                new_store = stores and stored > 0 and self.store is None
                store_bytes = kv_bytes(self.model, STORE_ENTRIES, stored + PREFIX_BUCKET) if new_store else 0
                slots, length = self._plan(need, want, store_bytes)
                if (
                    not new_store
                    and self.cache is not None
                    and self.shape[0] >= slots
                    and self.shape[1] >= need
                ):
                    # as many rows as a new cache would have, and long enough: same graphs (not beside a
                    # store about to be made: the plan's rows may have shrunk to leave it room)
                    slots, length = self.shape
            if slots < 1:
                raise torch.OutOfMemoryError(f"no room for one decode slot of {length} positions")
            rows.extend([None] * slots)
            self._run_wave(first, prefilled, take, rows, held, length, stores)
        except Exception as error:
            if isinstance(error, torch.OutOfMemoryError):
                self.release()
                error = TransientBackendError(f"CUDA out of memory with {len(rows)} decode slots: {error}")
            for ask, _ in held:  # it never started: it fails with the wave rather than wait forever
                ask.answer(error)
            held.clear()
            first.answer(error)  # when it failed before it joined (else it is answered already)
            for row in rows:
                if row is not None:
                    row.ask.answer(error)
        return held[0] if held else (take(), None)

    def _run_wave(
        self,
        first: Ask,
        prefilled: Prefilled,
        take,
        rows: list[_Row | None],
        held: list,
        length: int,
        stores: bool,
    ) -> None:
        device = self.head.weight.device
        slots = len(rows)
        cache = self._cache(slots, length)
        write_at = torch.zeros(slots, dtype=torch.long, device=device)  # each row's next column
        # a step reads the live slots' rows and the columns the longest of them wrote
        views = CacheViews(cache, write_at)
        self.waves += 1
        masked = torch.finfo(self.head.weight.dtype).min
        mask = torch.full((slots, 1, 1, length), masked, dtype=self.head.weight.dtype, device=device)
        positions = torch.zeros((slots, 1), dtype=torch.long, device=device)
        alive = torch.zeros(slots, dtype=torch.bool, device=device)  # on the device: no host copy a step
        logits = torch.zeros((slots, self.head.weight.shape[0]), dtype=torch.float32, device=device)
        bitmask = xgr.allocate_token_bitmask(slots, self.llm.grammars.vocab_size)
        if device.type == "cuda":
            bitmask = bitmask.pin_memory()

        def join(ask: Ask, done: Prefilled) -> bool:
            if done.entry is not None:  # a join prefill's: its entry holds its prefix and counts it
                entry, stored = done.entry, len(done.video[1])
            else:  # its video prefix is read from the store when the store can hold it
                store = self._store_for(slots, done.video) if stores and done.video else None
                if stores and done.video and store is None:  # a copy would widen every step: next wave
                    return False
                stored = len(done.video[1]) if store is not None else 0
                if done.length - stored + ask.budget > length:  # its last token is never fed
                    return False
                entry = store.place(*done.video, done.kv) if stored else None
                if entry is not None:
                    self._prefill.forget(done.video[0])  # the store holds it now: one copy is enough
            own, skip = done.length - stored, stored - done.kv_from  # its row holds the rest
            slot = rows.index(None)
            for target, source in zip(cache.layers, done.kv.layers, strict=True):
                target.keys[slot, :, :own] = source.keys[done.row, :, skip : skip + own]
                target.values[slot, :, :own] = source.values[done.row, :, skip : skip + own]
            mask[slot] = masked
            mask[slot, 0, 0, :own] = 0
            schema = ask.request.json_schema
            matcher = xgr.GrammarMatcher(self.llm.grammars.compile(schema)) if schema else None
            rows[slot] = _Row(ask, done.length, done.length, matcher, entry=entry, own=own)
            positions[slot, 0] = done.length
            write_at[slot] = own
            alive[slot] = True
            logits[slot] = done.logits
            if matcher is None:
                bitmask[slot] = -1  # every token allowed
            elif not matcher.is_terminated():
                matcher.fill_next_token_bitmask(bitmask, slot)
            return True

        def admit(ask: Ask, done: Prefilled) -> None:
            if not join(ask, done):
                held.append((ask, done))
            elif started:
                self.late_joins += 1

        if not join(first, prefilled):  # cannot happen: the wave was sized for it
            raise RuntimeError("the first request of a wave did not fit it")
        started = False  # a decode step has run in this wave
        ready = torch.cuda.Event() if device.type == "cuda" else None
        host = torch.empty(slots, dtype=torch.long, pin_memory=device.type == "cuda")
        while True:
            # free slots take what waits: alone, or prefilled together when the store holds their prefix
            tails: list[Tail] = []
            ask: Ask | None = None
            try:
                while rows.count(None) > len(tails) and not held:
                    if (ask := take()) is None:
                        break
                    tail = stage(self.llm, ask, self.store, length) if stores and self.join_together else None
                    if tail is not None:
                        tails.append(tail)
                    elif (done := self._prefill(ask, self.store)) is not None:  # None: failed, answered
                        admit(ask, done)
                kernels = bool(self.attention_way())
                failed = lambda error, kernels=kernels: self._attention_failed(error, kernels)  # noqa: E731
                together = prefill_tails(self.llm, self.store, tails, failed, kernels) if tails else []
                for tail, done in zip(tails, together, strict=True):
                    if done is not None:  # None: the prefill failed (and answered them)
                        self.joined_together += 1
                        admit(tail.ask, done)
            except Exception as error:  # the wave fails: so do the asks taken and not yet in a row
                for waiting in (ask, *(tail.ask for tail in tails)):
                    if waiting is not None:
                        waiting.answer(error)
                raise
            fed = [k for k, row in enumerate(rows) if row is not None]
            if not fed:
                return
            # slots past the last live one are neither computed nor read (nor are their masks applied);
            # at least two: dynamo compiles a size of 1 as a graph of its own
            reading = min(slots, max(2, bucket_batch(fed[-1] + 1)))
            vocab, pad = self.llm.grammars.vocab_size, self.pad_id
            chosen = greedy_under_masks(logits[:reading], bitmask[:reading], alive[:reading], pad, vocab)
            host[:reading].copy_(chosen, non_blocking=True)
            if ready is not None:
                ready.record()
            # the next step is queued before the host looks at this one's tokens: a row that ends now
            # wastes its lane of that step, and the GPU never waits for the host's grammar work
            # every slot sees the column it writes, empty ones too (column 0): a fully masked row can
            # turn NaN in bf16 attention kernels, and NaN K/V would reach the next request in the slot
            mask.scatter_(3, write_at.view(slots, 1, 1, 1), 0)
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()
            # only as wide as the longest live row: K/V columns are most of a 32-row step's bytes
            columns = bucket_columns(max(rows[k].at for k in fed) + 1, length)
            entries = [row.entry if row is not None else None for row in rows[:reading]]
            ways = {"kernels": bool(self.attention_way()), "opaque": self.opaque_attention}
            shared = () if all(e is None for e in entries) else (self.store.batch(entries, **ways),)
            self.store_steps += bool(shared)
            self.view_columns += columns
            self.step_shapes.add((reading, columns, *(shared[0].shape if shared else ())))
            try:
                logits[:reading] = self.step(
                    chosen[:, None],
                    positions[:reading],
                    mask[:reading, :, :, :columns].contiguous(),
                    views.get(reading, columns),
                    *shared,
                )
            except Exception as error:
                if shared:
                    self._attention_failed(error, ways["kernels"])
                raise
            positions += alive[:, None].long()
            write_at += alive.long()
            started = True
            self.steps += 1
            if ready is not None:
                ready.synchronize()
            going: list[int] = []
            for k in fed:
                row = rows[k]
                token = int(host[k])
                row.tokens.append(token)
                if token == self.eos_id or len(row.tokens) >= row.ask.budget:
                    self._finish(row)
                    if row.entry is not None:
                        self.store.leave(row.entry)
                    rows[k] = None
                    alive[k] = False
                    mask[k] = masked
                    write_at[k] = 0
                else:
                    going.append(k)
            grammar = [k for k in going if rows[k].matcher is not None]
            if grammar:  # the rows' matchers advance and fill their masks together, in xgrammar's threads
                matchers = [rows[k].matcher for k in grammar]
                xgr.BatchGrammarMatcher.batch_accept_token(matchers, [rows[k].tokens[-1] for k in grammar])
                self._grammars.batch_fill_next_token_bitmask(matchers, bitmask, indices=grammar)

    def _finish(self, row: _Row) -> None:
        tokens = row.tokens
        count = tokens.index(self.eos_id) if self.eos_id in tokens else len(tokens)
        with self.llm._tokenizer_lock:  # callers' threads tokenize at the same time
            text = self.llm.tokenizer.decode(tokens[:count], skip_special_tokens=True)
        finished, constrained = count < len(tokens), row.matcher is not None
        row.ask.answer(Generation(text=text, new_tokens=count, finished=finished, constrained=constrained))

    def _plan(self, need: int, want: int, kept: int = 0) -> tuple[int, int]:
        """(rows, columns) of a new cache: see `plan_cache`; `kept`: bytes of a prefix store about to
        be made; the held cache's bytes count as room, since the new one replaces it."""
        held = kv_bytes(self.model, *self.shape) if self.cache is not None else 0
        room = room_for_caches(self.head.weight.device, held)
        per_column = kv_bytes(self.model, 1, 1)
        return plan_cache(None if room is None else max(room - kept, 0), per_column, self.slots, need, want)

    def release(self) -> None:
        """Drop the cache and the kept video prefix (after an out-of-memory error, or to give the
        memory back)."""
        self.cache = None
        self._prefill.forget()
        self.store = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _cache(self, slots: int, length: int) -> StaticCache:
        if self.cache is None or self.shape != (slots, length):
            self.shape = (slots, length)
            self.cache = None  # free the old one first
            self.cache = StaticCache(config=self.model.config, max_cache_len=length)
            _layers, heads, head_dim = kv_shape(self.model)
            weight = self.head.weight
            self.cache.early_initialization(slots, heads, head_dim, weight.dtype, weight.device)
        return self.cache  # reused as it is: each row's mask hides what earlier rows left in it
