"""The prefix store's attention is checked on the model's device before a decoder uses it
(backends/attention_check.py): a way whose kernel refuses the calls, or gives other numbers, is not
used, and the decoder falls back to the next (fused kernels -> small ops -> copies of the prefixes),
with the same answers as `generate`. The CUDA kernel that could refuse cannot run on this machine, so
a failing kernel is a stand-in (the CPU kernel wrapped to raise or to misread), said in each test."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.test_chain_graph import clips  # noqa: F401 (two short scene videos and their manifest)
from tests.test_continuous import llm, requests, texts  # noqa: F401 (the module's tiny model, a fixture)
from v2t_foley.foley_core.backends import GenerationParams, attention_check, prefix_attention
from v2t_foley.foley_core.backends.attention_check import check_attention

CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(4, 4, 16), (32, 8, 128)])
@pytest.mark.parametrize("kernels", [True, False], ids=["fused-kernels", "small-ops"])
def test_both_ways_pass_where_they_compute_attention(dtype, heads, kv_heads, dim, kernels):
    assert check_attention(CPU, dtype, heads, kv_heads, dim, kernels) is None


def test_a_kernel_that_refuses_the_call_or_misreads_fails_the_check(monkeypatch):
    """Stand-ins for a CUDA kernel that cannot take the call (an alignment its build needs) and for one
    that returns a wrong log-sum-exp for the prefix part: the CPU kernel, wrapped."""
    fused = prefix_attention._fused

    def refuses(*args):
        raise RuntimeError("attn_bias is not correctly aligned (strideM)\ndetails")

    monkeypatch.setattr(prefix_attention, "_fused", refuses)
    why = check_attention(CPU, torch.bfloat16, 8, 2, 64, kernels=True)
    assert why == "RuntimeError in a decode step: attn_bias is not correctly aligned (strideM)"
    assert check_attention(CPU, torch.bfloat16, 8, 2, 64, kernels=False) is None  # small ops call no kernel

    calls = []

    def misreads(query, key, value, bias, scaling):
        out, lse = fused(query, key, value, bias, scaling)
        calls.append(key.shape)
        return out, lse + (2.0 if len(calls) % 2 else 0.0)  # the prefix part's (called first) only

    monkeypatch.setattr(prefix_attention, "_fused", misreads)
    why = check_attention(CPU, torch.float32, 8, 2, 64, kernels=True)
    assert why is not None and why.startswith("outputs differ from attention over the whole sequences by")


def decode_through_the_store(llm) -> tuple[list, object]:  # noqa: F811
    asked = requests()
    params = GenerationParams(max_new_tokens=16)
    alone = [llm.generate([r], params)[0] for r in asked]
    llm.use_decoder("continuous")  # a new decoder: it checks the attention on its first wave
    try:
        together = llm.generate(asked, params)
        return texts(together) == texts(alone), llm.continuous
    finally:
        llm.use_decoder("generate")
        llm.share_video_prefix = False


def test_a_decoder_whose_kernels_fail_their_check_decodes_through_the_store_with_small_ops(
    llm,  # noqa: F811
    monkeypatch,
    caplog,
):
    """Stand-in: the fused kernel raises, as a CUDA build without it would."""

    def refuses(*args):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(prefix_attention, "_fused", refuses)
    with caplog.at_level(logging.WARNING):
        same, decoder = decode_through_the_store(llm)
    assert same
    assert decoder.attention_way() is False and decoder.store_steps == decoder.steps > 0
    assert "no kernel image" in decoder.attention_failed[True] and False not in decoder.attention_failed
    assert (
        "attention as fused kernels failed its check (RuntimeError in a decode step: no kernel" in caplog.text
    )


def test_a_decoder_whose_ways_all_fail_their_check_copies_the_prefixes(llm, monkeypatch):  # noqa: F811
    """Stand-in: the attention's every call raises (fused kernels and small ops alike)."""

    def refuses(*args, **kwargs):
        raise RuntimeError("unsupported on this device")

    monkeypatch.setattr(prefix_attention, "prefix_attention", refuses)
    same, decoder = decode_through_the_store(llm)
    assert same
    assert decoder.attention_way() is None and set(decoder.attention_failed) == {True, False}
    assert decoder.store_steps == 0 and decoder.steps > 0


