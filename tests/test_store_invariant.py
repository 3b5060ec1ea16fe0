"""The store invariant: a loaded dataset never shows two rows for one (id, prompt version, model), whatever
the order, overlap, retries or crashes of the writers; on local disk and on S3 (moto's server)."""

from __future__ import annotations

import multiprocessing
from collections import Counter

import datasets
import pytest

from tests.servers import moto_bucket
from v2t_foley.foley_core.schema.rows import DatasetRow
from v2t_foley.foley_core.store import DatasetStore, render_card
from v2t_foley.foley_core.store.markers import UnsafeStoreError


def row(
    row_id: str, status: str = "ok", revision: str = "r1", split: str = "train", note: str = ""
) -> DatasetRow:
    return DatasetRow(
        id=row_id,
        video=f"/v/{row_id}.mp4",
        split=split,
        prompt_version="v1",
        model_id="m",
        model_revision=revision,
        backend="transformers",
        status=status,
        script="{}" if status == "ok" else "",
        error=note if status == "failed" else "",
        events="[]",
    )


def shown(store: DatasetStore) -> list[dict]:
    return store.read_rows()


def keys_of(rows: list[dict]) -> Counter:
    return Counter((r["id"], r["prompt_version"], r["model_id"]) for r in rows)


def test_an_ok_row_replaces_a_failed_one_and_the_old_files_go(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    first = store.write_shard([row("a", "failed"), row("b")], "run1", 0)
    second = store.write_shard([row("a")], "run2", 0)
    assert second is not None and second.supersedes == [first.name]
    rows = shown(store)
    assert keys_of(rows) == Counter({("a", "v1", "m"): 1, ("b", "v1", "m"): 1})
    assert {r["id"]: r["status"] for r in rows} == {"a": "ok", "b": "ok"}
    assert (second.added_ok, second.added_failed, second.rows) == (1, 0, 2)  # b carried, not added
    # the superseded marker and its file are gone; only the live files remain
    on_disk = {p.name for p in (tmp_path / "s" / "data").iterdir()}
    assert on_disk == {p.rsplit("/", 1)[1] for p in second.paths()}
    assert [p.stem for p in (tmp_path / "s" / "_shards").iterdir()] == [second.name]


def test_the_same_rows_offered_again_are_dropped(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a"), row("b", "failed")], "run1", 0)
    assert store.write_shard([row("a"), row("b", "failed", note="again")], "run2", 0) is None
    assert keys_of(shown(store)) == Counter({("a", "v1", "m"): 1, ("b", "v1", "m"): 1})
    assert [r["error"] for r in shown(store) if r["id"] == "b"] == [""]  # the first failure stays


def test_retry_failed_replaces_a_failed_row_even_with_a_failure(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("b", "failed", note="first")], "run1", 0)
    store.write_shard([row("b", "failed", note="second")], "run2", 0, replace_failed=True)
    assert [r["error"] for r in shown(store)] == ["second"]


def test_a_new_model_revision_replaces_the_old_rows(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a", revision="old"), row("b", revision="old")], "run1", 0)
    store.write_shard([row("a", revision="new")], "run2", 0)
    revisions = {r["id"]: r["model_revision"] for r in shown(store)}
    assert revisions == {"a": "new", "b": "old"}
    assert store.done()[("a", "v1", "m")] == ("ok", "new")


def test_the_card_and_load_dataset_show_one_row_per_key(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a", "failed"), row("b"), row("c", split="test")], "run1", 0)
    store.write_shard([row("a"), row("c", "failed")], "run2", 0)  # a replaced; c offered worse: dropped
    loaded = datasets.load_dataset(str(tmp_path / "s"))
    ids = [i for split in loaded.values() for i in split["id"]]
    assert sorted(ids) == ["a", "b", "c"]
    assert loaded["test"]["status"] == ["ok"]


def test_a_crash_after_the_marker_write_leaves_one_consistent_view(tmp_path, monkeypatch):
    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a", "failed"), row("b")], "run1", 0)
    crashing = DatasetStore(str(tmp_path / "s"))

    def crash(path: str) -> None:
        raise OSError("killed during clean-up")

    monkeypatch.setattr(crashing.fs, "rm_file", crash)
    with pytest.raises(OSError):
        crashing.write_shard([row("a")], "run2", 0)
    monkeypatch.undo()
    # the superseded marker is still on disk, but nothing shows its rows twice
    assert len(list((tmp_path / "s" / "_shards").iterdir())) == 2
    assert keys_of(shown(store)) == Counter({("a", "v1", "m"): 1, ("b", "v1", "m"): 1})
    ids = [i for split in datasets.load_dataset(str(tmp_path / "s")).values() for i in split["id"]]
    assert sorted(ids) == ["a", "b"]


def test_a_marker_naming_a_file_outside_the_store_is_refused(tmp_path):
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(b"not for the dataset")
    store = DatasetStore(str(tmp_path / "s"))
    marker = store.write_shard([row("a")], "run1", 0)
    tampered = marker.model_copy(update={"files": {"train": ["data/../../secret.parquet"]}, "commit": "evil"})
    store.write_marker(tampered)
    with pytest.raises(UnsafeStoreError, match=r"run1-00000-evil\.json.*outside the store"):
        store.markers()
    with pytest.raises(UnsafeStoreError):
        store.load()
    with pytest.raises(UnsafeStoreError):
        render_card(store)


def _writer(uri: str, run: str, ids: list[str], start, env: dict[str, str]) -> None:
    import os

    os.environ.update(env)
    start.wait()
    store = DatasetStore(uri)
    for index, chunk in enumerate([ids[i : i + 2] for i in range(0, len(ids), 2)]):
        store.write_shard([row(i) for i in chunk], run, index)


def _race(uri: str, env: dict[str, str]) -> None:
    """Four processes offering overlapping rows at the same moment."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    ids = [f"v{i}" for i in range(6)]
    writers = [
        context.Process(target=_writer, args=(uri, f"run{n}", ids[n % 2 :] + ids[: n % 2], start, env))
        for n in range(4)
    ]
    for writer in writers:
        writer.start()
    start.set()
    for writer in writers:
        writer.join(timeout=180)
        assert writer.exitcode == 0


def test_overlapping_writers_on_local_disk(tmp_path):
    uri = str(tmp_path / "s")
    _race(uri, {})
    counts = keys_of(DatasetStore(uri).read_rows())
    assert counts == Counter({(f"v{i}", "v1", "m"): 1 for i in range(6)})


@pytest.mark.slow
def test_overlapping_writers_on_s3(tmp_path, monkeypatch):
    with moto_bucket(tmp_path / "moto.log", "race", monkeypatch) as bucket:
        _race("s3://race/store", bucket.env)
        store = DatasetStore("s3://race/store")
        store.fs.invalidate_cache()
        counts = keys_of(store.read_rows())
        assert counts == Counter({(f"v{i}", "v1", "m"): 1 for i in range(6)})
        assert not store.fs.exists("race/store/_locks/commit.json")  # released


def test_a_lease_left_by_a_killed_process_is_taken_at_once(tmp_path):
    import signal
    import subprocess
    import sys

    uri = str(tmp_path / "s")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from foley_core.store import DatasetStore\n"
            f"assert DatasetStore({uri!r}).lease('build', 'a build').try_acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lease = DatasetStore(uri).lease("build", "another build")
        assert not lease.try_acquire() and "a build" in lease.holder().describe()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert lease.try_acquire()  # no need to wait out the time to live: the holder is gone
    lease.release()


def test_a_marker_left_superseded_by_a_crash_stays_superseded(tmp_path, monkeypatch):
    """A crash leaves A on storage, superseded by B; a later write superseding B must not revive A."""
    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a", "failed"), row("b")], "run1", 0)
    crashing = DatasetStore(str(tmp_path / "s"))
    monkeypatch.setattr(crashing.fs, "rm_file", lambda path: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        crashing.write_shard([row("a")], "run2", 0)  # B supersedes A; A's files stay
    monkeypatch.undo()
    store.write_shard([row("b", revision="r2")], "run3", 0)  # C supersedes B
    assert keys_of(shown(store)) == Counter({("a", "v1", "m"): 1, ("b", "v1", "m"): 1})


def test_nothing_is_written_while_a_marker_cannot_be_read(tmp_path):
    from v2t_foley.foley_core.store.commit import StoreDamaged

    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a")], "run1", 0)
    (tmp_path / "s" / "_shards" / "broken.json").write_text("{half a marker")
    with pytest.raises(StoreDamaged, match="foley verify"):
        store.write_shard([row("a", "failed"), row("b")], "run2", 0)
    assert [r["id"] for r in shown(store)] == ["a"]


def test_a_writer_that_lost_its_lease_commits_nothing(tmp_path, monkeypatch):
    from v2t_foley.foley_core.store.lease import Lease, LeaseLost

    store = DatasetStore(str(tmp_path / "s"))
    store.write_shard([row("a")], "run1", 0)

    def lost(self) -> None:
        raise LeaseLost("taken over")

    monkeypatch.setattr(Lease, "check", lost)
    with pytest.raises(LeaseLost):
        store.write_shard([row("b")], "run2", 0)
    monkeypatch.undo()
    assert [r["id"] for r in shown(store)] == ["a"]


def test_a_marker_with_a_path_in_its_name_is_refused(tmp_path):
    store = DatasetStore(str(tmp_path / "s"))
    marker = store.write_shard([row("a")], "run1", 0)
    tampered = marker.model_copy(update={"run_id": "../../x", "commit": "evil"})
    (tmp_path / "s" / "_shards" / "innocent.json").write_text(tampered.model_dump_json())
    with pytest.raises(UnsafeStoreError, match=r"innocent\.json.*invalid name"):
        store.markers()
