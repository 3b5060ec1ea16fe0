"""The whole factory against S3: moto's S3 server on 127.0.0.1, reached through s3fs with credentials
and endpoint from the environment, for the manifest, the videos, the store and the step cache."""

from __future__ import annotations

import datasets
import fsspec
import pandas as pd
import pytest

from tests.conftest import make_manifest_videos
from tests.servers import moto_bucket
from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.foley_core.store import DatasetStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    with moto_bucket(tmp_path_factory.mktemp("moto") / "moto.log", "foley", patch) as bucket:
        yield bucket.endpoint
    patch.undo()


def test_build_dataset_on_s3(s3, tmp_path, bad_videos, prefect_harness, monkeypatch):
    # The suite runs with HF_HUB_OFFLINE=1, which also stops `datasets` from reading any URL; S3 here is
    # the local moto server, so reading it is allowed for this test.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    local_manifest, durations = make_manifest_videos(tmp_path / "videos", {"corrupt": bad_videos["corrupt"]})
    fs = fsspec.filesystem("s3")
    # upload every video and rewrite the manifest to point at s3://

    frame = pd.read_csv(local_manifest, dtype=str, keep_default_na=False)
    for k, video in enumerate(frame["video"]):
        if video:
            remote = f"foley/videos/{k}-{video.rsplit('/', 1)[-1]}"
            fs.put_file(video, remote)
            frame.loc[k, "video"] = f"s3://{remote}"
    with fs.open("foley/manifests/m.csv", "w") as handle:
        handle.write(frame.to_csv(index=False))

    summary = build_dataset(
        manifest="s3://foley/manifests/m.csv", store="s3://foley/store", model="tiny-random", shard_size=2
    )
    assert (summary.new_ok_rows, summary.new_failed_rows) == (3, 2)  # corrupt + blank row
    store = DatasetStore("s3://foley/store")
    assert fs.exists("foley/store/README.md") and fs.ls("foley/store/_cache")
    loaded = datasets.load_dataset("parquet", data_files=store.data_urls())
    by_id = {row["id"]: row for split in loaded.values() for row in split}
    assert by_id["bad-corrupt"]["error_kind"] == "corrupt"
    for row_id in durations:
        assert by_id[row_id]["status"] == "ok" and by_id[row_id]["video"].startswith("s3://foley/videos/")
        assert by_id[row_id]["script"].keys() == {"foley", "fx", "ambience", "dialogue"}

    # a second store on S3 finds every chain step in the S3 result storage
    again = build_dataset(
        manifest="s3://foley/manifests/m.csv",
        store="s3://foley/store2",
        model="tiny-random",
        shard_size=2,
        result_storage="s3://foley/store/_cache",
    )
    assert again.computed == {} and again.new_ok_rows == 3
