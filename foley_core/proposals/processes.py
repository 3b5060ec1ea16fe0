"""`propose` in worker processes, for the steps that measure many videos at once.

Much of a clip's measuring holds the GIL (silero-vad's TorchScript, PySceneDetect's per-frame Python,
librosa's), so a step's threads measure only a few clips at a time however many cores there are:
beside one measuring thread, a pure-Python loop here runs 22% slower; beside one measuring process, 6%,
and two processes measure a clip in 0.17-0.36 s where two threads take 0.26-0.55 s
(`bench/propose_cost.py`). Worker processes measure side by side, with the same code.

Each worker is a fresh `python -c` that imports this module, not a multiprocessing child: spawn would
import the caller's main module again in every child, and a script that calls a flow without an
`if __name__ == "__main__"` guard would then run its flow once more per child. A worker answers one
video at a time over its own pipes, so a worker that dies (a decoder that crashes on a damaged file, a
kill) costs only the video it was measuring. That video is measured once more in a fresh worker; if
both crashed (a fatal signal of their own, such as SIGSEGV), the video fails as corrupt, and the
worker's own process, with its model, goes on. A death that was a kill from outside (the out-of-memory
killer, a cancellation) is no fault of the video: the step fails it transiently, to be asked again, as
it does a worker that cannot start once others have. Where no worker can start at all, a warning says
why and the videos are measured in the calling threads, as with 0 processes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from v2t_foley.foley_core.errors import InputError, TransientBackendError
from v2t_foley.foley_core.proposals.base import ProposalSet, ProposalSettings
from v2t_foley.foley_core.proposals.propose import Measure, propose
from v2t_foley.foley_core.safenames import redact_uri
from v2t_foley.foley_core.video import convert
from v2t_foley.foley_core.video.errors import CorruptVideoError
from v2t_foley.foley_core.video.pyav_reader import PyAVReader
from v2t_foley.foley_core.video.video import Video

log = logging.getLogger(__name__)

PROCESSES_ENV = "FOLEY_MEASURE_PROCESSES"  # a worker's count of measuring processes; 0: the step's threads
MIN_CORES = 6  # on fewer cores the default is 0: threads, which need no start (~3 s) and no memory (a
# measuring process holds about 0.45 GB of its own: torch, librosa, PyAV)
MAX_PROCESSES = 16  # a step measures at most this many videos at once (tasks/chain_tasks.STEP_THREADS)
READY_TIMEOUT_S = 300.0  # a new worker's imports (seconds; minutes on a machine busy compiling)

BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # 1 in a worker

# what a worker runs: the caller's import path (a checkout, a test's folder), then `serve` on its pipes
# (SIGINT ignored first: Ctrl-C in a terminal reaches the whole process group, and the caller handles it;
# its pipes' end stops the worker)
_BOOT = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "import json, os, sys; sys.path[:0] = json.loads(os.environ['FOLEY_MEASURE_SYS_PATH']); "
    "from v2t_foley.foley_core.proposals.processes import serve; serve(int(sys.argv[1]), int(sys.argv[2]))"
)


def measure_processes() -> int:
    """How many processes measure videos on this machine: `$FOLEY_MEASURE_PROCESSES`, else every core but
    two (one drives the GPU) up to MAX_PROCESSES on machines of MIN_CORES or more, else 0 (threads)."""
    given = os.environ.get(PROCESSES_ENV, "").strip()
    if given:
        if not given.isdigit():
            raise InputError(f"{PROCESSES_ENV}={given!r}: give a count of processes (0: measure in threads)")
        return int(given)
    cores = usable_cores()
    return min(MAX_PROCESSES, cores - 2) if cores >= MIN_CORES else 0


def usable_cores(cgroups: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int:
    """The cores this process may use: those it may run on (taskset, cpusets), fewer when a CPU quota of
    its cgroup or of one above it allows less (a container's `--cpus`, a Kubernetes CPU limit, systemd's
    `CPUQuota=`), not the host's count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpus(cgroups, membership)
    return max(1, min(cores, quota)) if quota else cores


