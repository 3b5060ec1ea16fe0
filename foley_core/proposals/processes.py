"""`propose` in worker processes, for the steps that measure many videos at once.

Much of a clip's measuring holds the GIL (silero-vad's TorchScript steps, PySceneDetect's per-frame
Python, librosa's), so a step's threads measure only a few clips at a time however many cores there
are: beside one measuring thread, a pure-Python loop here runs 29% slower; beside one measuring
process, 10% (`bench/propose_cost.py`). Worker processes measure side by side with the same code.

A measuring process that dies (a decoder that crashes on a damaged file, a kill) breaks the pool. Each
video the pool was measuring is then measured again alone, in a process of its own, so that only the
file at fault fails (`CorruptVideoError`) and the worker's own process, with its model, lives on; the
next video gets a new pool. Where no process can start at all (spawn must import the main module
again, and cannot when it was read from stdin), a warning says so and the videos are measured in the
calling threads, as with 0 processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from v2t_foley.foley_core.proposals.base import ProposalSet, ProposalSettings
from v2t_foley.foley_core.proposals.propose import Measure, propose
from v2t_foley.foley_core.video.errors import CorruptVideoError
from v2t_foley.foley_core.video.pyav_reader import PyAVReader
from v2t_foley.foley_core.video.video import Video

log = logging.getLogger(__name__)

PROCESSES_ENV = "FOLEY_MEASURE_PROCESSES"  # a worker's count of measuring processes; 0: the step's threads
MIN_CORES = 6  # on fewer cores the default is 0: threads, which need no start (~3 s) and no memory (a
# measuring process holds about 0.4 GB of its own: torch, librosa, PyAV)
MAX_PROCESSES = 16  # a step measures at most this many videos at once (tasks/chain_tasks.STEP_THREADS)

# spawn, not fork: the parent has CUDA and the model's threads running, which a forked child would copy
_CONTEXT = multiprocessing.get_context("spawn")


def measure_processes() -> int:
    """How many processes measure videos on this machine: `$FOLEY_MEASURE_PROCESSES`, else every core but
    two (one drives the GPU) up to MAX_PROCESSES on machines of MIN_CORES or more, else 0 (threads)."""
    given = os.environ.get(PROCESSES_ENV, "").strip()
    if given:
        if not given.isdigit():
            raise ValueError(f"{PROCESSES_ENV}={given!r}: give a count of processes (0: measure in threads)")
        return int(given)
    cores = usable_cores()
    return min(MAX_PROCESSES, cores - 2) if cores >= MIN_CORES else 0


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _one_thread() -> None:
    """Each measuring process uses one core: the pool, not torch's intra-op threads, spreads the work."""
    import torch

    torch.set_num_threads(1)


class MeasuringPool:
    """Measures videos in `processes` worker processes, started on first use and kept for later steps.

    Call it as `propose` is called, from as many threads as videos should be measured at once.
    """

    def __init__(self, processes: int, measure: Measure = propose) -> None:
        if processes < 1:
            raise ValueError(f"a measuring pool needs at least one process, not {processes}")
        self.processes = processes  # worker processes of the pool
        self.measure = measure  # what a worker runs on each video (a module-level function: it is pickled)
        self.in_threads = False  # no process could start here: videos are measured in the calling threads
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self, video: Video, settings: ProposalSettings) -> ProposalSet:
        if self.in_threads:
            return self.measure(video, settings)
        # the worker gets a copy of the video without its reader: a decord reader holds open files and
        # locks, and measuring decodes with PyAV anyway
        sent = replace(video, reader=PyAVReader())
        pool = self._current()
        try:
            return pool.submit(self.measure, sent, settings).result()
        except BrokenProcessPool:
            self._drop(pool)
            return self._alone(video, sent, settings)

    def start(self) -> None:
        """Start the worker processes now and wait until they answer (otherwise they start on first use,
        a few seconds each: imports of torch, librosa and PyAV)."""
        pool = self._current()
        try:
            for started in [pool.submit(os.getpid) for _ in range(self.processes)]:
                started.result()
        except BrokenProcessPool:
            self._drop(pool)
            if not self._can_start():
                self._measure_in_threads()

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = _executor(self.processes)
            return self._pool

    def _drop(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool: the next video starts a new one."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _alone(self, video: Video, sent: Video, settings: ProposalSettings) -> ProposalSet:
        """`video` measured in a process of its own: whether it, or another video, broke the pool."""
        with _executor(1) as alone:
            try:
                return alone.submit(self.measure, sent, settings).result()
            except BrokenProcessPool:
                pass
        if not self._can_start():  # not the video: no process starts here
            self._measure_in_threads()
            return self.measure(video, settings)
        why = "measuring it crashed its process (a decoder fault on this file?); re-encode it"
        raise CorruptVideoError(video.uri, why)

    @staticmethod
    def _can_start() -> bool:
        """Whether a process that does nothing starts and answers here."""
        try:
            with _executor(1) as probe:
                probe.submit(os.getpid).result()
        except BrokenProcessPool:
            return False
        return True

    def _measure_in_threads(self) -> None:
        if not self.in_threads:
            self.in_threads = True
            log.warning(
                "no measuring process can start in this process (is its main module a script read from "
                "stdin?): videos are measured in the calling threads (%s=0 says so without trying)",
                PROCESSES_ENV,
            )

    def close(self) -> None:
        """Stop the worker processes (a later call starts new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _executor(processes: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(processes, mp_context=_CONTEXT, initializer=_one_thread)


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
