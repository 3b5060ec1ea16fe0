"""Questions about stored video prefixes prefilled together (backends/join_prefill.py): their ids are
the processor's, their K/V and logits those of each question prefilled alone, and through the
continuous decoder every answer is still `generate`'s for that request alone, with every question but
each video's first prefilled together. A failed join prefill fails its own questions only."""

from __future__ import annotations

import pytest
import torch

from tests.test_continuous import SCHEMA, side_by_side, texts
from tests.test_static_decode import PROMPTS, clip
from v2t_foley.foley_core.backends import (
    BackendSpec,
    GenerationParams,
    GenerationRequest,
    join_prefill,
    load_backend,
    prefix_attention,
    prompt_inputs,
)
from v2t_foley.foley_core.backends.continuous import Ask
from v2t_foley.foley_core.backends.prefix_store import PREFIX_BUCKET, PrefixStore
from v2t_foley.foley_core.backends.solo_prefill import SoloPrefill
from v2t_foley.foley_core.errors import TransientBackendError


@pytest.fixture(scope="module")
def llm():
    return load_backend(BackendSpec(model="tiny-random", device="cpu", batch_size=2))


def video_tokens(llm, ids: torch.Tensor) -> int:
    return int((ids == llm.model.config.video_token_index).sum())


def test_a_prompts_ids_from_the_tokenizer_alone_are_the_processors(llm):
    frames = clip(1)
    odd = ("Émile's café:\n  3 cues\t(tab) — done?", "", "ASSISTANT: USER:", "</s> <unk> <s>")
    for prompt in (*PROMPTS, *odd):
        full = llm.encode([GenerationRequest(frames, prompt)])["input_ids"][0]
        assert torch.equal(prompt_inputs.prompt_ids(llm, prompt, video_tokens(llm, full)), full), prompt
    assert prompt_inputs.prompt_ids(llm, "a second video: <video>", 2056) is None  # goes alone
    with pytest.raises(ValueError, match="image"):  # the processor refuses an image token without images
        llm.encode([GenerationRequest(frames, "an <image> in the text")])
    assert prompt_inputs.prompt_ids(llm, "an <image> in the text", 2056) is None  # so it goes alone


def asks(llm, requests, budget: int = 8) -> list[Ask]:
    return [Ask(r, budget, lambda answer: None) for r in requests]


