"""A build on a work pool deals its shards to `shard_runs` process-shards runs, each taking its shards in
turn in one process (flows/shard_runs.py): the model is loaded (and on a GPU its decode step compiled)
once per run, not once per shard; a run takes the shards no run has taken after its own, and a shard
another run finished is taken by none; a shard that fails leaves the run's other shards to finish; and
the run holds its machine's GPU slot once (tests/test_gpu_slot.py). (The cluster path
itself, a worker and deployment runs, is tests/test_deployment_e2e.py.)"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import make_manifest_videos
from v2t_foley.flows import shard_claims
from v2t_foley.flows.build_dataset import new_run_id
from v2t_foley.flows.process_shard import ShardsFailed, process_shards
from v2t_foley.flows.shard_claims import claim, finish, marked, shard_manifest, unfinished
from v2t_foley.flows.shard_runs import DEFAULT_RUNS, shard_groups
from v2t_foley.foley_core.backends import BackendSpec, load_backend, registry
from v2t_foley.foley_core.chain import ChainConfig
from v2t_foley.foley_core.manifest import ManifestEntry, read_manifest, write_entries
from v2t_foley.foley_core.store import DatasetStore
from v2t_foley.tasks.job import ChainJob

JOB = ChainJob(backend=BackendSpec(model="tiny-random", device="cpu"), config=ChainConfig(timing="model"))


@pytest.mark.parametrize(
    ("shards", "runs", "made"),
    [(5, 0, 5), (600, 0, DEFAULT_RUNS), (5, 2, 2), (5, 5, 5), (2, 8, 2), (7, 3, 3), (1, 1, 1)],
)
def test_every_shard_goes_to_exactly_one_run(shards, runs, made):
    """0: a run per shard, up to DEFAULT_RUNS; N: N runs, never more than the shards."""
    groups = shard_groups(shards, runs)
    assert sorted(index for group in groups for index in group) == list(range(shards))
    assert len(groups) == made
    assert max(map(len, groups)) - min(map(len, groups)) <= 1  # dealt in turn: no run gets two more


@pytest.fixture
def build(tmp_path, monkeypatch):
    """A build's three shards written to a store as build-dataset writes them (one good video each),
    and the model loads counted (the real loader: a model an earlier test left is released first)."""
    manifest, durations = make_manifest_videos(tmp_path / "videos")
    good = [entry for entry in read_manifest(manifest) if entry.id in durations]
    dataset, run_id = DatasetStore(str(tmp_path / "store")), new_run_id()
    for index, entry in enumerate(good):
        write_entries([entry], shard_manifest(dataset, run_id, index))
    loads: list[BackendSpec] = []
    registry.release_shared_model()
    monkeypatch.setattr(registry._registry, "_loader", lambda spec: loads.append(spec) or load_backend(spec))
    yield dataset, run_id, [entry.id for entry in good], loads
    registry.release_shared_model()


def ok_ids(dataset: DatasetStore) -> list[str]:
    return sorted(r["id"] for r in dataset.read_rows() if r["status"] == "ok")


def test_a_run_loads_the_model_once_and_takes_the_shards_no_run_took(build, prefect_harness):
    """Two runs, one after the other: the first takes its shard 1, then 0 and 2, which no run has
    taken; the second, dealt shard 0, finds every shard finished and takes none."""
    dataset, run_id, ids, loads = build
    first = process_shards(dataset.uri, JOB, run_id, [1], shard_count=3)
    assert [summary.index for summary in first] == [1, 0, 2]
    assert len(loads) == 1 and ok_ids(dataset) == sorted(ids)
    assert unfinished(dataset, run_id, 3) == []
    assert process_shards(dataset.uri, JOB, run_id, [0], shard_count=3) == []
    assert len(loads) == 1 and ok_ids(dataset) == sorted(ids)  # no shard twice


def test_a_failed_shard_leaves_the_others_and_is_named(build, prefect_harness):
    """Shard 1's entries are damaged: it fails (after its retry) and is marked finished with its error;
    shards 0 and 2 are committed; the run fails naming shard 1 alone."""
    dataset, run_id, ids, _loads = build
    with dataset.fs.open(dataset.path(f"_runs/{run_id}/00001.jsonl"), "w") as damaged:
        damaged.write("{not json\n")
    with pytest.raises(ShardsFailed, match=r"1 of the 3 shard\(s\) this run took failed: shard 1: ") as error:
        process_shards(dataset.uri, JOB, run_id, [0, 1, 2])
    assert "shard 0" not in str(error.value) and "shard 2" not in str(error.value)
    assert ok_ids(dataset) == sorted([ids[0], ids[2]])
    assert unfinished(dataset, run_id, 3) == []  # the failed one too: no run takes it again


def test_a_run_takes_nothing_once_its_build_has_ended(build, prefect_harness):
    """build-dataset removes its run folder when it ends (or stops): a run that starts late ends."""
    dataset, run_id, _ids, loads = build
    dataset.fs.rm(dataset.path(f"_runs/{run_id}"), recursive=True)
    assert process_shards(dataset.uri, JOB, run_id, [0], shard_count=3) == []
    assert loads == []


def when_marked(dataset: DatasetStore, run_id: str, shards: set[int], then) -> threading.Thread:
    """A thread that calls `then()` once `shards` are marked: another run's next move,
    made while this test's run waits for it (given up after 10 minutes)."""

    def watch() -> None:
        deadline = time.monotonic() + 600
        while not shards <= marked(dataset, run_id):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_shard_another_run_holds_is_left_to_it(build, prefect_harness, monkeypatch):
    """Another run works on shard 1 (in this process here: its claim renews) and finishes it a second
    after this run is done with 0 and 2: this run waits for it, takes it at no point, and ends once it
    is marked."""
    dataset, run_id, ids, _loads = build
    monkeypatch.setattr(shard_claims, "SWEEP_POLL_S", 0.05)
    monkeypatch.setattr(shard_claims, "SWEEP_WAIT_S", 120.0)  # fail, not hang
    held = claim(dataset, run_id, 1)

    def other_run_finishes() -> None:
        time.sleep(1)
        finish(dataset, run_id, 1)
        held.release()

    other = when_marked(dataset, run_id, {0, 2}, other_run_finishes)
    try:
        done = process_shards(dataset.uri, JOB, run_id, [0], shard_count=3)
        assert unfinished(dataset, run_id, 3) == []  # it waited for shard 1's mark
    finally:
        other.join(30)
        held.release()
    assert [summary.index for summary in done] == [0, 2]
    assert ok_ids(dataset) == sorted([ids[0], ids[2]])


