"""Questions about videos whose prefixes the prefix store holds, prefilled together in a forward.

A request that joins the continuous decoder alone (backends/solo_prefill.py) costs a run of the
processor over its frames (10.7 ms for 8 frames on this workplace's CPU; tokenizing the text alone
takes 0.1 ms), a private copy of its video prefix's K/V (1 GB for Video-LLaVA-7B) and a forward of
the language model that reads all of its weights (13.4 GB) for a few dozen tokens. At batch 32 on the
H100 the 32 questions' prefills were, by an estimate from two of its lines, about 1 s of a 2.15 s wave
(bench/results/README.md). Here the questions whose video prefix is already in the store skip all
three:

- `stage`: the prompt's ids come from the tokenizer alone (backends/prompt_inputs.prompt_ids), the
  video placeholder expanded to the video's tokens (`context_of`; the store's own comparison of the
  ids with the entry's then confirms the prefix), and the entry gains a user at once, so that no
  other request takes its place before the forward;
- `prefill_tails`: a forward over the staged questions' tokens after their prefixes, right-padded to
  a common width, each row attending to its entry's prefix in the store and to its own tokens,
  causally (prefix_attention.py with a question's tokens per row); a few forwards when the questions'
  lengths differ so much that padding them to the longest would cost more than a forward more
  (`forwards`). Only those tokens' K/V are made; the decoder copies them into the rows' slots.

The first question about a video still goes alone: its vision tower and prefix prefill run there, and
the store takes the prefix when it joins. Each answer equals `generate` on that request alone, token
for token (tests/test_continuous.py, tests/test_join_prefill.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from transformers import DynamicCache

from v2t_foley.foley_core.backends.prefix_store import PrefixStore
from v2t_foley.foley_core.backends.prompt_inputs import prompt_ids
from v2t_foley.foley_core.backends.solo_prefill import Prefilled
from v2t_foley.foley_core.errors import TransientBackendError

if TYPE_CHECKING:
    from v2t_foley.foley_core.backends.continuous import Ask

TAIL_BUCKET = 16  # a join prefill's width, rounded up to this: its own-columns mask is as wide as its
# keys, and CUDA's memory-efficient attention reads an additive mask only in rows aligned to 16 bytes
# (8 bf16 values; PyTorch's SDPA pads to 16 values); little more, since padding is computed for nothing

# a join prefill's padding is computed for nothing, and a forward more costs reading the language
# model's weights once more: on Video-LLaVA-7B 13.4 GB at 3.35 TB/s is 4.0 ms, the compute of some 210
# tokens at 13.4 GFLOP a token and 700 TFLOP/s (an H100's figures, by arithmetic, not measured). So a
# forward may carry up to this much padding before its questions are split into two
PAD_TOKENS = 256


class Tail(NamedTuple):
    """A request whose video prefix is in the prefix store, ready for `prefill_tails`."""

    ask: Ask
    ids: torch.Tensor  # the prompt's token ids, on the host
    entry: int  # the store's entry holding ids[:stored] (this request is counted among its users)
    stored: int  # the prefix's tokens


def stage(llm: Any, ask: Ask, store: PrefixStore | None, columns: int) -> Tail | None:
    """`ask` as a `Tail` when the store holds its video prefix and its own tokens and budget fit a
    row of `columns`; None otherwise (it then goes alone, which also reports what is wrong with it)."""
    if store is None or ask.budget < 1 or llm.model.config.model_type != "video_llava":
        return None
    frames = ask.request.frames
    if not store.holds(frames):  # no tokenizing for a video it does not hold
        return None
    ids = prompt_ids(llm, ask.request.prompt, llm.context_of(frames).video_tokens)
    entry = store.find(frames, ids) if ids is not None else None
    if entry is None or len(ids) + 1 > llm.max_positions:
        return None
    budget = min(ask.budget, llm.max_positions - len(ids))  # as generate's cap
    stored = len(store.held[entry].ids)
    if len(ids) - stored + budget > columns:  # its last token would never be fed: the next wave
        return None
    ask.budget = budget
    store.use(entry)
    return Tail(ask, ids, entry, stored)


def prefill_tails(
    llm: Any,
    store: PrefixStore,
    tails: list[Tail],
    failed: Callable[[Exception, bool], Exception | None] | None = None,
    kernels: bool = True,
) -> list[Prefilled | None]:
    """Each tail's tokens after its prefix, prefilled together (see the module docstring), in as few
    forwards as keep the padding small (`forwards`): a `Prefilled` per tail, in order, whose `kv` row
    `row` holds positions [stored, length) from column 0. When a forward fails, None for each of its
    tails, each of them answered with the error and gone from its entry; the other forwards stand.
    `failed` is told the error and the way it ran (`kernels`: the store's attention as fused kernels,
    or small ops), and may give the error to answer with instead (a transient one: they go again)."""
    done: list[Prefilled | None] = [None] * len(tails)
    for group in forwards([len(t.ids) - t.stored for t in tails]):
        part = [tails[k] for k in group]
        try:
            made = _forward(llm, store, part, kernels)
        except Exception as error:  # these requests' failure, not the wave's
            if isinstance(error, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
                error = TransientBackendError(f"CUDA out of memory in a join prefill of {len(part)}: {error}")
            elif failed is not None:
                error = failed(error, kernels) or error
            for tail in part:
                store.leave(tail.entry)
                tail.ask.answer(error)
            continue
        for k, prefilled in zip(group, made, strict=True):
            done[k] = prefilled
    return done


def forwards(owns: list[int]) -> list[list[int]]:
    """The tails (by index) that go into each forward, given their own tokens: by length, each forward
    as wide as its longest (rounded up to TAIL_BUCKET), a new one begun where the next tail would pad
    the forward by more than PAD_TOKENS beyond what its tails take alone (each rounded up too). One
    long question among short ones would otherwise pad every short one to its length."""
    widths = [_width(n) for n in owns]  # each tail's width alone
    groups: list[list[int]] = []
    group: list[int] = []
    for k in sorted(range(len(owns)), key=owns.__getitem__):
        alone = sum(widths[j] for j in group) + widths[k]
        if group and (len(group) + 1) * widths[k] - alone > PAD_TOKENS:
            groups.append(group)
            group = []
        group.append(k)
    return [*groups, group] if group else groups


def _width(tokens: int) -> int:
    """A forward's width for `tokens` own tokens: rounded up to TAIL_BUCKET."""
    return -(-tokens // TAIL_BUCKET) * TAIL_BUCKET


def _forward(llm: Any, store: PrefixStore, tails: list[Tail], kernels: bool) -> list[Prefilled]:
    model = llm.model
    head = model.get_output_embeddings()
    device, dtype = head.weight.device, head.weight.dtype
    owns = torch.tensor([len(t.ids) - t.stored for t in tails])
    width = _width(int(owns.max()))
    ids = torch.full((len(tails), width), llm.tokenizer.pad_token_id, dtype=torch.long)
    for row, tail in enumerate(tails):
        ids[row, : owns[row]] = tail.ids[tail.stored :]
    starts = torch.tensor([t.stored for t in tails])
    positions = starts[:, None] + torch.arange(width)
    # causal over each row's own tokens; a padding query sees them all (a fully masked query row can
    # turn NaN in attention kernels), and what it computes is never read
    query, column = torch.arange(width)[:, None], torch.arange(width)[None, :]
    seen = (column <= query) & (column < owns[:, None, None])
    mask = torch.zeros(seen.shape, dtype=dtype).masked_fill_(~seen, torch.finfo(dtype).min)[:, None]
    kv = DynamicCache(config=model.config)
    out = model.get_decoder()(
        input_ids=ids.to(device),
        position_ids=positions.to(device),
        attention_mask=mask.to(device),
        cache=kv,
        use_cache=True,
        shared_prefix=store.batch([t.entry for t in tails], kernels=kernels),
    )
    last = out.last_hidden_state[torch.arange(len(tails), device=device), (owns - 1).to(device)]
    logits = head(last).float()
    return [
        Prefilled(
            len(t.ids),
            kv,
            logits[row],
            (t.ask.request.frames, t.ids[: t.stored]),
            entry=t.entry,
            row=row,
            kv_from=t.stored,
        )
        for row, t in enumerate(tails)
    ]
