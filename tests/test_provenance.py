"""Resolved revisions: content hashes of model and adapter folders, Hub commits from the local cache
(offline), and the step keys and rows made of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from v2t_foley.foley_core.backends import BackendSpec, provenance
from v2t_foley.foley_core.backends.provenance import (
    folder_revision,
    join_revisions,
    resolve_adapter_revision,
    resolve_model_revision,
    revision_key,
)
from v2t_foley.foley_core.backends.tiny import tiny_model_path
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.manifest import ManifestEntry
from v2t_foley.foley_core.records import failed_row
from v2t_foley.tasks.job import ChainJob

SHA = "0" * 64


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A local model folder: a copy of the tiny model."""
    return Path(shutil.copytree(tiny_model_path("tiny-random"), tmp_path / "model"))


def identify_key(model: str, adapter: str | None = None) -> str:
    """The first model step's key (with an adapter, the one-pass `simple` step)."""
    job = ChainJob(backend=BackendSpec(model=model, adapter=adapter))
    return job.model_step_key("simple" if adapter else "identify", SHA, [])


def test_a_folder_resolves_to_its_content_hash(model_copy):
    tiny = resolve_model_revision("tiny-random")
    assert tiny.startswith("sha256:") and len(tiny) == len("sha256:") + 16
    assert resolve_model_revision(str(model_copy)) == tiny  # same files, same hash, wherever they are


def test_a_changed_config_changes_revision_and_keys(model_copy):
    before_rev, before_key = resolve_model_revision(str(model_copy)), identify_key(str(model_copy))
    config = model_copy / "config.json"
    config.write_text(config.read_text().replace("{", '{\n  "note": "edited",', 1))
    assert resolve_model_revision(str(model_copy)) != before_rev
    assert identify_key(str(model_copy)) != before_key


def test_changed_weights_of_the_same_size_change_revision_and_keys(model_copy):
    before_rev, before_key = resolve_model_revision(str(model_copy)), identify_key(str(model_copy))
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor: same size, same header
    weights.write_bytes(bytes(data))
    assert resolve_model_revision(str(model_copy)) != before_rev
    assert identify_key(str(model_copy)) != before_key


def test_big_files_are_hashed_by_their_edges(tmp_path, monkeypatch):
    """The documented trade-off: a big file's middle is not read; its head, tail and size are."""
    monkeypatch.setattr(provenance, "BIG_FILE", 1000)
    monkeypatch.setattr(provenance, "EDGE", 100)
    weights = tmp_path / "w.bin"
    data = bytearray(range(256)) * 8  # 2048 bytes: big here
    weights.write_bytes(bytes(data))
    first = folder_revision(tmp_path)
    data[1000] ^= 1  # the middle
    weights.write_bytes(bytes(data))
    assert folder_revision(tmp_path) == first
    data[5] ^= 1  # the head
    weights.write_bytes(bytes(data))
    assert folder_revision(tmp_path) != first


def test_repeated_calls_reuse_the_digest_until_a_file_changes(model_copy, monkeypatch):
    resolve_model_revision(str(model_copy))
    reads: list[Path] = []
    original = provenance._content_digest
    monkeypatch.setattr(provenance, "_content_digest", lambda p, s: reads.append(p) or original(p, s))
    resolve_model_revision(str(model_copy))
    assert reads == []  # stats only
    (model_copy / "extra.txt").write_text("x")
    resolve_model_revision(str(model_copy))
    assert reads  # rehashed


def test_hidden_files_do_not_count(model_copy):
    before = resolve_model_revision(str(model_copy))
    (model_copy / ".cache").mkdir()
    (model_copy / ".cache" / "download.lock").write_text("pid 123")
    assert resolve_model_revision(str(model_copy)) == before


def write_adapter(folder: Path, weights: bytes) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text('{"r": 4}')
    (folder / "adapter_model.safetensors").write_bytes(weights)