@pytest.mark.parametrize("crashed_before", [False, True], ids=["first-crash", "second-crash"])
def test_a_shard_whose_run_crashed_is_taken_over_once(build, prefect_harness, monkeypatch, crashed_before):
    """Another run's process claims shard 1 and is killed (SIGKILL, as a preempted or out-of-memory
    worker dies) once this run has passed over it: this run, waiting for the build's last shard, takes
    it over (its holder's process is gone from this machine) and finishes it within the build. When a
    run's process had died on it before, it is marked failed instead, not taken a third time: a shard
    that kills its process would otherwise crash every run of the build in turn."""
    dataset, run_id, ids, _loads = build
    monkeypatch.setattr(shard_claims, "SWEEP_POLL_S", 0.05)
    monkeypatch.setattr(shard_claims, "SWEEP_WAIT_S", 120.0)  # fail, not hang
    if crashed_before:  # as the run that took it over the first time noted it
        dataset.fs.pipe(dataset.path(f"_runs/{run_id}/00001.crashed"), b"{}")
    holder = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_SLEEP, dataset.uri, run_id, "1"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "claimed"

        def crash() -> None:
            holder.kill()
            holder.wait()  # reaped: a zombie still answers to its pid

        killer = when_marked(dataset, run_id, {0, 2}, crash)
        if crashed_before:
            with pytest.raises(ShardsFailed, match=r"failed: shard 1: two runs left it unfinished"):
                process_shards(dataset.uri, JOB, run_id, [0], shard_count=3)
        else:
            done = process_shards(dataset.uri, JOB, run_id, [0], shard_count=3)
            assert [summary.index for summary in done] == [0, 2, 1]
        killer.join(30)
    finally:
        holder.kill()
        holder.wait()
    assert ok_ids(dataset) == (sorted([ids[0], ids[2]]) if crashed_before else sorted(ids))
    assert unfinished(dataset, run_id, 3) == []
    assert dataset.fs.exists(dataset.path(f"_runs/{run_id}/00001.crashed"))