def test_a_way_that_fails_in_a_forward_after_its_check_is_not_used_again(llm, monkeypatch):  # noqa: F811
    """Stand-in: the fused kernel passes the eager check, then raises in the decoder's forwards (as one
    could under the compiled step only). The questions of that wave fail with a transient error (a
    step's task retries them); the decoder records it, and the same questions asked again are answered
    through the small ops, as `generate` answers them."""
    from v2t_foley.foley_core.errors import TransientBackendError

    armed: list[bool] = []
    check, fused = attention_check.failed_ways, prefix_attention._fused

    def checked(model):
        failed = check(model)
        armed.append(True)  # the check has passed: from here on the kernel fails
        return failed

    def fails_once_armed(*args):
        if armed:
            raise RuntimeError("CUDA error: misaligned address")
        return fused(*args)

    monkeypatch.setattr(attention_check, "failed_ways", checked)
    monkeypatch.setattr(prefix_attention, "_fused", fails_once_armed)
    asked = requests()
    params = GenerationParams(max_new_tokens=16)
    alone = [llm.generate([r], params)[0] for r in asked]
    llm.use_decoder("continuous")
    try:
        with pytest.raises(TransientBackendError, match=r"as fused kernels: .*misaligned address") as raised:
            llm.generate(asked, params)
        assert isinstance(raised.value.__cause__, RuntimeError)
        decoder = llm.continuous
        assert decoder.attention_failed[True].startswith("a forward through it failed: RuntimeError: CUDA")
        assert decoder.attention_way() is False
        steps = decoder.store_steps
        assert texts(llm.generate(asked, params)) == texts(alone)
        assert decoder.store_steps > steps  # through the store, with the small ops
    finally:
        llm.use_decoder("generate")
        llm.share_video_prefix = False


def test_two_decoders_of_one_process_each_run_their_own_way(llm, monkeypatch):  # noqa: F811
    """The way is each step's (`PrefixBatch.kernels`), not a process-wide switch: a decoder asked for
    small ops (as one whose kernels failed runs) keeps them while another decoder of the process runs a
    whole wave on the fused kernels in the middle of its own wave, and each answers as `generate`."""
    from collections import deque

    from v2t_foley.foley_core.backends.continuous import ContinuousDecoder

    fused, running, calls = prefix_attention._fused, ["small ops"], []

    def counted(*args):
        calls.append(running[0])
        return fused(*args)

    monkeypatch.setattr(prefix_attention, "_fused", counted)
    asked = requests()
    params = GenerationParams(max_new_tokens=16)
    alone = texts([llm.generate([r], params)[0] for r in asked])
    small, kernels = ContinuousDecoder(llm, 4), ContinuousDecoder(llm, 4)
    small.attention_kernels = False
    for decoder in (small, kernels):  # checked already (the check's own calls are not the decoders')
        decoder._prefix_attention = prefix_attention.enable(llm.model)
    answers = {"small ops": [None] * len(asked), "fused kernels": [None] * len(asked)}

    def taker(name: str, then=None):
        queue = deque(enumerate(asked))

        def take():
            if then is not None:
                then()
            if not queue:
                return None
            k, request = queue.popleft()
            return llm.ask(request, params, lambda answer, k=k: answers[name].__setitem__(k, answer))

        return take

    steps_before: list[int] = []

    def the_other_wave() -> None:
        if small.steps and running[0] == "small ops" and not kernels.waves:  # mid-wave, once
            running[0] = "fused kernels"
            kernels.serve(taker("fused kernels"))
            running[0] = "small ops"
            steps_before.append(small.steps)

    llm.share_video_prefix = True
    try:
        small.serve(taker("small ops", the_other_wave))
    finally:
        llm.share_video_prefix = False
    assert texts(answers["small ops"]) == alone and texts(answers["fused kernels"]) == alone
    assert small.store_steps > 0 and kernels.store_steps > 0 and kernels.waves == 1
    assert small.steps > steps_before[0]  # the small ops' wave went on after the other's
    assert "fused kernels" in calls and "small ops" not in calls