def test_an_adapter_rewritten_in_place_changes_revision_and_keys(tmp_path):
    adapter = tmp_path / "adapter"
    write_adapter(adapter, b"\x01" * 64)
    first_rev, first_key = resolve_adapter_revision(str(adapter)), identify_key("tiny-random", str(adapter))
    assert first_rev.startswith("sha256:")
    write_adapter(adapter, b"\x02" * 64)  # retrained into the same folder: same names, same sizes
    assert resolve_adapter_revision(str(adapter)) != first_rev
    assert identify_key("tiny-random", str(adapter)) != first_key


def test_an_adapters_training_leftovers_do_not_count(tmp_path):
    adapter = tmp_path / "adapter"
    write_adapter(adapter, b"\x01" * 64)
    before = resolve_adapter_revision(str(adapter))
    (adapter / "train_log.jsonl").write_text('{"step": 1}\n')
    (adapter / "checkpoints" / "step-1").mkdir(parents=True)
    (adapter / "checkpoints" / "step-1" / "optimizer.pt").write_bytes(b"\x00" * 32)
    assert resolve_adapter_revision(str(adapter)) == before
    assert resolve_adapter_revision(None) == "" and resolve_adapter_revision("") == ""


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """huggingface_hub's cache layout for org/name: refs/main and refs/v1 point at snapshots."""
    cache = tmp_path / "hub"
    repo = cache / "models--org--name"
    for ref, commit in (("main", "a" * 40), ("v1", "b" * 40)):
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_a_hub_id_resolves_to_the_cached_commit(hub_cache):
    assert resolve_model_revision("org/name") == "a" * 40
    assert resolve_model_revision("org/name", "main") == "a" * 40
    assert resolve_model_revision("org/name", "v1") == "b" * 40
    assert resolve_model_revision("org/name", "c" * 40) == "c" * 40  # a commit is its own revision


def test_the_ref_decides_when_it_moves(hub_cache):
    (hub_cache / "models--org--name" / "refs" / "main").write_text("b" * 40)
    assert resolve_model_revision("org/name") == "b" * 40
    assert identify_key("org/name") != identify_key("org/other")


def test_a_single_snapshot_without_a_ref_resolves(hub_cache):
    repo = hub_cache / "models--org--solo" / "snapshots" / ("d" * 40)
    repo.mkdir(parents=True)
    assert resolve_model_revision("org/solo") == "d" * 40


def test_an_unknown_hub_id_falls_back_to_the_requested_revision(hub_cache):
    assert resolve_model_revision("org/never-downloaded") == ""
    assert resolve_model_revision("org/never-downloaded", "v2") == "v2"


def test_revision_key_joins_model_and_adapter(tmp_path, hub_cache):
    adapter = tmp_path / "adapter"
    write_adapter(adapter, b"\x01" * 64)
    spec = BackendSpec(model="org/name", adapter=str(adapter))
    assert revision_key(spec) == f"{'a' * 40}+{resolve_adapter_revision(str(adapter))}"
    assert revision_key(BackendSpec(model="org/name")) == "a" * 40
    served = BackendSpec(backend="openai", model="org/name", base_url="http://x", revision="v9")
    assert revision_key(served) == "v9"
    assert join_revisions("m", "") == "m"


def test_a_row_gives_the_same_revision_key_as_its_spec(tmp_path, hub_cache):
    adapter = tmp_path / "adapter"
    write_adapter(adapter, b"\x01" * 64)
    spec = BackendSpec(model="org/name", adapter=str(adapter))
    job = ChainJob(backend=spec).pinned()
    entry = ManifestEntry(video="v.mp4", id="v")
    row = failed_row(
        entry, InputError("x"), prompt_version="p", spec=spec, run_id="r", revisions=job.revisions
    )
    assert (row.model_revision, row.adapter_revision) == job.revisions
    assert row.revision_key == revision_key(spec)


def test_the_loaded_model_reports_the_resolved_revision(tiny_llm):
    assert tiny_llm.revision == resolve_model_revision("tiny-random")
    assert tiny_llm.describe()["adapter_revision"] == ""