def test_shards_refused_for_killing_their_runs_do_not_stop_the_run(build, prefect_harness):
    """Shards 0 and 1 each killed a run before (their notes) and their holders' processes are gone now
    (SIGKILLed): this run takes each over, refuses it (marked failed), and goes on to shard 2. A
    refusal says nothing of this run's process, so two in a row do not stop it as two failures do."""
    dataset, run_id, ids, _loads = build
    for index in (0, 1):
        dataset.fs.pipe(dataset.path(f"_runs/{run_id}/{index:05d}.crashed"), b"{}")
        holder = subprocess.Popen(
            [sys.executable, "-c", CLAIM_AND_SLEEP, dataset.uri, run_id, str(index)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "claimed"
        finally:
            holder.kill()
            holder.wait()
    with pytest.raises(ShardsFailed) as raised:
        process_shards(dataset.uri, JOB, run_id, [0], shard_count=3)
    assert "2 of the 3 shard(s) this run took failed" in str(raised.value)
    assert "it stopped" not in str(raised.value)
    assert ok_ids(dataset) == [ids[2]] and unfinished(dataset, run_id, 3) == []


CLAIM_AND_SLEEP = """
import sys, time
from v2t_foley.flows import shard_claims
from v2t_foley.foley_core.store import DatasetStore
shard_claims.CLAIM_TTL_S = float(sys.argv[4]) if len(sys.argv) > 4 else shard_claims.CLAIM_TTL_S
assert shard_claims.claim(DatasetStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])) is not None
print("claimed", flush=True)
time.sleep(600)
"""


def test_a_run_whose_claim_was_taken_over_does_not_mark_the_shard(build, prefect_harness, monkeypatch):
    """A run's claim lapses while it works on shard 0 (its renewals stop, as on a frozen machine: here its
    renewing thread is stopped, a stand-in, since nothing here freezes a machine) and another run takes
    the shard over: the first run's finish writes no mark; the taker's does."""
    from prefect import flow

    dataset, run_id, _ids, _loads = build
    monkeypatch.setattr(shard_claims, "CLAIM_TTL_S", 1.0)
    frozen = claim(dataset, run_id, 0)
    frozen._stop.set()
    frozen._renewer.join(10)
    time.sleep(1.5)  # past its expiry
    taker = claim(dataset, run_id, 0)
    assert taker is not None and taker.left_by is not None

    @flow(name="finish-shard")
    def finishing(shard) -> set[int]:
        finish(dataset, run_id, 0, shard=shard)
        return marked(dataset, run_id)

    try:
        assert finishing(frozen) == set()  # the frozen run, woken: not its mark to write
        assert finishing(taker) == {0}
    finally:
        taker.release()


def test_a_shard_whose_videos_all_fail_in_the_model_stops_the_run(build, prefect_harness, monkeypatch):
    """The model cannot load (a stand-in for a broken device, which nothing here can produce: the
    loader raises): shard 0's video fails in the model's steps, the run takes no more shards and fails
    saying why."""
    dataset, run_id, _ids, _loads = build

    def broken(spec):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(registry._registry, "_loader", broken)
    with pytest.raises(ShardsFailed, match="it stopped: every video of shard 0 failed in the model's steps"):
        process_shards(dataset.uri, JOB, run_id, [0], shard_count=3)
    assert unfinished(dataset, run_id, 3) == [1, 2]  # left to the other runs


def test_a_machine_whose_runs_stopped_twice_takes_no_more_of_the_builds_shards(
    build, prefect_harness, monkeypatch
):
    """On one machine (`WORKER_ID`) the model cannot load (the same stand-in as above): its first two
    runs, fresh processes as a worker starts them, each stop after a shard; its third takes nothing, so a
    broken machine does not go through the build's shards a run at a time. Another machine's run takes
    the shard left."""
    dataset, run_id, ids, _loads = build

    def broken(spec):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with monkeypatch.context() as machine:
        machine.setenv("WORKER_ID", "broken-gpu.example.com")
        machine.setattr(registry._registry, "_loader", broken)
        for index in (0, 1):
            with pytest.raises(ShardsFailed, match="it stopped: every video of shard"):
                process_shards(dataset.uri, JOB, run_id, [index], shard_count=3)
        assert process_shards(dataset.uri, JOB, run_id, [2], shard_count=3) == []
    assert unfinished(dataset, run_id, 3) == [2]
    monkeypatch.setenv("WORKER_ID", "broken-gpu")  # a name that only begins like the broken one's
    assert [summary.index for summary in process_shards(dataset.uri, JOB, run_id, [2], shard_count=3)] == [2]
    assert ids[2] in ok_ids(dataset)


def test_shards_failing_in_a_row_stop_the_run(build, prefect_harness):
    """Two shards in a row fail (their entries are damaged here): the run stops taking shards, rather
    than mark the build's shards failed one after another."""
    dataset, run_id, _ids, _loads = build
    for index in (0, 1):
        with dataset.fs.open(dataset.path(f"_runs/{run_id}/{index:05d}.jsonl"), "w") as damaged:
            damaged.write("{not json\n")
    with pytest.raises(ShardsFailed, match="it stopped: 2 shards in a row failed"):
        process_shards(dataset.uri, JOB, run_id, [0, 1, 2])
    assert unfinished(dataset, run_id, 3) == [2]


def test_a_shard_of_unreadable_videos_does_not_stop_the_run(build, prefect_harness, bad_videos):
    """Its videos fail before the model (bad input, not a broken process): the run goes on."""
    dataset, run_id, ids, _loads = build
    bad = ManifestEntry(id="bad-empty", video=str(bad_videos["empty"]))
    write_entries([bad], shard_manifest(dataset, run_id, 0))
    done = process_shards(dataset.uri, JOB, run_id, [0], shard_count=3)
    assert [(s.index, s.ok, s.failed, s.model_failed) for s in done] == [
        (0, 0, 1, 0),
        (1, 1, 0, 0),
        (2, 1, 0, 0),
    ]
    assert ok_ids(dataset) == sorted(ids[1:])


def test_a_mark_is_not_written_once_the_build_has_ended(build):
    """On S3 a late mark would make the removed run folder seem to exist again."""
    dataset, run_id, _ids, _loads = build
    folder = dataset.path(f"_runs/{run_id}")
    dataset.fs.rm(folder, recursive=True)
    finish(dataset, run_id, 0)
    assert not dataset.fs.exists(folder)


def test_claims_and_marks_on_s3_see_other_runs_writes(tmp_path):
    """On S3 (moto's server on 127.0.0.1, through s3fs): a mark another run wrote after this process
    listed the build's folder stops a claim (s3fs answers `exists` from its listings cache), and once
    the build removed its folder no late mark brings it back."""
    import fsspec

    from tests.servers import moto_bucket

    patch = pytest.MonkeyPatch()
    try:
        with moto_bucket(tmp_path / "moto.log", "foley", patch):
            dataset, run_id = DatasetStore("s3://foley/store"), new_run_id()
            entry = ManifestEntry(id="a", video="/nowhere.mp4")
            for index in range(2):
                write_entries([entry], shard_manifest(dataset, run_id, index))
            assert marked(dataset, run_id) == set()  # this process has listed the folder now
            other = fsspec.filesystem("s3", skip_instance_cache=True)  # another run's
            other.pipe(f"foley/store/_runs/{run_id}/00000.done", b'{"error": null}')
            assert claim(dataset, run_id, 0) is None
            assert unfinished(dataset, run_id, 2) == [1]
            shard = claim(dataset, run_id, 1)
            assert shard is not None and claim(dataset, run_id, 1) is None  # held: no second claim
            shard.release()
            assert marked(dataset, run_id) == {0}  # listed again: the folder's files are cached
            other.rm(f"foley/store/_runs/{run_id}", recursive=True)  # the build ended
            finish(dataset, run_id, 1)
            assert not other.exists(f"foley/store/_runs/{run_id}")
    finally:
        patch.undo()


def test_a_paused_runs_claim_is_taken_over_once_it_expires_on_s3(tmp_path):
    """On S3 (moto's server on 127.0.0.1), a run's process is paused (SIGSTOP: a frozen VM, a long GC; its
    host still shows the process) while it holds a claim of 30 s to live: no claim is possible before it
    expires, and one takes it over after, naming whom it took it from."""
    import os
    import signal

    from tests.servers import moto_bucket

    patch = pytest.MonkeyPatch()
    holder = None
    try:
        with moto_bucket(tmp_path / "moto.log", "foley", patch):
            dataset, run_id = DatasetStore("s3://foley/store"), new_run_id()
            write_entries([ManifestEntry(id="a", video="/nowhere.mp4")], shard_manifest(dataset, run_id, 0))
            holder = subprocess.Popen(
                [sys.executable, "-c", CLAIM_AND_SLEEP, dataset.uri, run_id, "0", "30"],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout.readline().strip() == "claimed"
            os.kill(holder.pid, signal.SIGSTOP)
            assert claim(dataset, run_id, 0) is None  # alive, and its claim not yet expired
            deadline, taken = time.monotonic() + 120, None
            while taken is None and time.monotonic() < deadline:
                time.sleep(0.5)
                taken = claim(dataset, run_id, 0)
            assert taken is not None and taken.left_by is not None and taken.left_by.pid == holder.pid
            taken.release()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        patch.undo()


def take_over(dataset: DatasetStore, run_id: str) -> list[int]:
    """What a run that has passed over every shard of the build takes (`_take_over`, in a flow run as
    in a process-shards run), each claim released at once."""
    from prefect import flow

    @flow(name="take-over")
    def taking() -> list[int]:
        taken = []
        for index, shard in shard_claims._take_over(dataset, run_id):
            taken.append(index)
            shard.release()
            finish(dataset, run_id, index)
        return taken

    return taking()


def test_a_waiting_run_rides_out_failed_looks_and_gives_up_after_five(build, prefect_harness, monkeypatch):
    """The store fails the run's looks (a stand-in for S3 throttling, which nothing here produces: the
    listing raises as s3fs does). Three failures in a row: the run takes the unmarked shard at the next
    look. Five: it stops looking and ends without failing (the build names what is left)."""
    dataset, run_id, _ids, _loads = build
    monkeypatch.setattr(shard_claims, "SWEEP_POLL_S", 0.01)
    real = shard_claims._listing
    failing = {"left": 3}

    def throttled(*args):
        if failing["left"]:
            failing["left"] -= 1
            raise OSError("SlowDown: Please reduce your request rate.")
        return real(*args)

    monkeypatch.setattr(shard_claims, "_listing", throttled)
    finish(dataset, run_id, 0)
    finish(dataset, run_id, 2)
    assert take_over(dataset, run_id) == [1] and failing["left"] == 0
    failing["left"] = 5
    dataset.fs.rm(dataset.path(f"_runs/{run_id}/00001.done"))
    assert take_over(dataset, run_id) == [] and unfinished(dataset, run_id, 3) == [1]


def test_a_waiting_run_ends_after_its_longest_wait(build, prefect_harness, monkeypatch):
    """Shard 1 stays held by a live run (its claim renews): a waiting run ends after `SWEEP_WAIT_S`."""
    dataset, run_id, _ids, _loads = build
    monkeypatch.setattr(shard_claims, "SWEEP_POLL_S", 0.01)
    monkeypatch.setattr(shard_claims, "SWEEP_WAIT_S", 0.5)
    finish(dataset, run_id, 0)
    finish(dataset, run_id, 2)
    held = claim(dataset, run_id, 1)
    try:
        assert take_over(dataset, run_id) == []
    finally:
        held.release()
    assert unfinished(dataset, run_id, 3) == [1]
