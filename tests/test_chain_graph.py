"""One chain graph, two executors: the plain loop (`run_chain`) and the Prefect flow (one task per step
over the shard, the model's steps one pipeline task) give the same scripts and traces, timings aside,
in both timing modes and with an adapter; a shard makes one task run per step (the model's steps one)
whatever its size; a retried step or pipeline recomputes only what is missing."""

from __future__ import annotations

import json

import pytest

from tests.test_provenance_flow import save_adapter
from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
from v2t_foley.foley_core.chain import ChainConfig, run_chain
from v2t_foley.foley_core.chain.executor import run_step, run_steps
from v2t_foley.foley_core.chain.graph import MISSING, Step, StepCache, Work
from v2t_foley.foley_core.chain.steps import StepResult
from v2t_foley.foley_core.errors import TransientBackendError
from v2t_foley.foley_core.manifest import read_manifest, write_manifest
from v2t_foley.foley_core.prompts import load_prompts
from v2t_foley.foley_core.schema.rows import row_script
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
from v2t_foley.foley_core.video import open_video


def without_timings(data):
    if isinstance(data, dict):
        return {k: without_timings(v) for k, v in data.items() if k not in ("seconds", "step_seconds")}
    if isinstance(data, list):
        return [without_timings(v) for v in data]
    return data


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graph")
    rows = []
    for k, duration in enumerate((2.0, 2.5)):
        path = write_scene_video(
            folder / f"c{k}.mp4", SceneSpec(duration=duration, cuts=(1.0,), clicks=(0.4,))
        )
        rows.append({"video": str(path), "id": f"c{k}"})
    return folder, write_manifest(rows, str(folder / "m.csv"))


@pytest.mark.parametrize("timing,adapter", [("measured", False), ("model", False), ("model", True)])
def test_the_flow_and_the_plain_loop_agree(clips, tmp_path, prefect_harness, timing, adapter):
    _folder, manifest = clips
    adapter_dir = None
    if adapter:
        adapter_dir = str(tmp_path / "adapter")
        save_adapter(tmp_path / "adapter", seed=5)
    build_dataset(
        manifest=manifest,
        store=str(tmp_path / "store"),
        model="tiny-random",
        adapter=adapter_dir,
        timing=timing,
        batch_size=1,  # the same batches as the plain loop: this compares orchestration, not padding
        device="cpu",
    )
    flow_rows = {r["id"]: r for r in DatasetStore(str(tmp_path / "store")).read_rows()}
    llm = TransformersVideoLLM("tiny-random", adapter=adapter_dir, device="cpu", batch_size=1)
    prompts = load_prompts(steps=("simple", "repair")) if adapter else load_prompts()
    for entry in read_manifest(manifest):
        plain = run_chain(open_video(entry.video), llm, prompts, ChainConfig(timing=timing), one_pass=adapter)
        row = flow_rows[entry.id]
        assert row["status"] == "ok", row["error"]
        assert row_script(row).model_dump() == plain.script.model_dump()
        assert without_timings(json.loads(row["trace"])) == without_timings(
            plain.trace.model_dump(mode="json")
        )
        steps = set(json.loads(row["trace"])["step_seconds"])
        assert steps == (
            {"simple", "validate"}
            if adapter
            else {"identify", "reason", "synthesize", "validate"}
            | ({"propose"} if timing == "measured" else set())
        )


