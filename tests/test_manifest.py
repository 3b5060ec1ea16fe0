"""Manifests in every supported format, and every way one can be wrong."""

from __future__ import annotations

import pandas as pd
import pytest

from v2t_foley.foley_core.errors import ManifestError
from v2t_foley.foley_core.manifest import derive_id, read_manifest, write_manifest

ROWS = [
    {"video": "/data/a.mp4", "id": "a", "split": "train", "scene": "kitchen", "rating": 4},
    {"video": "s3://bucket/b.mp4", "id": "b", "split": "test", "scene": "street", "rating": 5},
]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_formats_round_trip(tmp_path, suffix):
    uri = write_manifest(ROWS, str(tmp_path / f"m{suffix}"))
    entries = read_manifest(uri)
    assert [(e.id, e.video, e.split) for e in entries] == [
        ("a", "/data/a.mp4", "train"),
        ("b", "s3://bucket/b.mp4", "test"),
    ]
    assert entries[0].metadata["scene"] == "kitchen"
    assert str(entries[1].metadata["rating"]) == "5"  # CSV keeps text, the others keep numbers
    assert all(e.problem is None for e in entries)


def test_defaults_for_id_and_split(tmp_path):
    uri = write_manifest([{"video": "/x/clip.mp4"}], str(tmp_path / "m.jsonl"))
    (entry,) = read_manifest(uri)
    assert entry.id == derive_id("/x/clip.mp4") and entry.split == "train" and entry.metadata == {}


def test_fsspec_manifest(tmp_path):
    write_manifest(ROWS, "memory://manifests/m.parquet")
    assert len(read_manifest("memory://manifests/m.parquet")) == 2


def test_missing_video_column(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame([{"path": "/a.mp4"}]).to_csv(path, index=False)
    with pytest.raises(ManifestError, match=r"no .video. column.*path"):
        read_manifest(str(path))


def test_duplicate_ids_are_named(tmp_path):
    uri = write_manifest(
        [{"video": "/a.mp4", "id": "x"}, {"video": "/b.mp4", "id": "x"}], str(tmp_path / "m.csv")
    )
    with pytest.raises(ManifestError, match=r"duplicate ids.*x"):
        read_manifest(uri)


def test_unreadable_and_missing_and_unknown(tmp_path):
    broken = tmp_path / "m.parquet"
    broken.write_text("not parquet at all")
    with pytest.raises(ManifestError, match="cannot read the manifest as parquet"):
        read_manifest(str(broken))
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(str(tmp_path / "nope.csv"))
    with pytest.raises(ManifestError, match="unknown manifest format"):
        read_manifest(str(tmp_path / "m.xlsx"))


def test_a_bad_row_fails_alone(tmp_path):
    uri = write_manifest(
        [{"video": "/a.mp4", "id": "a"}, {"video": "", "id": "b"}, {"video": "/c.mp4", "id": "c"}],
        str(tmp_path / "m.csv"),
    )
    entries = read_manifest(uri)
    assert [e.problem is None for e in entries] == [True, False, True]
    assert "row 2" in entries[1].problem


BAD_SPLITS = ["../../escaped", "a/b", "train-2", "x y", "..", "train.clean", "tr\x00ain"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_invalid_split_fails_its_row_in_the_default_split(tmp_path, suffix):
    rows = [{"video": f"/v/{k}.mp4", "id": f"bad{k}", "split": split} for k, split in enumerate(BAD_SPLITS)]
    rows += [
        {"video": "/v/ok.mp4", "id": "ok", "split": "validation"},
        {"video": "/v/blank.mp4", "id": "blank", "split": ""},  # blank means the default
        {"video": "/v/uni.mp4", "id": "uni", "split": "entraînement_訓練2"},  # unicode word characters
    ]
    entries = {e.id: e for e in read_manifest(write_manifest(rows, str(tmp_path / f"m{suffix}")))}
    for k, split in enumerate(BAD_SPLITS):
        entry = entries[f"bad{k}"]
        assert entry.split == "train"  # never the raw value: it would name shard folders
        assert repr(split) in entry.problem and r"\w+" in entry.problem
        assert f"row {k + 1}" in entry.problem
    assert (entries["ok"].split, entries["ok"].problem) == ("validation", None)
    assert (entries["blank"].split, entries["blank"].problem) == ("train", None)
    assert (entries["uni"].split, entries["uni"].problem) == ("entraînement_訓練2", None)


def test_a_bad_split_and_a_blank_video_are_both_named(tmp_path):
    uri = write_manifest([{"video": "", "id": "x", "split": "a/b"}], str(tmp_path / "m.jsonl"))
    (entry,) = read_manifest(uri)
    assert "empty or non-text 'video'" in entry.problem and "'a/b'" in entry.problem


def test_a_bad_split_becomes_a_failed_row_in_train(tmp_path):
    from v2t_foley.foley_core.backends import BackendSpec
    from v2t_foley.foley_core.errors import ManifestRowError
    from v2t_foley.foley_core.records import failed_row

    uri = write_manifest([{"video": "/v.mp4", "id": "x", "split": "../../escaped"}], str(tmp_path / "m.csv"))
    (entry,) = read_manifest(uri)
    error = ManifestRowError(entry.problem)  # what process-shard makes of a row with a problem
    row = failed_row(entry, error, prompt_version="v", spec=BackendSpec(model="m"), run_id="r")
    assert (row.status, row.split, row.error_kind) == ("failed", "train", "manifest_row")
    assert "../../escaped" in row.error