def stored(llm, firsts: list[Ask]) -> PrefixStore:
    """A store holding the video prefixes of `firsts`, each prefilled alone (as a wave's first)."""
    solo, shared = SoloPrefill(llm), llm.share_video_prefix
    llm.share_video_prefix = True
    try:
        done = [solo(a, None) for a in firsts]
    finally:
        llm.share_video_prefix = shared
    length = -(-max(len(d.video[1]) for d in done) // PREFIX_BUCKET) * PREFIX_BUCKET
    store = PrefixStore.for_model(llm.model, entries=4, length=length)
    for entry in [store.place(*d.video, d.kv) for d in done]:  # all placed first: a free entry is taken
        store.leave(entry)
    return store


def test_questions_prefilled_together_have_the_kv_and_logits_of_each_prefilled_alone(llm, kernels):
    prefix_attention.enable(llm.model)
    llm.share_video_prefix = True
    try:
        clips = [clip(1), clip(2)]
        requests = [GenerationRequest(clips[k % 2], PROMPTS[k % 4]) for k in range(6)]
        store = stored(llm, asks(llm, requests[:2]))
        tails = [join_prefill.stage(llm, a, store, 4096) for a in asks(llm, requests)]
        assert all(t is not None for t in tails)
        assert [h.users for h in store.held[:2]] == [3, 3]  # each counted at once: no one takes its place
        together = join_prefill.prefill_tails(llm, store, tails, kernels=kernels)
        solo = SoloPrefill(llm)
        for tail, done in zip(tails, together, strict=True):
            alone = solo(asks(llm, [tail.ask.request])[0], None)
            assert done.length == alone.length == len(tail.ids) and done.entry == tail.entry
            torch.testing.assert_close(done.logits, alone.logits, rtol=1e-4, atol=1e-5)
            own = slice(0, alone.length - tail.stored)
            for ours, theirs in zip(done.kv.layers, alone.kv.layers, strict=True):
                expected = theirs.keys[0, :, tail.stored : alone.length]
                torch.testing.assert_close(ours.keys[done.row, :, own], expected, rtol=1e-4, atol=1e-5)
                expected = theirs.values[0, :, tail.stored : alone.length]
                torch.testing.assert_close(ours.values[done.row, :, own], expected, rtol=1e-4, atol=1e-5)
    finally:
        llm.share_video_prefix = False


def test_a_question_that_cannot_join_a_prefill_goes_alone(llm):
    known, unknown = clip(1), clip(3)
    store = stored(llm, asks(llm, [GenerationRequest(known, PROMPTS[0])]))
    assert (
        join_prefill.stage(llm, asks(llm, [GenerationRequest(unknown, PROMPTS[1])])[0], store, 4096) is None
    )
    question = asks(llm, [GenerationRequest(known, PROMPTS[1])], budget=200)[0]
    assert join_prefill.stage(llm, question, store, 128) is None  # its tokens and budget past the row
    assert (
        join_prefill.stage(llm, asks(llm, [GenerationRequest(known, PROMPTS[1])], budget=0)[0], store, 4096)
        is None
    )
    assert join_prefill.stage(llm, question, None, 4096) is None  # no store: prefixes are copied
    assert store.held[0].users == 0  # none of them was counted


def test_through_the_decoder_every_question_but_each_videos_first_is_prefilled_together(llm):
    clips = [clip(20), clip(21)]
    asked = [GenerationRequest(clips[k % 2], PROMPTS[k % 4], SCHEMA if k % 3 else None) for k in range(8)]
    alone, together, decoder = side_by_side(llm, asked, GenerationParams(max_new_tokens=12), slots=4)
    assert texts(together) == texts(alone)
    assert decoder.joined_together == len(asked) - len(clips) and decoder.waves == 1
    assert not decoder.store.in_use()


def serve(llm, decoder, requests, params) -> dict[int, object]:
    answers: dict[int, object] = {}
    queue = [llm.ask(r, params, lambda a, k=k: answers.__setitem__(k, a)) for k, r in enumerate(requests)]
    llm.continuous = decoder
    llm.share_video_prefix = True
    try:
        decoder.serve(lambda: queue.pop(0) if queue else None)
    finally:
        llm.use_decoder("generate")
    return answers


def fail_first_forward(monkeypatch) -> list[int]:
    """A forward cannot be made to fail for real here (its usual failure is CUDA running out of
    memory), so the first join-prefill forward is replaced by one that raises; the later ones are
    real. Returns the list each forward's question count is appended to."""
    real, calls = join_prefill._forward, []

    def failing_first(llm, store, tails, kernels):
        calls.append(len(tails))
        if len(calls) == 1:
            raise RuntimeError("the join prefill failed")
        return real(llm, store, tails, kernels)

    monkeypatch.setattr(join_prefill, "_forward", failing_first)
    return calls


def test_a_failed_join_prefill_fails_its_own_questions_only(llm, monkeypatch):
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    calls = fail_first_forward(monkeypatch)
    video = clip(30)
    requests = [GenerationRequest(video, PROMPTS[k % 4]) for k in range(5)]
    params = GenerationParams(max_new_tokens=8)
    alone = [llm.generate([r], params)[0] for r in requests]
    decoder = ContinuousDecoder(llm, 3)
    answers = serve(llm, decoder, requests, params)
    failed = [k for k, a in answers.items() if isinstance(a, TransientBackendError)]  # to ask again
    assert len(answers) == 5 and calls[0] == len(failed) == 2  # the first prefill's two questions
    assert texts([answers[k] for k in range(5) if k not in failed]) == texts(
        [alone[k] for k in range(5) if k not in failed]
    )
    assert not decoder.store.in_use()  # the failed questions left their entry


@pytest.mark.parametrize("broken_alone", [False, True], ids=["broken-tail", "broken-new-video"])
def test_when_a_question_fails_the_wave_every_question_taken_with_it_is_answered(llm, broken_alone):
    """A grammar that cannot compile fails the wave at its join (tests/test_continuous.py): whether it
    was prefilled with others or alone (a new video's question, after another was staged), every
    question taken for the wave gets the error rather than waiting forever."""
    broken = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(("}}, "required": ["a"]}
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    video, new = clip(31), clip(32)
    requests = [GenerationRequest(video, PROMPTS[0]), GenerationRequest(video, PROMPTS[1])]
    requests.append(GenerationRequest(new if broken_alone else video, PROMPTS[2], broken))
    decoder = ContinuousDecoder(llm, 4)
    answers = serve(llm, decoder, requests, GenerationParams(max_new_tokens=8))
    assert decoder.joined_together == (0 if broken_alone else 2)  # none joined when the wave broke first
    assert len(answers) == 3 and all(isinstance(a, RuntimeError) for a in answers.values())


def test_a_store_grown_while_questions_wait_for_their_prefill_keeps_their_entries(llm):
    """A question about the first clip is staged (its entry counted); four new clips then join alone,
    and the fifth grows the store from 4 entries to 6 before the staged question is prefilled: it
    reads its entry in the grown store, and every answer is still generate's."""
    clips = [clip(40 + k) for k in range(5)]
    asked = [GenerationRequest(clips[0], PROMPTS[0]), GenerationRequest(clips[0], PROMPTS[1], SCHEMA)]
    asked += [GenerationRequest(c, PROMPTS[k % 4]) for k, c in enumerate(clips[1:])]
    alone, together, decoder = side_by_side(llm, asked, GenerationParams(max_new_tokens=8), slots=6)
    assert texts(together) == texts(alone)
    assert decoder.store.entries == 6 and decoder.joined_together == 1 and decoder.waves == 1
    assert not decoder.store.in_use()


def test_questions_of_very_different_lengths_are_prefilled_in_forwards_of_their_own():
    """Padding is computed for nothing: short questions are not padded to a long one's length, unless
    the padding costs less than a forward more (PAD_TOKENS, counted past each one's own 16-wide width)."""
    assert join_prefill.PAD_TOKENS == 256  # the bounds below are drawn at it
    assert join_prefill.forwards([20] * 32) == [list(range(32))]
    assert join_prefill.forwards([300, 12, 310, 10, 14]) == [[3, 1, 4], [0, 2]]
    assert join_prefill.forwards([16, 272]) == [[0, 1]]  # 256 tokens of padding: one forward
    assert join_prefill.forwards([16, 273]) == [[0], [1]]  # 272: two
    assert join_prefill.forwards([10, 60]) == [[0, 1]]
    assert join_prefill.forwards([1024, 1124, 974]) == [[2, 0], [1]]  # long ones pad as much as short
    assert join_prefill.forwards([]) == []


def test_through_the_decoder_a_long_question_joins_in_its_own_forward(llm, monkeypatch):
    real, sizes = join_prefill._forward, []

    def counted(llm, store, tails, kernels):
        sizes.append(sorted(len(t.ids) - t.stored for t in tails))
        return real(llm, store, tails, kernels)

    monkeypatch.setattr(join_prefill, "_forward", counted)
    video = clip(33)
    prompts = [PROMPTS[0], PROMPTS[1], "Describe every sound, " * 60, PROMPTS[2], PROMPTS[3]]
    asked = [GenerationRequest(video, p, SCHEMA if k % 2 else None) for k, p in enumerate(prompts)]
    alone, together, decoder = side_by_side(llm, asked, GenerationParams(max_new_tokens=8), slots=5)
    assert texts(together) == texts(alone)
    assert len(sizes) == 2 and len(sizes[0]) == 3 and len(sizes[1]) == 1 and sizes[1][0] > 300
    assert decoder.joined_together == 4


def test_a_failed_forward_fails_its_own_questions_and_the_other_forwards_go_on(llm, monkeypatch):
    """The first forward (the short questions') fails (`fail_first_forward`); the second, a long
    question's, is real."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    calls = fail_first_forward(monkeypatch)

    video = clip(34)
    prompts = [PROMPTS[0], PROMPTS[1], "Describe every sound, " * 60, PROMPTS[2]]
    requests = [GenerationRequest(video, p) for p in prompts]
    params = GenerationParams(max_new_tokens=8)
    alone = [llm.generate([r], params)[0] for r in requests]
    decoder = ContinuousDecoder(llm, 4)
    answers = serve(llm, decoder, requests, params)
    assert calls == [2, 1]  # the two short questions together, then the long one
    assert isinstance(answers[1], TransientBackendError) and isinstance(answers[3], TransientBackendError)
    assert texts([answers[0], answers[2]]) == texts([alone[0], alone[2]])
    assert not decoder.store.in_use()


def test_a_second_failed_forward_is_charged_to_the_way_it_ran(llm, monkeypatch):
    """Both forwards of one join prefill fail (stand-ins: a forward cannot be made to fail for real
    here). Both ran the fused kernels, which the first failure drops; the second failure is charged
    to them too, not to the small ops the decoder would run next, so it does not fall to copies."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    ran: list[tuple[int, bool]] = []

    def failing(llm, store, tails, kernels):
        ran.append((len(tails), kernels))
        raise RuntimeError("the join prefill failed")

    monkeypatch.setattr(join_prefill, "_forward", failing)
    video = clip(35)
    prompts = [PROMPTS[0], PROMPTS[1], "Describe every sound, " * 60, PROMPTS[2]]
    requests = [GenerationRequest(video, p) for p in prompts]
    decoder = ContinuousDecoder(llm, 4)
    answers = serve(llm, decoder, requests, GenerationParams(max_new_tokens=8))
    assert ran == [(2, True), (1, True)]  # the two short questions together, then the long one
    assert all(isinstance(answers[k], TransientBackendError) for k in (1, 2, 3))
    assert set(decoder.attention_failed) == {True} and decoder.attention_way() is False


def test_once_no_way_is_left_the_waves_later_questions_go_alone(llm, monkeypatch):
    """The decoder runs small ops (its fused kernels failed), and a join prefill through them fails
    (a stand-in: every join forward raises): no way is left to read the store. The questions taken
    later in the same wave go alone, their prefix copied into their rows, and are answered as
    `generate` answers them, rather than staged for another join prefill through the failed way."""
    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    ran: list[int] = []

    def failing(llm, store, tails, kernels):
        ran.append(len(tails))
        raise RuntimeError("the join prefill failed")

    video = clip(36)
    requests = [GenerationRequest(video, PROMPTS[k % 4]) for k in range(7)]
    params = GenerationParams(max_new_tokens=8)
    alone = [llm.generate([r], params)[0] for r in requests]
    monkeypatch.setattr(join_prefill, "_forward", failing)
    decoder = ContinuousDecoder(llm, 4)
    decoder.attention_kernels = False
    answers = serve(llm, decoder, requests, params)
    assert ran == [3]  # the three questions of the first join prefill; none after it
    assert all(isinstance(answers[k], TransientBackendError) for k in (1, 2, 3))
    assert decoder.attention_way() is None
    assert texts([answers[k] for k in (0, 4, 5, 6)]) == texts([alone[k] for k in (0, 4, 5, 6)])