def test_a_shard_makes_one_task_run_per_step(tmp_path, prefect_harness):
    """Eight videos in one shard: probe plus one task per step (the model's steps one together), not
    one per video."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    rows = []
    for k in range(8):
        path = write_scene_video(tmp_path / f"v{k}.mp4", SceneSpec(duration=1.0, cuts=(), clicks=(0.3,)))
        rows.append({"video": str(path), "id": f"v{k}"})
    manifest = write_manifest(rows, str(tmp_path / "m.csv"))
    summary = build_dataset(
        manifest=manifest, store=str(tmp_path / "store"), model="tiny-random", timing="model", shard_size=8
    )
    assert summary.new_ok_rows == 8
    with get_client(sync_client=True) as client:
        shard_runs = [
            r
            for r in client.read_flow_runs()
            if r.parameters.get("run_id") == summary.run_id and r.parameters.get("index") == 0
        ]
        assert len(shard_runs) == 1
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [shard_runs[0].id]}))
    names = sorted(t.name for t in tasks)
    assert names == sorted(["probe", "sample", "identify+reason+synthesize", "validate"]), names


class MemoryCache(StepCache):
    def __init__(self) -> None:
        self.items: dict[str, StepResult] = {}

    def get(self, step, key):
        return self.items.get(key, MISSING)

    def put(self, step, key, result):
        self.items[key] = result


def test_a_retried_step_recomputes_only_the_missing_videos(tmp_path):
    """The executor under test is real; the step is a stand-in whose compute fails transiently once for
    one video and for good for another."""
    from v2t_foley.foley_core.chain.graph import ChainContext

    calls: list[str] = []
    flaky = {"b"}

    def compute(ctx, work, item):
        calls.append(work.id)
        if work.id in flaky:
            flaky.discard(work.id)
            raise TransientBackendError("CUDA out of memory (once)")
        if work.id == "bad":
            raise ValueError("this video's answer is unusable")
        return StepResult(work.id)

    kept: list[str] = []
    step = Step("sample", (), False, False, compute, lambda c, w, r: kept.append(w.id), lambda c: {}, str)
    ctx = ChainContext(lambda: None, {}, None, None, ChainConfig())  # type: ignore[arg-type]
    works = {}
    for k, name in enumerate(("a", "b", "bad")):
        clip = write_scene_video(
            tmp_path / f"{name}.mp4", SceneSpec(duration=1.0 + k / 4, cuts=(), clicks=())
        )
        works[name] = Work(id=name, uri=str(clip), video=open_video(str(clip)))
    cache = MemoryCache()
    with pytest.raises(TransientBackendError):
        run_step(step, list(works.values()), ctx, cache, threads=2, raise_transient=True)
    assert sorted(calls) == ["a", "b", "bad"] and len(cache.items) == 1
    assert works["bad"].error is not None and works["b"].error is None  # b waits for the retry
    calls.clear()
    tally = run_step(step, list(works.values()), ctx, cache, threads=2, raise_transient=False)
    assert calls == ["b"]  # a kept its first result; bad failed for good and is not asked again
    assert (tally.computed, tally.cached) == (1, 0)
    assert works["a"].value("sample") == "a" and works["b"].value("sample") == "b"
    assert sorted(kept) == ["a", "b"]  # a's result (and its trace) is kept once, not again on the retry


@pytest.mark.parametrize("threads", [1, 4], ids=["in-the-callers-thread", "threads"])
def test_a_retried_pipeline_recomputes_only_the_missing_items(tmp_path, threads):
    """Two steps as one pipeline (the factory's model task): an event item of one video fails
    transiently; the other video goes through both steps, the failing one keeps its first step and its
    other event, and the retry asks only the missing item. The executor is real; the steps are stand-ins
    (a video's two events, then one answer per event)."""
    from dataclasses import dataclass

    from v2t_foley.foley_core.chain.graph import ChainContext

    @dataclass(frozen=True)
    class Item:
        index: int

    calls: list[tuple[str, str, int]] = []
    flaky = {("b", 1)}

    def events(ctx, work, item):
        calls.append(("identify", work.id, -1))
        return StepResult([Item(0), Item(1)])

    def answer(ctx, work, item):
        calls.append(("reason", work.id, item.index))
        if (work.id, item.index) in flaky:
            flaky.discard((work.id, item.index))
            raise TransientBackendError("CUDA out of memory (once)")
        return StepResult([f"{work.id}-{item.index}"])

    def keep(ctx, work, result):
        return None

    first = Step("identify", (), False, False, events, keep, lambda c: {}, list)
    second = Step("reason", ("identify",), False, True, answer, keep, lambda c: {}, list)
    ctx = ChainContext(lambda: None, {}, None, None, ChainConfig())  # type: ignore[arg-type]
    works = {}
    for k, name in enumerate(("a", "b")):
        clip = write_scene_video(
            tmp_path / f"{name}.mp4", SceneSpec(duration=1.0 + k / 4, cuts=(), clicks=())
        )
        works[name] = Work(id=name, uri=str(clip), video=open_video(str(clip)))
    cache = MemoryCache()
    with pytest.raises(TransientBackendError):
        run_steps([first, second], list(works.values()), ctx, cache, threads=threads, raise_transient=True)
    assert works["a"].value("reason") == ["a-0", "a-1"]
    assert works["b"].value("identify") == [Item(0), Item(1)] and "reason" not in works["b"].results
    assert works["b"].error is None  # it waits for the retry
    calls.clear()
    tallies = run_steps([first, second], list(works.values()), ctx, cache, threads=threads)
    assert calls == [("reason", "b", 1)]
    assert (tallies["identify"].computed, tallies["reason"].computed, tallies["reason"].cached) == (0, 1, 1)
    assert works["b"].value("reason") == ["b-0", "b-1"]  # in item order, whatever order they finished in


def test_a_video_that_answered_a_step_goes_before_new_videos(tmp_path):
    """Later steps' items go first: with two threads and eight videos, the first video's second step
    runs before the last videos start their first (a queue in order would run every first step
    before any second). So the videos holding frames between steps stay about as many as the threads.
    The executor is real; the steps are stand-ins that take a moment."""
    import time

    from v2t_foley.foley_core.chain.graph import ChainContext

    calls: list[tuple[str, str]] = []

    def slow(name: str):
        def compute(ctx, work, item):
            calls.append((name, work.id))
            time.sleep(0.05)
            return StepResult(name)

        return compute

    def keep(ctx, work, result):
        return None

    first = Step("sample", (), False, False, slow("sample"), keep, lambda c: {}, str)
    second = Step("validate", ("sample",), False, False, slow("validate"), keep, lambda c: {}, str)
    ctx = ChainContext(lambda: None, {}, None, None, ChainConfig())  # type: ignore[arg-type]
    clip = write_scene_video(tmp_path / "a.mp4", SceneSpec(duration=1.0, cuts=(), clicks=()))
    works = [Work(id=f"v{k}", uri=str(clip), video=open_video(str(clip))) for k in range(8)]
    run_steps([first, second], works, ctx, StepCache(), threads=2)  # one clip: no cache, each is asked
    assert sorted(calls) == sorted([(s, w.id) for s in ("sample", "validate") for w in works])
    assert calls.index(("validate", "v0")) < calls.index(("sample", "v7"))


def test_keys_that_cannot_be_made_fail_the_run_not_the_videos(tmp_path):
    """A per-event step whose videos have no identify result cannot key its items (as a template missing
    from the prompt set): the run raises, once every video stopped, and no video is marked failed (their
    rows would blame them). The executor is real; the step is a stand-in."""
    from v2t_foley.foley_core.chain.graph import ChainContext

    def nothing(ctx, work, item):
        return StepResult([])

    step = Step("reason", ("identify",), False, True, nothing, lambda c, w, r: None, lambda c: {}, list)
    ctx = ChainContext(lambda: None, {}, None, None, ChainConfig())  # type: ignore[arg-type]
    clip = write_scene_video(tmp_path / "a.mp4", SceneSpec(duration=1.0, cuts=(), clicks=()))
    works = [Work(id=f"v{k}", uri=str(clip), video=open_video(str(clip))) for k in range(3)]
    with pytest.raises(KeyError):
        run_steps([step], works, ctx, MemoryCache(), threads=4)
    assert all(work.error is None and not work.results for work in works)


def test_the_factory_on_the_continuous_decoder_writes_the_plain_loops_scripts(
    clips, tmp_path, prefect_harness
):
    """The whole fast path: process-shard's step tasks feed the batching thread, whose continuous
    decoder (4 slots, video prefixes in the prefix store) serves the questions of both clips side
    by side (each window's frames a video of its own); every script is the plain loop's on `generate`
    with full prompts, one request at a time."""
    from v2t_foley.foley_core.backends import registry

    _folder, manifest = clips
    build_dataset(
        manifest=manifest,
        store=str(tmp_path / "store"),
        model="tiny-random",
        timing="measured",
        batch_size=4,
        decoder="continuous",
        device="cpu",
    )
    decoder = registry._registry._held.inner.continuous  # the worker's model, still held after the flow
    flow_rows = {r["id"]: r for r in DatasetStore(str(tmp_path / "store")).read_rows()}
    llm = TransformersVideoLLM("tiny-random", device="cpu", batch_size=1)
    for entry in read_manifest(manifest):
        plain = run_chain(open_video(entry.video), llm, load_prompts(), ChainConfig(timing="measured"))
        row = flow_rows[entry.id]
        assert row["status"] == "ok", row["error"]
        assert row_script(row).model_dump() == plain.script.model_dump()
    assert decoder.store_steps == decoder.steps > 0  # every step read its prefixes from the store
