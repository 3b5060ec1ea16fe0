"""Manifests in every supported format, and every way one can be wrong."""

from __future__ import annotations

import pandas as pd
import pytest

from foley_core.errors import ManifestError
from foley_core.manifest import derive_id, read_manifest, write_manifest

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
