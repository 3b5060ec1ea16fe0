"""A manifest written by someone else: an escaping split, a video outside the allowed root, ids that are
paths. The build writes nothing outside its store, fails exactly those rows, and names why."""

from __future__ import annotations

import shutil

from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.foley_core.manifest import write_manifest
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.foley_core.store.verify import verify


def test_an_untrusted_manifest_stays_inside_the_store(tmp_path, scene_video, prefect_harness):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    inside = shutil.copy(scene_video, allowed / "clip.mp4")
    outside = shutil.copy(scene_video, tmp_path / "elsewhere.mp4")
    manifest = write_manifest(
        [
            {"video": str(inside), "id": "../../ok", "split": "train"},
            {"video": str(inside), "id": "escape", "split": "../../escaped"},
            {"video": str(outside), "id": "outside", "split": "train"},
            {"video": f"{allowed}/../elsewhere.mp4", "id": "dotdot", "split": "test"},
        ],
        str(tmp_path / "m.csv"),
    )
    before = {p for p in tmp_path.rglob("*") if "store" not in p.parts}
    build_dataset(
        manifest=manifest,
        store=str(tmp_path / "st" / "inner" / "store"),
        model="tiny-random",
        allow_roots=[str(allowed)],
    )
    after = {p for p in tmp_path.rglob("*") if "store" not in p.parts}
    assert after - before == {tmp_path / "st", tmp_path / "st" / "inner"}  # nothing but the store's parents

    store = DatasetStore(str(tmp_path / "st" / "inner" / "store"))
    rows = {r["id"]: r for r in store.read_rows()}
    assert rows["../../ok"]["status"] == "ok"
    assert rows["escape"]["status"] == "failed" and rows["escape"]["split"] == "train"
    assert "../../escaped" in rows["escape"]["error"]
    for row_id in ("outside", "dotdot"):
        assert rows[row_id]["status"] == "failed" and rows[row_id]["error_kind"] == "disallowed_source"
    assert all(p.startswith("data/") for m in store.markers() for p in m.paths())
    assert verify(store).clean
