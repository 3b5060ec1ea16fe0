"""Two `foley build-dataset` runs on one manifest and one store at the same moment (a nightly schedule
overlapping a manual run), each in its own process with its own temporary Prefect server, on local disk
and on S3 (moto's server): both exit 0 and the store shows exactly one row per manifest entry."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import make_manifest_videos
from tests.servers import moto_bucket
from v2t_foley.foley_core.manifest import read_manifest
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.store.verify import verify

pytestmark = pytest.mark.slow


def _two_builds_at_once(manifest: str, store: str, tmp_path, foley_cache, extra_env: dict[str, str]) -> list:
    runs = []
    for n in range(2):
        env = {
            **os.environ,
            **extra_env,
            "FOLEY_CACHE_DIR": str(foley_cache),
            "PREFECT_HOME": str(tmp_path / f"prefect{n}"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # two servers start on 2 cores
        }
        command = [sys.executable, "-m", "v2t_foley.flows.cli", "build-dataset", "--manifest", manifest]
        command += ["--store", store, "--model", "tiny-random", "--shard-size", "2"]
        runs.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    results = []
    for run in runs:
        _out, err = run.communicate(timeout=600)
        results.append((run.returncode, err))
    return results


def _one_row_per_entry(store: DatasetStore, manifest: str) -> None:
    rows = store.read_rows()
    assert Counter(r["id"] for r in rows) == Counter(e.id for e in read_manifest(manifest))
    assert verify(store).clean, verify(store).lines()


def test_two_overlapping_builds_on_local_disk(tmp_path, foley_cache):
    manifest, _ = make_manifest_videos(tmp_path / "videos")
    results = _two_builds_at_once(manifest, str(tmp_path / "store"), tmp_path, foley_cache, {})
    assert [code for code, _ in results] == [0, 0], results
    assert sum("store busy" in err for _, err in results) <= 1
    _one_row_per_entry(DatasetStore(str(tmp_path / "store")), manifest)


def test_two_overlapping_builds_on_s3(tmp_path, foley_cache, monkeypatch):
    manifest, _ = make_manifest_videos(tmp_path / "videos")
    with moto_bucket(tmp_path / "moto.log", "overlap", monkeypatch) as bucket:
        results = _two_builds_at_once(manifest, "s3://overlap/store", tmp_path, foley_cache, bucket.env)
        assert [code for code, _ in results] == [0, 0], results
        store = DatasetStore("s3://overlap/store")
        store.fs.invalidate_cache()
        _one_row_per_entry(store, manifest)