def cgroup_cpus(cgroups: Path, membership: Path) -> int | None:
    """The CPUs this process's cgroup quotas allow, rounded up, or None when none limits it: cgroup v2's
    smallest `cpu.max` from its own cgroup up to the root of the hierarchy this process sees, or v1's CFS
    quota of its cpu controller's cgroup. `membership` is /proc/self/cgroup."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    found: list[int] = []
    for line in lines:
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        relative = path.strip().lstrip("/")
        if hierarchy == "0" and not controllers:  # v2: every level of the path may set a quota
            folder = cgroups / relative
            while True:
                found += _quota(folder / "cpu.max")
                if folder == cgroups or cgroups not in folder.parents:
                    break
                folder = folder.parent
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            for mount in (cgroups / controllers, cgroups / "cpu"):
                if (mount / relative / "cpu.cfs_quota_us").is_file():
                    found += _quota(
                        mount / relative / "cpu.cfs_quota_us", mount / relative / "cpu.cfs_period_us"
                    )
                    break
    return min(found) if found else None


def _quota(quota_file: Path, period_file: Path | None = None) -> list[int]:
    """[CPUs] of one quota file (v2's "quota period" line, or v1's quota and period files); [] for none."""
    try:
        if period_file is None:
            quota, period = quota_file.read_text().split()[:2]
        else:
            quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        if quota in ("max", "-1"):
            return []
        return [math.ceil(int(quota) / int(period))]
    except (OSError, ValueError):
        return []


class WorkerDied(Exception):
    """A measuring process ended (or never became ready) before it answered."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode  # the process's exit status (-N: signal N); None if not known

    @property
    def crashed(self) -> bool:
        """Whether a fatal signal of its own ended it (what a decoder's fault raises), not a kill."""
        return self.returncode is not None and -self.returncode in CRASH_SIGNALS


CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL}


def serve(requests_fd: int, answers_fd: int) -> None:
    """A worker's loop: say it is ready, then answer each (function, arguments) with ("ok", result) or
    ("error", exception), until the pool closes its end of the pipe."""
    import torch

    # one core a worker: the pool, not each library's threads, spreads the work (BLAS's come from the
    # environment the pool gives the worker)
    torch.set_num_threads(1)
    convert.FFMPEG_THREADS = 1
    for fd in (requests_fd, answers_fd):  # not handed on to processes the measuring starts
        os.set_inheritable(fd, False)
    requests, answers = Connection(requests_fd, writable=False), Connection(answers_fd, readable=False)
    answers.send(("ready", os.getpid()))
    while True:
        try:
            function, args = requests.recv()
        except EOFError:
            return
        except Exception as error:  # a request that does not unpickle here (the caller's code, not a video)
            answers.send(
                ("error", RuntimeError(f"the measuring process could not read its request: {error}"))
            )
            continue
        try:
            answer: tuple[str, Any] = ("ok", function(*args))
        except Exception as error:
            answer = ("error", error)
        try:
            if answer[0] == "error":  # an exception that would not unpickle there fails here, not there
                pickle.loads(pickle.dumps(answer))
            answers.send(answer)
        except Exception as error:  # an answer that does not travel: its text still says what happened
            answers.send(("error", RuntimeError(f"{answer[1]!r} (could not be sent back: {error})")))


