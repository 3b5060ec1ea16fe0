"""The GPU slot (tasks/gpu.py): an OS file lock per slot, one model per machine at a time. A second
process waits while the first holds it, a crashed holder's slot is free at once (the kernel releases its
lock), `FOLEY_GPU_SLOTS` makes room for that many, and inside one process it is held once."""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from v2t_foley.tasks import gpu

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import os, sys, time
from v2t_foley.tasks.gpu import gpu_slot
with gpu_slot():
    if "fork" in sys.argv:  # a child made by fork alone (a multiprocessing worker, say), still running
        up, said_up = os.pipe()
        child = os.fork()
        if child == 0:  # the fork's handlers have run by now: say so, so the test's check is not a race
            os.write(said_up, b"up")
            time.sleep(600)
            os._exit(0)
        os.close(said_up)  # a child that dies before it says so: an end of file here, not a wait
        os.read(up, 2)
        print("forked", child, flush=True)
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def slots(tmp_path, monkeypatch) -> Path:
    """This test's lock folder and worker name (the children started here inherit them)."""
    monkeypatch.setenv("FOLEY_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("WORKER_ID", "slot-test")
    monkeypatch.delenv("FOLEY_GPU_SLOTS", raising=False)
    return tmp_path / "locks"


def taken(path: Path) -> bool:
    """Whether some process holds the slot file's lock (a lock of this process's own, too: flock locks
    belong to open files, and this is another)."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def start_holder(*args: str) -> tuple[subprocess.Popen, list[str]]:
    """A process holding a slot, and what it said before "held" (killed if it never says it)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, *args], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    said: list[str] = []
    reader = threading.Thread(
        target=lambda: said.extend(iter(lambda: holder.stdout.readline().strip(), "held")), daemon=True
    )
    reader.start()
    reader.join(120)
    if reader.is_alive() or holder.poll() is not None:
        holder.kill()
        holder.wait()
        pytest.fail(f"the holder never held the slot: {said}")
    return holder, said


def in_thread(timeout: float, work) -> bool:
    """Whether `work()` returned within `timeout` seconds (a slot that waits fails the test, not hangs it)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


def test_a_crashed_holders_slot_is_free_at_once_and_a_waiting_run_takes_it(slots):
    """Another process (a run on this machine) holds the slot: this one waits for it. The holder is
    killed (SIGKILL: an out-of-memory kill), and the waiting one takes the slot without a lease to
    expire."""
    holder, _ = start_holder()
    try:
        (path,) = gpu.slot_files()
        assert taken(path)
        got = threading.Event()

        def wait_for_slot() -> None:
            with gpu.gpu_slot():
                got.set()

        waiting = threading.Thread(target=wait_for_slot, daemon=True)
        waiting.start()
        assert not got.wait(3), "took a slot another process holds"
        holder.kill()
        holder.wait()
        assert got.wait(30), "the crashed holder's slot stayed taken"
        waiting.join(30)
    finally:
        holder.kill()
        holder.wait()
    assert not taken(path)


def test_slots_make_room_for_that_many_models(slots, monkeypatch):
    monkeypatch.setenv("FOLEY_GPU_SLOTS", "2")
    holder, _ = start_holder()
    both: list[bool] = []

    def second() -> None:
        with gpu.gpu_slot():
            both.append(all(taken(path) for path in gpu.slot_files()))

    try:
        assert in_thread(30, second), "the second slot waited for the first"
        assert both == [True]
    finally:
        holder.kill()
        holder.wait()


def test_a_forked_child_does_not_keep_the_slot_after_its_parent_ends(slots):
    """The holder forks a child that lives on (the lock file's handle is shared with it by the fork);
    once the holder is killed, the slot is free while the child still runs."""
    import os
    import signal

    holder, said = start_holder("fork")
    child = int(said[0].split()[1])
    try:
        (path,) = gpu.slot_files()
        holder.kill()
        holder.wait()
        os.kill(child, 0)  # alive
        assert not taken(path), "the forked child kept the slot"
    finally:
        holder.kill()
        holder.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_the_gpu_slot_is_held_once_by_its_process(slots):
    """While this process holds its slot (a process-shards run), a second hold (a shard inside it, or
    any thread of the process) goes on without taking a second one, which, with one slot, would wait
    for the first forever; once released, the next run takes it."""
    (path,) = gpu.slot_files()
    inner = threading.Event()

    def shard() -> None:
        with gpu.gpu_slot():
            inner.set()

    with gpu.gpu_slot():
        assert taken(path)
        thread = threading.Thread(target=shard, daemon=True)
        thread.start()
        thread.join(20)
        assert inner.is_set(), "the inner slot waited for the process's own"
        assert taken(path)
    assert not taken(path)
    with gpu.gpu_slot():
        assert taken(path)
    assert not taken(path)


MOUNTS = r"""/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/shared nfs4 rw,relatime 0 0
tmpfs /mnt/shared/local tmpfs rw 0 0
alice@host:/home /mnt/my\040files fuse.sshfs rw 0 0
fuse-overlayfs /mnt/container fuse.fuse-overlayfs rw 0 0
"""


@pytest.mark.parametrize(
    ("folder", "kind"),
    [
        ("/mnt/shared/locks", "nfs4"),
        ("/mnt/shared", "nfs4"),
        ("/mnt/shared/local/locks", "tmpfs"),  # a local mount inside the network one
        ("/mnt/sharedx", "ext4"),  # a name that only begins like the mount point
        ("/mnt/my files/locks", "fuse.sshfs"),  # a space, as /proc/mounts escapes it
    ],
)
def test_the_slot_folders_filesystem_is_read_from_the_mount_table(folder, kind):
    """A mount table in /proc/mounts' format (this machine has no NFS to mount)."""
    assert gpu.filesystem_of(Path(folder), MOUNTS) == kind


@pytest.mark.parametrize(
    ("on", "warned"),
    [("/mnt/shared", True), ("/mnt/my files", True), ("/", False), ("/mnt/container", False)],
)
def test_a_slot_folder_on_a_network_filesystem_is_warned_of_and_a_local_one_is_not(
    slots, monkeypatch, caplog, on, warned
):
    """The warning, for a slot folder on each mount of the table above (read as /proc/mounts would be:
    this machine has no NFS): NFS and sshfs, not a local disk nor a container's fuse-overlayfs."""
    real = gpu.filesystem_of
    monkeypatch.setattr(gpu, "filesystem_of", lambda folder, mounts: real(Path(on), MOUNTS))
    with caplog.at_level("WARNING"), gpu.gpu_slot():
        pass
    assert ("set FOLEY_GPU_LOCK_DIR to a folder on a local filesystem" in caplog.text) == warned
