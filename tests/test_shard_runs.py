"""A build on a work pool deals its shards to `shard_runs` process-shards runs, each taking its shards in
turn in one process: the model is loaded (and on a GPU its decode step compiled) once per run, not once
per shard; a shard that fails leaves the run's other shards to finish; and the run holds its worker's
GPU slot once, for all of its shards. (The cluster path itself, a worker and deployment runs, is
tests/test_deployment_e2e.py.)"""

from __future__ import annotations

import threading

import pytest

from tests.conftest import make_manifest_videos
from v2t_foley.flows.build_dataset import new_run_id, shard_groups
from v2t_foley.flows.process_shard import ShardsFailed, process_shards
from v2t_foley.foley_core.backends import BackendSpec, load_backend, registry
from v2t_foley.foley_core.chain import ChainConfig
from v2t_foley.foley_core.manifest import read_manifest, write_entries
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.tasks.job import ChainJob


@pytest.mark.parametrize(("shards", "runs"), [(5, 0), (5, 2), (5, 5), (2, 8), (7, 3), (1, 1)])
def test_every_shard_goes_to_exactly_one_run(shards, runs):
    groups = shard_groups(shards, runs)
    assert sorted(index for group in groups for index in group) == list(range(shards))
    assert len(groups) == (shards if runs == 0 else min(runs, shards))
    assert max(map(len, groups)) - min(map(len, groups)) <= 1  # dealt in turn: no run gets two more


def test_a_run_loads_the_model_once_for_its_shards_and_a_failed_shard_leaves_the_others(
    tmp_path, prefect_harness, monkeypatch
):
    """Three shards in one run: the middle one's shard manifest is gone (it fails, after its retry);
    the two others are committed, with one model load between them."""
    manifest, durations = make_manifest_videos(tmp_path / "videos")
    good = [entry for entry in read_manifest(manifest) if entry.id in durations]
    files = [
        write_entries(good[:2], str(tmp_path / "s0.jsonl")),
        str(tmp_path / "missing.jsonl"),
        write_entries(good[2:], str(tmp_path / "s2.jsonl")),
    ]
    loads: list[BackendSpec] = []
    registry.release_shared_model()  # a model an earlier test left would be no load at all
    monkeypatch.setattr(registry._registry, "_loader", lambda spec: loads.append(spec) or load_backend(spec))
    store = str(tmp_path / "store")
    job = ChainJob(backend=BackendSpec(model="tiny-random", device="cpu"), config=ChainConfig(timing="model"))
    try:
        with pytest.raises(ShardsFailed, match=r"1 of 3 shard\(s\) failed: shard 1: ") as failed:
            process_shards(files, [0, 1, 2], store, job, new_run_id())
    finally:
        registry.release_shared_model()
    assert "shard 0" not in str(failed.value) and "shard 2" not in str(failed.value)
    assert len(loads) == 1
    rows = DatasetStore(store).read_rows()
    assert sorted(r["id"] for r in rows if r["status"] == "ok") == sorted(durations)


def test_the_gpu_slot_is_held_once_by_its_process(prefect_harness, monkeypatch):
    """A process-shards run holds its worker's slot; a shard inside it (any thread of the process) goes
    on without taking a second one, which, with one slot, would wait for the run's own forever."""
    from prefect.client.orchestration import get_client

    from v2t_foley.tasks.gpu import gpu_limit_name, gpu_slot

    monkeypatch.setenv("WORKER_ID", "slot-test")

    def active() -> int:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(gpu_limit_name()).active_slots

    inner = threading.Event()

    def shard() -> None:
        with gpu_slot():
            inner.set()

    with gpu_slot():
        assert active() == 1
        thread = threading.Thread(target=shard, daemon=True)
        thread.start()
        thread.join(20)
        assert inner.is_set(), "the inner slot waited for the process's own"
        assert active() == 1
    assert active() == 0
    with gpu_slot():  # released: the next run on this worker takes it
        assert active() == 1
    assert active() == 0