class Worker:
    """One measuring process and its two pipes."""

    def __init__(self) -> None:
        # the caller's import path (its text entries: the importer tolerates others), one BLAS thread
        path = json.dumps([entry for entry in sys.path if isinstance(entry, str)])
        env = os.environ | {"FOLEY_MEASURE_SYS_PATH": path} | dict.fromkeys(BLAS_THREADS, "1")
        requests_read, requests_write = os.pipe()
        answers_read, answers_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(requests_read), str(answers_write)],
                pass_fds=(requests_read, answers_write),
                env=env,
            )
        except BaseException:
            os.close(requests_write)
            os.close(answers_read)
            raise
        finally:  # the child holds its ends now: when it dies, reading its answers ends at once
            os.close(requests_read)
            os.close(answers_write)
        self.requests = Connection(requests_write, readable=False)
        self.answers = Connection(answers_read, writable=False)
        try:
            if not self.answers.poll(READY_TIMEOUT_S):
                raise WorkerDied(f"not ready within {READY_TIMEOUT_S:.0f} s")
            self._receive()  # ("ready", pid)
        except BaseException:
            self.stop()
            raise

    def ask(self, function: Measure, *args: Any) -> tuple[str, Any]:
        """`function(*args)` in the worker: ("ok", its result) or ("error", the exception it raised)."""
        try:
            self.requests.send((function, args))
        except OSError as error:  # the worker is gone: its end of the pipe is closed
            raise WorkerDied(str(error)) from None
        return self._receive()

    def _receive(self) -> tuple[str, Any]:
        try:
            return self.answers.recv()
        except EOFError:
            code = self.process.wait()
            raise WorkerDied(f"the measuring process ended with exit status {code}", code) from None

    def stop(self) -> None:
        """Close its pipes (an idle worker then ends by itself) and reap it; kill it if it will not end."""
        self.requests.close()
        self.answers.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class MeasuringPool:
    """Measures videos in up to `processes` worker processes, each started when a video first needs it and
    kept for later videos and steps. Call it as `propose` is called, from as many threads as videos
    should be measured at once."""

    def __init__(self, processes: int, measure: Measure = propose) -> None:
        if processes < 1:
            raise ValueError(f"a measuring pool needs at least one process, not {processes}")
        self.processes = processes  # most worker processes at once
        self.measure = measure  # what a worker runs on each video (a module-level function: it is pickled)
        self.in_threads = False  # no worker could ever start here: videos are measured in the calling threads
        self._ready_once = False  # a worker has started: a later failed start is a fault of its moment
        self._idle: list[Worker] = []
        self._slots = 0  # workers alive or starting, idle or busy: at most `processes`
        self._free = threading.Condition()

    def __call__(self, video: Video, settings: ProposalSettings) -> ProposalSet:
        # a worker gets the video without its reader: a decord reader holds open files and locks, and
        # measuring decodes with PyAV anyway
        sent = replace(video, reader=PyAVReader())
        worker = self._take()
        if worker is None:
            return self.measure(video, settings)
        return self._measure_in(worker, video, sent, settings, None)

    def _measure_in(
        self, worker: Worker, video: Video, sent: Video, settings: ProposalSettings, first: WorkerDied | None
    ) -> ProposalSet:
        """`video` measured by `worker`, which holds a slot; a worker that dies is replaced in that slot
        and asked once more (`first`: how the first one died)."""
        try:
            answer = worker.ask(self.measure, sent, settings)
        except WorkerDied as died:
            worker.stop()
            if first is None:
                return self._measure_in(self._replacement(), video, sent, settings, died)
            self._release()
            if first.crashed and died.crashed:
                why = f"measuring it crashed its process twice ({died}: a decoder fault?); re-encode it"
                raise CorruptVideoError(video.uri, why) from None
            raise TransientBackendError(
                f"{redact_uri(video.uri)}: measuring it ended two processes ({first}; {died}): killed?"
            ) from None
        except BaseException:  # the exchange did not finish (an interrupt): its answer may still come
            self._retire(worker)
            raise
        self._give_back(worker)
        return _result(answer)

    def start(self) -> None:
        """Start every worker now, side by side, and wait until each is ready."""
        with self._free:
            wanted, self._slots = self.processes - self._slots, self.processes
        threads = [threading.Thread(target=self._start_one) for _ in range(wanted)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _start_one(self) -> None:
        worker = self._start_in_slot()
        if worker is not None:
            self._give_back(worker)

    def _take(self) -> Worker | None:
        """An idle worker, else a new one while fewer than `processes` hold a slot, else the next one freed;
        None when no worker can start here."""
        with self._free:
            while not self._idle and self._slots >= self.processes and not self.in_threads:
                self._free.wait()
            if self.in_threads:
                return None
            if self._idle:
                return self._idle.pop()
            self._slots += 1
        return self._start_in_slot()

    def _replacement(self) -> Worker:
        """A new worker in the slot of one that died."""
        worker = self._start_in_slot()
        assert worker is not None  # a worker had started, so a failed start raises
        return worker

    def _start_in_slot(self) -> Worker | None:
        """A new worker for a slot this call holds; the slot is released when none starts."""
        try:
            worker = self._start_worker()
        except BaseException:
            self._release()
            raise
        if worker is None:
            self._release()  # every waiting call measures in its thread now
        return worker

    def _start_worker(self) -> Worker | None:
        """A new, ready worker. A failed start raises TransientBackendError once a worker has started in
        this pool (the machine can start them: memory, a busy moment); before, it means none can start
        here, and gives None from then on, with one warning."""
        try:
            worker = Worker()
        except (OSError, WorkerDied) as error:
            with self._free:
                if self._ready_once:
                    raise TransientBackendError(f"a measuring process did not start: {error}") from None
                first = not self.in_threads
                self.in_threads = True
            if first:
                log.warning(
                    "no measuring process can start (%s): videos are measured in the calling threads "
                    "(%s=0 says so without trying)",
                    error,
                    PROCESSES_ENV,
                )
            return None
        with self._free:
            self._ready_once = True
        return worker

    def _give_back(self, worker: Worker) -> None:
        with self._free:
            self._idle.append(worker)
            self._free.notify()

    def _release(self) -> None:
        with self._free:
            self._slots -= 1
            self._free.notify_all()

    def _retire(self, worker: Worker) -> None:
        worker.stop()
        self._release()

    def close(self) -> None:
        """Stop the idle workers (busy ones stop when the pool is dropped, or with this process)."""
        with self._free:
            idle, self._idle = self._idle, []
            self._slots -= len(idle)
        for worker in idle:
            worker.stop()


def _result(answer: tuple[str, Any]) -> Any:
    kind, value = answer
    if kind == "error":
        raise value
    return value


_shared: MeasuringPool | None = None
_shared_lock = threading.Lock()


def shared_measure() -> Measure:
    """What this process measures videos with: `propose` in the calling thread when `measure_processes()`
    is 0, else the process's one `MeasuringPool`, shared by every step and shard it runs."""
    global _shared
    processes = measure_processes()
    if processes == 0:
        return propose
    with _shared_lock:
        if _shared is None or _shared.processes != processes:  # a pool of another count ends with the process
            _shared = MeasuringPool(processes)
        return _shared
