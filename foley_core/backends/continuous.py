"""Continuous batching: decode slots over one static KV cache; a request takes a slot when one frees.

With fixed batches every row waits for the batch's longest answer, and a new request waits for the
whole batch. Here a batch is `slots` rows of one `StaticCache` that live on across requests:

- a request joins when a slot is free: it is prefilled (alone, backends/solo_prefill.py, where the
  vision tower runs; or, when the prefix store holds its video's prefix, together with the other
  questions that join then, a forward for each group of similar lengths, backends/join_prefill.py)
  and its K/V are copied into its slot from column 0, so it decodes from the next step on (its
  positions are its own: RoPE is in the keys, the column a key sits in does not matter; the slots'
  state: backends/decode_slots.py);
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
earlier rows left in it; backends/wave_cache.py). Greedy only, and only families with one
position per token (static_decode.FAMILIES). Each answer equals `generate` on that request alone,
token for token (tests/test_continuous.py). On CUDA the decode step is compiled once, with CUDA graphs
recorded per shape (static_decode.compile_step).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import xgrammar as xgr
from transformers import StaticCache

from v2t_foley.foley_core.backends import attention_check, prefix_attention
from v2t_foley.foley_core.backends.base import Generation, GenerationRequest
from v2t_foley.foley_core.backends.cache_views import bucket_columns
from v2t_foley.foley_core.backends.constrained import greedy_under_masks
from v2t_foley.foley_core.backends.decode_slots import DecodeSlots, Row
from v2t_foley.foley_core.backends.join_prefill import Tail, prefill_tails, stage
from v2t_foley.foley_core.backends.prefix_store import PREFIX_BUCKET, STORE_ENTRIES, PrefixStore
from v2t_foley.foley_core.backends.solo_prefill import Prefilled, SoloPrefill
from v2t_foley.foley_core.backends.static_decode import (
    LENGTH_BUCKET,
    bucket_batch,
    bucket_length,
    compile_step,
    kv_bytes,
    room_for_caches,
)
from v2t_foley.foley_core.backends.wave_cache import WaveCache
from v2t_foley.foley_core.errors import TransientBackendError


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
        self.wave_cache = WaveCache(self.model, slots)  # held from one wave to the next
        self._grammars = xgr.BatchGrammarMatcher(max_threads="auto")
        self.waves = 0  # waves run, for tests and benchmarks
        self.steps = 0  # decode steps run
        self.row_steps = 0  # live rows of every decode step, summed: over `steps`, how full the slots ran
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

    @property
    def video_prefills(self) -> int:
        """Videos prefilled so far (SoloPrefill.video_prefills): questions that brought frames no stored
        or kept prefix had."""
        return self._prefill.video_prefills

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

    def _attention_failed(self, error: Exception, used: bool) -> TransientBackendError | None:
        """A forward through the store's attention (a decode step, a join prefill) run the `used` way
        raised `error`: that way is not used again, and its questions fail with the transient error
        returned (see attention_check.step_failed). The way the forward ran, not the decoder's way
        now: an earlier forward's failure may have changed that."""
        return attention_check.step_failed(self.attention_failed, used, error)

    def _store_for(self, slots: int, video: tuple[Any, torch.Tensor]) -> PrefixStore | None:
        """The prefix store with an entry for this video's prefix (`PrefixStore.with_room_for`), made
        anew when the one held does not serve it; None when no entry can be had (the request then
        waits for the next wave)."""
        if self.store is None or not self.store.serves(len(video[1])):
            self.store = None  # free the old one first
            self.store = PrefixStore.for_prefix(self.model, slots, len(video[1]))
        store = self.store.with_room_for(*video, slots, self._has_room)
        if store is not None:
            self.store = store
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
        rows: list[Row | None] = []
        held: list[tuple[Ask, Prefilled]] = []  # taken, not fitting this wave: the next wave's first
        try:
            # a first prefix store is made for the first request: its room is kept from the rows
            new_store = stores and stored > 0 and self.store is None
            store_bytes = kv_bytes(self.model, STORE_ENTRIES, stored + PREFIX_BUCKET) if new_store else 0
            slots, length = self.wave_cache.size(need, want, store_bytes)
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
        take: Callable[[], Ask | None],
        rows: list[Row | None],
        held: list[tuple[Ask, Prefilled]],
        length: int,
        stores: bool,
    ) -> None:
        weight = self.head.weight
        cache = self.wave_cache.get(len(rows), length)
        seats = DecodeSlots(rows, cache, length, weight, self.llm.grammars.vocab_size)
        self.waves += 1
        started = False  # a decode step has run in this wave

        def admit(ask: Ask, done: Prefilled) -> None:
            if not self._join(seats, ask, done, stores):
                held.append((ask, done))
            elif started:
                self.late_joins += 1

        if not self._join(seats, first, prefilled, stores):  # cannot happen: the wave was sized for it
            raise RuntimeError("the first request of a wave did not fit it")
        cuda = weight.device.type == "cuda"
        ready = torch.cuda.Event() if cuda else None
        host = torch.empty(len(rows), dtype=torch.long, pin_memory=cuda)
        while True:
            self._take_joins(seats, take, held, admit, stores)
            fed = seats.fed()
            if not fed:
                return
            # slots past the last live one are neither computed nor read (nor are their masks applied);
            # at least two: dynamo compiles a size of 1 as a graph of its own
            reading = min(len(rows), max(2, bucket_batch(fed[-1] + 1)))
            vocab, pad = self.llm.grammars.vocab_size, self.pad_id
            chosen = greedy_under_masks(
                seats.logits[:reading], seats.bitmask[:reading], seats.alive[:reading], pad, vocab
            )
            host[:reading].copy_(chosen, non_blocking=True)
            if ready is not None:
                ready.record()
            # the next step is queued before the host looks at this one's tokens: a row that ends now
            # wastes its lane of that step, and the GPU never waits for the host's grammar work
            self._decode(seats, chosen, reading, fed)
            started = True
            if ready is not None:
                ready.synchronize()
            going: list[int] = []
            for k in fed:
                row = rows[k]
                row.tokens.append(int(host[k]))
                if row.tokens[-1] == self.eos_id or len(row.tokens) >= row.ask.budget:
                    self._finish(row)
                    if row.entry is not None:
                        self.store.leave(row.entry)
                    seats.vacate(k)
                else:
                    going.append(k)
            seats.advance_grammars(going, self._grammars)

    def _join(self, seats: DecodeSlots, ask: Ask, done: Prefilled, stores: bool) -> bool:
        """Seat `ask`, prefilled as `done`, in a free slot; False when it must wait for the next wave:
        the store cannot take its video (a copy of the prefix in its row would widen every step), or
        its own tokens and budget are past the slots' columns (its last token would never be fed)."""
        # no way left to read the store (both failed in this wave): a new row holds its whole prefix
        stores = stores and self.attention_way() is not None
        if done.entry is not None:  # a join prefill's: its entry holds its prefix and counts it
            entry, stored = done.entry, len(done.video[1])
        else:  # its video prefix is read from the store when the store can hold it
            store = self._store_for(len(seats.rows), done.video) if stores and done.video else None
            if stores and done.video and store is None:
                return False
            stored = len(done.video[1]) if store is not None else 0
            if done.length - stored + ask.budget > seats.length:
                return False
            entry = store.place(*done.video, done.kv) if stored else None
            if entry is not None:
                self._prefill.forget(done.video[0])  # the store holds it now: one copy is enough
        schema = ask.request.json_schema
        matcher = xgr.GrammarMatcher(self.llm.grammars.compile(schema)) if schema else None
        own = done.length - stored  # its row holds what follows its stored prefix
        seats.seat(Row(ask, matcher, entry=entry, own=own), done, stored - done.kv_from)
        return True

    def _take_joins(
        self,
        seats: DecodeSlots,
        take: Callable[[], Ask | None],
        held: list[tuple[Ask, Prefilled]],
        admit: Callable[[Ask, Prefilled], None],
        stores: bool,
    ) -> None:
        """Free slots take what waits (until one does not fit: `held`): alone, or prefilled together
        when the store holds their video prefix (join_prefill.py). When this fails, so does the wave,
        and the asks taken and not yet in a row are answered with the error."""
        tails: list[Tail] = []
        ask: Ask | None = None
        # no join prefills once no way is left to read the store (both failed in this wave)
        joins = stores and self.join_together and self.attention_way() is not None
        try:
            while seats.free() > len(tails) and not held:
                if (ask := take()) is None:
                    break
                tail = stage(self.llm, ask, self.store, seats.length) if joins else None
                if tail is not None:
                    tails.append(tail)
                elif (done := self._prefill(ask, self.store)) is not None:  # None: failed, answered
                    admit(ask, done)
            kernels = bool(self.attention_way())
            together = (
                prefill_tails(self.llm, self.store, tails, self._attention_failed, kernels) if tails else []
            )
            for tail, done in zip(tails, together, strict=True):
                if done is not None:  # None: the prefill failed (and answered them)
                    self.joined_together += 1
                    admit(tail.ask, done)
        except Exception as error:
            for waiting in (ask, *(tail.ask for tail in tails)):
                if waiting is not None:
                    waiting.answer(error)
            raise

    def _decode(self, seats: DecodeSlots, chosen: torch.Tensor, reading: int, fed: list[int]) -> None:
        """A decode step of the first `reading` slots, fed `chosen`: their next logits into `seats`."""
        # every slot sees the column it writes, empty ones too (column 0): a fully masked row can turn
        # NaN in bf16 attention kernels, and NaN K/V would reach the next request in the slot
        seats.mask.scatter_(3, seats.write_at.view(-1, 1, 1, 1), 0)
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        # only as wide as the longest live row: K/V columns are most of a 32-row step's bytes
        columns = bucket_columns(max(seats.rows[k].at for k in fed) + 1, seats.length)
        entries = [row.entry if row is not None else None for row in seats.rows[:reading]]
        ways = {"kernels": bool(self.attention_way()), "opaque": self.opaque_attention}
        shared = () if all(e is None for e in entries) else (self.store.batch(entries, **ways),)
        self.store_steps += bool(shared)
        self.view_columns += columns
        self.step_shapes.add((reading, columns, *(shared[0].shape if shared else ())))
        try:
            seats.logits[:reading] = self.step(
                chosen[:, None],
                seats.positions[:reading],
                seats.mask[:reading, :, :, :columns].contiguous(),
                seats.views.get(reading, columns),
                *shared,
            )
        except Exception as error:
            retry = self._attention_failed(error, ways["kernels"]) if shared else None
            if retry is not None:
                raise retry from error
            raise
        seats.stepped()
        self.steps += 1
        self.row_steps += len(fed)

    def _finish(self, row: Row) -> None:
        tokens = row.tokens
        count = tokens.index(self.eos_id) if self.eos_id in tokens else len(tokens)
        with self.llm._tokenizer_lock:  # callers' threads tokenize at the same time
            text = self.llm.tokenizer.decode(tokens[:count], skip_special_tokens=True)
        finished, constrained = count < len(tokens), row.matcher is not None
        row.ask.answer(Generation(text=text, new_tokens=count, finished=finished, constrained=constrained))

    def release(self) -> None:
        """Drop the cache and the kept video prefix (after an out-of-memory error, or to give the
        memory back)."""
        self.wave_cache.drop()
        self._prefill.forget()
        self.store = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
