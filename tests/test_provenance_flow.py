"""Provenance through the factory (Prefect's test harness) and the plain loop: an adapter retrained into
the same folder is new weights, so its model steps run again and its rows say which weights wrote them;
the shard's model is loaded once, by the flow, not by its tasks."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

import v2t_foley.foley_core.backends as backends
from tests.conftest import make_manifest_videos
from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.foley_core.backends.provenance import resolve_adapter_revision, resolve_model_revision
from v2t_foley.foley_core.backends.registry import release_shared_model
from v2t_foley.foley_core.backends.tiny import tiny_model_path


def save_adapter(folder: Path, seed: int) -> None:
    """A LoRA adapter for the tiny model with random (non-zero) weights: what a retraining writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from v2t_foley.training.config import LANGUAGE_ATTENTION

    torch.manual_seed(seed)
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_path("tiny-random"))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=LANGUAGE_ATTENTION, init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(folder)


def rows_of(store: str) -> list[dict]:
    loaded = datasets.load_dataset(store)
    return [row for split in loaded.values() for row in split]


@pytest.fixture
def loads(monkeypatch) -> list[bool]:
    """Each real model load of the shared registry: True when a task (not the flow) did it."""
    from prefect.context import TaskRunContext

    release_shared_model()  # whatever an earlier test left held
    seen: list[bool] = []
    real = backends.load_backend

    def counted(spec):
        seen.append(TaskRunContext.get() is not None)
        return real(spec)

    monkeypatch.setattr(backends, "load_backend", counted)
    yield seen
    release_shared_model()


def test_a_retrained_adapter_recomputes_its_steps(tmp_path, prefect_harness, loads):
    manifest, _durations = make_manifest_videos(tmp_path / "videos")
    adapter, cache = tmp_path / "adapter", str(tmp_path / "cache")
    save_adapter(adapter, seed=1)

    def build(store: str):
        return build_dataset(
            manifest=manifest,
            store=str(tmp_path / store),
            model="tiny-random",
            adapter=str(adapter),
            result_storage=cache,
        )

    first = build("s1")
    assert first.computed["simple"] == 3
    unchanged = build("s2")  # the same weights: every step from the cache
    assert unchanged.computed == {} and unchanged.cached["simple"] == 3
    save_adapter(adapter, seed=2)  # retrained into the same folder
    retrained = build("s3")
    assert retrained.computed == {"simple": 3, "validate": 3}
    assert retrained.cached == {"sample": 3}

    model_revision = resolve_model_revision("tiny-random")
    revisions = {}
    for store in ("s1", "s2", "s3"):
        rows = rows_of(str(tmp_path / store))
        assert len(rows) == 4  # 3 videos and the blank manifest row (failed before any trace)
        assert {r["model_revision"] for r in rows} == {model_revision}
        (revisions[store],) = {r["adapter_revision"] for r in rows}
    assert revisions["s1"] == revisions["s2"] != revisions["s3"]
    assert revisions["s3"] == resolve_adapter_revision(str(adapter))

    assert loads == [False, False]  # loaded by the flow, once for each adapter's weights


def test_the_plain_loop_records_the_adapter_revision(tmp_path, scene_video):
    from v2t_foley.foley_core.backends import BackendSpec
    from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
    from v2t_foley.foley_core.chain.simple import run_simple
    from v2t_foley.foley_core.manifest import ManifestEntry
    from v2t_foley.foley_core.records import ok_row
    from v2t_foley.foley_core.video import open_video

    adapter = tmp_path / "adapter"
    save_adapter(adapter, seed=3)
    llm = TransformersVideoLLM("tiny-random", adapter=str(adapter), device="cpu")
    video = open_video(str(scene_video))
    result = run_simple(video, llm)
    spec = BackendSpec(model="tiny-random", adapter=str(adapter))
    row = ok_row(ManifestEntry(id="v", video=str(scene_video)), video, result, spec, "loop")
    assert row.model_revision == resolve_model_revision("tiny-random")
    assert row.adapter_revision == resolve_adapter_revision(str(adapter)) != ""