def fail_after_the_check(monkeypatch) -> list[int]:
    """Stand-in for a CUDA kernel that passes its check and then raises in every forward (a failure only
    the compiled step shows): the CPU kernel, raising once a decoder's check has run. Returns the list
    that each raise adds to."""
    armed: list[bool] = []
    raised: list[int] = []
    check, fused = attention_check.failed_ways, prefix_attention._fused

    def checked(model):
        failed = check(model)
        armed.append(True)
        return failed

    def fails_once_armed(*args):
        if armed:
            raised.append(1)
            raise RuntimeError("CUDA error: misaligned address")
        return fused(*args)

    monkeypatch.setattr(attention_check, "failed_ways", checked)
    monkeypatch.setattr(prefix_attention, "_fused", fails_once_armed)
    return raised


def test_a_build_whose_kernel_fails_after_its_check_loses_no_video(
    clips,  # noqa: F811
    tmp_path,
    prefect_harness,
    monkeypatch,
):
    """Stand-in, as above: the fused kernel passes the check, then raises in every forward. The first
    wave's questions fail transiently, the step's task retries them through the small ops, and every
    video gets the script a build on `generate` writes. (When they failed with the kernel's own error,
    the wave's videos were recorded as failed.)"""
    from v2t_foley.flows.build_dataset import build_dataset
    from v2t_foley.foley_core.backends import registry
    from v2t_foley.foley_core.store import DatasetStore

    _folder, manifest = clips

    def build(store: str, decoder: str):
        registry.release_shared_model()  # a model loaded now, with a decoder that checks its attention
        return build_dataset(
            manifest=manifest, store=store, model="tiny-random", batch_size=4, decoder=decoder, device="cpu"
        )

    reference = build(str(tmp_path / "generate"), "generate")
    raised = fail_after_the_check(monkeypatch)
    try:
        summary = build(str(tmp_path / "continuous"), "continuous")
    finally:
        registry.release_shared_model()
    assert raised  # the kernel did fail in a forward
    assert (summary.new_ok_rows, summary.new_failed_rows) == (reference.new_ok_rows, 0) == (2, 0)

    def scripts(store: str) -> dict[str, dict]:
        return {row["id"]: row["script"] for row in DatasetStore(store).read_rows()}

    assert scripts(str(tmp_path / "continuous")) == scripts(str(tmp_path / "generate"))


def test_the_plain_loop_asks_again_when_the_kernel_fails_after_its_check(llm, clips, monkeypatch, caplog):  # noqa: F811
    """Stand-in, as above: the fused kernel passes the check, then raises in every forward. `foley
    script`'s loop (run_chain) asks the step's questions again, through the small ops, and writes the
    script `generate` writes. (It failed the video with the first transient error.)"""
    from v2t_foley.foley_core.chain import executor
    from v2t_foley.foley_core.chain.runner import run_chain
    from v2t_foley.foley_core.video import open_video

    folder, _manifest = clips
    reference = run_chain(open_video(str(folder / "c0.mp4")), llm)
    monkeypatch.setattr(executor, "RETRY_DELAY_S", 0.0)
    raised = fail_after_the_check(monkeypatch)
    llm.use_decoder("continuous")
    try:
        with caplog.at_level(logging.WARNING, logger=executor.__name__):
            result = run_chain(open_video(str(folder / "c0.mp4")), llm)
        decoder = llm.continuous
    finally:
        llm.use_decoder("generate")
    assert raised and decoder.attention_failed.get(True)  # the kernel failed, and its way was dropped
    assert result.script == reference.script
    asked_again = [r.getMessage() for r in caplog.records if r.name == executor.__name__]
    assert asked_again and "misaligned address" in asked_again[0]  # the plain loop asked the step again
