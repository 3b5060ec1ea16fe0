"""Measuring in worker processes (proposals/processes.py): the same proposals as in the calling thread,
errors that arrive as themselves, and a process that dies failing only the video it was measuring.

Each pool here starts real worker processes (a few seconds each on this machine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from v2t_foley.foley_core.chain import ChainConfig
from v2t_foley.foley_core.chain.executor import run_step
from v2t_foley.foley_core.chain.graph import PROPOSE, ChainContext, StepCache, Work
from v2t_foley.foley_core.errors import InputError, TransientBackendError
from v2t_foley.foley_core.proposals import ProposalSettings, processes, propose
from v2t_foley.foley_core.proposals.processes import MeasuringPool, measure_processes, usable_cores
from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video
from v2t_foley.foley_core.video import CorruptVideoError, open_video

SETTINGS = ProposalSettings()
REPO = Path(__file__).resolve().parents[1]


def crash_or_fail_by_name(video, settings):
    """A stand-in for a decoder that crashes on or rejects a file, and for the out-of-memory killer (none
    can be had on demand here): a video named `crash*` makes its process segfault; one named `killed*`
    has its process killed (SIGKILL); `killed_then_crash*` is killed the first time, then segfaults;
    one named `corrupt*` raises the decoder's error; any other is measured by the real `propose`."""
    name = Path(video.uri).name
    if name.startswith("killed_then_crash"):
        tried = Path(video.uri).with_suffix(".tried")
        if not tried.exists():
            tried.write_text("killed once")
            os.kill(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("killed"):
        os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("corrupt"):
        raise CorruptVideoError(video.uri, "decoding for analysis failed: stand-in")
    return propose(video, settings)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("measure")
    spec = SceneSpec(
        duration=3.0, cuts=(1.5,), motions=((0.4, 1.0),), clicks=(0.8, 2.2), speech=((1.8, 2.8),)
    )
    # "other" differs from "good" (its cut, clicks and length), so an answer handed to the wrong call shows
    other = SceneSpec(duration=2.5, cuts=(0.9,), motions=((1.2, 1.8),), clicks=(0.5,), speech=())
    names = ("good", "crash", "killed", "killed_then_crash", "corrupt")
    return {name: write_scene_video(folder / f"{name}.mp4", spec) for name in names} | {
        "other": write_scene_video(folder / "other.mp4", other)
    }


def test_a_pool_measures_what_the_thread_measures(clips, monkeypatch, tmp_path):
    """Cuts, motion, onsets and speech alike, with the video's reader (decord where installed) left behind;
    with a `Path` on `sys.path` (the importer takes one; the workers get the path's text entries)."""
    monkeypatch.setattr(sys, "path", [*sys.path, tmp_path])
    videos = [open_video(str(clips[name])) for name in ("good", "other")]
    pool = MeasuringPool(2)
    try:
        with ThreadPoolExecutor(2) as threads:
            in_processes = list(threads.map(lambda v: pool(v, SETTINGS), videos))
    finally:
        pool.close()
    assert in_processes == [propose(v, SETTINGS) for v in videos] and not pool.in_threads
    assert in_processes[0].cuts and in_processes[0].onsets and in_processes[0].speech
    assert in_processes[0] != in_processes[1]


def test_a_dead_process_fails_only_its_video_and_errors_arrive_as_themselves(clips):
    pool = MeasuringPool(2, measure=crash_or_fail_by_name)
    videos = {name: open_video(str(path)) for name, path in clips.items()}

    def outcome(name: str):
        try:
            return pool(videos[name], SETTINGS)
        except Exception as error:
            return error

    try:
        with ThreadPoolExecutor(4) as threads:
            got = dict(zip(videos, threads.map(outcome, videos), strict=True))
        again = pool(videos["other"], SETTINGS)  # dead workers were replaced
    finally:
        pool.close()
    for name in ("good", "other"):
        assert got[name] == propose(videos[name], SETTINGS)
    assert again == got["other"]
    assert isinstance(got["crash"], CorruptVideoError) and "crashed its process twice" in str(got["crash"])
    assert isinstance(got["killed"], TransientBackendError) and "killed?" in str(got["killed"])
    # killed once, then crashed: not twice the video's own crash, so not its fault for sure
    assert isinstance(got["killed_then_crash"], TransientBackendError)
    assert isinstance(got["corrupt"], CorruptVideoError)
    assert got["corrupt"].reason == "corrupt" and got["corrupt"].detail.endswith("stand-in")
    assert got["corrupt"].uri == videos["corrupt"].uri


def test_the_propose_step_measures_with_the_context_s_pool(clips):
    """The graph's propose step goes through `ChainContext.measure`: what a flow's worker sets."""
    asked: list[str] = []

    class CountedPool(MeasuringPool):
        def __call__(self, video, settings):
            asked.append(video.uri)
            return super().__call__(video, settings)

    pool = CountedPool(1)
    ctx = ChainContext(lambda: None, {}, None, None, ChainConfig(), measure=pool)  # type: ignore[arg-type]
    video = open_video(str(clips["good"]))
    work = Work(id="good", uri=str(clips["good"]), video=video)
    try:
        tally = run_step(PROPOSE, [work], ctx, StepCache())
    finally:
        pool.close()
    assert tally.computed == 1 and work.error is None and asked == [video.uri] and not pool.in_threads
    assert work.value("propose") == propose(video, ChainConfig().proposals)


@pytest.mark.parametrize(
    ("given", "cores", "expected"),
    [("", 2, 0), ("", 4, 0), ("", 8, 6), ("", 64, 16), ("0", 64, 0), ("3", 2, 3)],
)
def test_how_many_processes_a_machine_measures_with(monkeypatch, given, cores, expected):
    monkeypatch.setenv(processes.PROCESSES_ENV, given)
    monkeypatch.setattr(processes, "usable_cores", lambda: cores)
    assert measure_processes() == expected


def test_a_bad_process_count_says_what_to_give(monkeypatch):
    monkeypatch.setenv(processes.PROCESSES_ENV, "many")
    with pytest.raises(InputError, match="FOLEY_MEASURE_PROCESSES='many': give a count"):
        measure_processes()


@pytest.mark.parametrize(
    ("membership", "files", "expected"),
    [
        ("0::/\n", {"cpu.max": "400000 100000\n"}, 4),  # v2, a container's own namespace (`--cpus 4`)
        ("0::/\n", {"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ("0::/\n", {"cpu.max": "max 100000\n"}, None),  # no quota
        # v2 seen from the host (systemd's CPUQuota=, Slurm): the quota may sit on any level above
        ("0::/a/b\n", {"a/b/cpu.max": "max 100000\n", "a/cpu.max": "300000 100000\n"}, 3),
        ("0::/a/b\n", {"a/b/cpu.max": "200000 100000\n", "a/cpu.max": "800000 100000\n"}, 2),
        # v1: the cpu controller's hierarchy
        (
            "4:cpu,cpuacct:/x\n",
            {"cpu,cpuacct/x/cpu.cfs_quota_us": "300000", "cpu,cpuacct/x/cpu.cfs_period_us": "100000"},
            3,
        ),
        ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ("", {}, None),  # no cgroup at all
    ],
)
def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path, membership, files, expected):
    """A container or a systemd unit on a big host: its quota, not the host's cores, sets how many
    processes measure."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root).mkdir(exist_ok=True)
    (tmp_path / "membership").write_text(membership)
    allowed = len(os.sched_getaffinity(0))
    got = usable_cores(root, tmp_path / "membership")
    assert got == (min(allowed, expected) if expected else allowed)


def test_a_build_on_a_worker_that_measures_in_processes_records_the_same_proposals(
    clips, tmp_path, prefect_harness, monkeypatch
):
    """The build-dataset flow, with the worker's setting: its rows' traces hold what `propose` measures."""
    from v2t_foley.flows.build_dataset import build_dataset
    from v2t_foley.foley_core.manifest import write_manifest
    from v2t_foley.foley_core.store import DatasetStore

    monkeypatch.setenv(processes.PROCESSES_ENV, "1")
    monkeypatch.setattr(processes, "_shared", None)
    rows = [{"video": str(clips[name]), "id": name} for name in ("good", "other")]
    try:
        build_dataset(
            manifest=write_manifest(rows, str(tmp_path / "m.csv")),
            store=str(tmp_path / "store"),
            model="tiny-random",
            timing="measured",
            device="cpu",
        )
        pool = processes._shared
        assert pool is not None and pool._slots >= 1 and not pool.in_threads  # the flow's steps used it
    finally:
        if processes._shared is not None:
            processes._shared.close()
    stored = {
        r["id"]: json.loads(r["trace"])["proposals"]
        for r in DatasetStore(str(tmp_path / "store")).read_rows()
    }
    for name in ("good", "other"):
        assert stored[name] == propose(open_video(str(clips[name])), ChainConfig().proposals).model_dump()


def test_a_script_without_a_main_guard_runs_once_while_its_videos_are_measured_in_processes(clips, tmp_path):
    """Workers never import the caller's main module (multiprocessing's spawn would, in each child, and
    so run an unguarded script's build again once per measuring process)."""
    ran = tmp_path / "ran.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(
        f"""
import json
from v2t_foley.foley_core.proposals import ProposalSettings, propose
from v2t_foley.foley_core.proposals.processes import MeasuringPool
from v2t_foley.foley_core.video import open_video
with open({str(ran)!r}, "a") as marker:
    marker.write("ran\\n")
videos = [open_video(p) for p in {[str(clips["good"]), str(clips["other"])]!r}]
pool = MeasuringPool(2)
found = [pool(video, ProposalSettings()) for video in videos]
same = found == [propose(v, ProposalSettings()) for v in videos]
print(json.dumps({{"same": same, "in_threads": pool.in_threads}}))
"""
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=REPO, env=_with_repo()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"same": True, "in_threads": False}
    assert ran.read_text() == "ran\n"


def _with_repo() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_where_no_process_can_start_the_pool_measures_in_threads_and_says_why(clips, monkeypatch, caplog):
    """A stand-in for a machine whose interpreter cannot start a worker: `sys.executable` replaced by a
    program that exits at once. That is no video's fault: each is measured in its thread, with a warning."""
    monkeypatch.setattr(processes.sys, "executable", "/bin/false")
    video = open_video(str(clips["good"]))
    pool = MeasuringPool(1)
    threads = ThreadPoolExecutor(3)
    with caplog.at_level("WARNING", logger=processes.__name__):
        # three calls at once: two wait for the one worker, and must not wait on after it fails to start
        asked = [threads.submit(pool, video, SETTINGS) for _ in range(3)]
        try:
            found = [future.result(timeout=120) for future in asked]
        finally:
            threads.shutdown(wait=False)
    assert found == [propose(video, SETTINGS)] * 3 and pool.in_threads
    assert caplog.text.count("no measuring process can start") == 1
