"""The GPU slot: one model per worker machine at a time.

A process-shard run started by a worker holds its machine's GPU slot while it uses its model, so two
flow runs on one GPU machine never run two models at once. A process-shards run that takes other runs'
shards holds it from its start to its end (its process keeps the model between shards); a shard inside
it takes none more: the slot is the process's. Inside a process, one batching thread owns the model
(foley_core.backends.batching), so a local run (one process, no worker) needs no slot and takes none.

The slot is an OS file lock (`flock`) on `foley-gpu-<WORKER_ID>-<n>.lock` in `FOLEY_GPU_LOCK_DIR`
(default: the system's temporary folder; `WORKER_ID` defaults to the host name), one file per slot
(`FOLEY_GPU_SLOTS`, default 1). The kernel releases it the moment its process ends, however it ends,
and no server keeps it: a crashed run's slot is free at once, and a run holds its slot for hours
whatever its Prefect server does. (A Prefect global concurrency limit, used before, is a lease on the
server: a run whose renewals failed, the server restarting, was cancelled mid-shard, and a restart
that lost the server's in-memory leases left the slot taken for good.) Every worker of a GPU must
see the same file: the same `WORKER_ID` and a lock folder they share on a local filesystem (not NFS,
where flock is emulated per process: a run that finds the folder on a network filesystem, by the
mount table, says so); containers, other users, or a private /tmp need `FOLEY_GPU_LOCK_DIR` set.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often a run waiting for a busy slot tries again
SAY_EVERY_S = 300.0  # how often a waiting run says who holds the slot

# filesystems whose flock does not keep two machines' processes apart (NFS emulates it per process
# with POSIX locks or keeps it local to the client; the others keep it local or lack it), FUSE's network
# ones among them (not fuse-overlayfs, lxcfs: local)
NETWORK_FILESYSTEMS = (
    *("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs", "beegfs"),
    *("fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "fuse.juicefs", "fuse.goofys"),
    *("fuse.mountpoint-s3", "fuse.glusterfs", "fuse.ceph-fuse"),
)

_holding = threading.Event()  # set while this process holds its slot
_taking = threading.Lock()  # one thread of the process takes the slot; the others then find it held
_held: list[IO[str]] = []  # the locked file while held: a forked child closes its copy (below)


def _forget_in_child() -> None:
    """In a child forked while the slot is held (a multiprocessing worker, say): close the child's copy of
    the locked file and forget the slot, so the child does not keep it once its parent has ended."""
    for handle in _held:
        handle.close()
    _held.clear()
    _holding.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def machine_name() -> str:
    """This worker machine's name, safe in a file name: `WORKER_ID`, else the host name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", os.environ.get("WORKER_ID") or socket.gethostname())[:100]


def slot_files() -> list[Path]:
    """This machine's GPU slots: one lock file each."""
    folder = Path(os.environ.get("FOLEY_GPU_LOCK_DIR") or tempfile.gettempdir())
    slots = int(os.environ.get("FOLEY_GPU_SLOTS", "1"))
    return [folder / f"foley-gpu-{machine_name()}-{n}.lock" for n in range(slots)]


def _try_take(path: Path) -> IO[str] | None:
    """The slot's locked file when it was free (this process's pid written in it), else None."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 (held open for as long as the slot is held)
    except PermissionError as error:
        raise PermissionError(
            f"cannot open the GPU slot file {path} (another user's?): set FOLEY_GPU_LOCK_DIR to a folder"
            " every worker of this machine can write"
        ) from error
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _take_any(paths: list[Path]) -> IO[str] | None:
    """The first free slot's locked file, or None when every slot is held."""
    for path in paths:
        handle = _try_take(path)
        if handle is not None:
            return handle
    return None


def _holders(paths: list[Path]) -> str:
    """The pids the slot files name (who holds them, for a waiting run's message)."""
    pids = []
    for path in paths:
        try:
            pids.append(path.read_text().strip() or "?")
        except OSError:
            pids.append("?")
    return ", ".join(pids)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger inside a run (Prefect shows it), this module's outside."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return log


@contextmanager
def gpu_slot(enabled: bool = True) -> Iterator[None]:
    """Hold one of this machine's GPU slots, waiting for one to be free (a no-op when `enabled` is False,
    or when this process holds a slot already: a second would wait for the first, held by this same
    process)."""
    if not enabled:
        yield
        return
    with _taking:
        if _holding.is_set():
            handle = None
        else:
            handle = _wait_for_slot()
            _held.append(handle)
            _holding.set()
    if handle is None:
        yield
        return
    try:
        yield
    finally:
        _holding.clear()
        _held.clear()
        handle.close()  # releases the lock


def filesystem_of(folder: Path, mounts: str) -> str | None:
    """The type of the filesystem `folder` is on, from a mount table in /proc/mounts' format (the mount
    point that holds it: the longest that is a prefix of its real path); None when none does."""
    real, best = os.path.realpath(folder), None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda code: chr(int(code.group(1), 8)), fields[1])  # \040: a space
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fields[2])
    return None if best is None else best[1]


def _warn_if_shared_over_a_network(folder: Path) -> None:
    """Say so when the slot files are on a network filesystem, where flock may not keep workers apart."""
    try:
        kind = filesystem_of(folder, Path("/proc/mounts").read_text())
    except OSError:  # not Linux: nothing to read
        return
    if kind in NETWORK_FILESYSTEMS:
        _logger().warning(
            "the GPU slot files in %s are on a %s filesystem, whose locks may not keep this machine's runs "
            "apart: set FOLEY_GPU_LOCK_DIR to a folder on a local filesystem",
            folder,
            kind,
        )


def _wait_for_slot() -> IO[str]:
    """A free slot's locked file, waiting for one (and saying who holds them) while every one is held."""
    paths = slot_files()
    _warn_if_shared_over_a_network(paths[0].parent)
    said_at = None
    while (handle := _take_any(paths)) is None:
        if said_at is None or time.monotonic() - said_at > SAY_EVERY_S:
            _logger().info("waiting for a GPU slot of this machine (held by pid %s)", _holders(paths))
            said_at = time.monotonic()
        time.sleep(POLL_S)
    return handle


def started_by_worker() -> bool:
    """This process is a flow run a Prefect worker started (workers set PREFECT__FLOW_RUN_ID)."""
    return bool(os.environ.get("PREFECT__FLOW_RUN_ID"))
