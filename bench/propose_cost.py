"""What measuring a video (the `propose` step: cuts, motion, audio onsets, speech) costs, and where.

    PYTHONPATH=. python3 bench/propose_cost.py > bench/results/cpu-propose-cost.jsonl

Two kinds of 10 s clips with audio (a click, a cut, a motion, a stretch of speech-like sound): the
factory bench's small ones (160x96 at 12 fps) and 1280x720 at 30 fps. One JSON line per figure:
- convert: a clip's frames scaled to the 96-pixel analysis width, each with a scaler of its own
  (`frame.to_ndarray(width=, height=)`, before video/convert.py) and with one `FrameConverter`;
- propose: the clips measured by `propose` in 1 and in 2 threads (a step's threads), and by a
  `MeasuringPool` of 1 and of 2 processes (started beforehand; its start is its own line), in seconds a
  clip, with `same`: whether every clip's proposals equal the one-thread ones;
- gil: how many rounds of a pure-Python loop (a stand-in for the thread that drives the GPU: its host
  work holds the GIL) one thread runs per second alone, beside 1 thread measuring clips, and beside 1
  process measuring them. On this 2-core machine the loop and the one measurer each have a core, so
  what the loop loses beside the thread is the GIL, not the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402

from v2t_foley.foley_core.proposals import ProposalSettings, propose  # noqa: E402
from v2t_foley.foley_core.proposals.processes import MeasuringPool  # noqa: E402
from v2t_foley.foley_core.proposals.visual import _analysis_height  # noqa: E402
from v2t_foley.foley_core.synthetic import SceneSpec, write_scene_video  # noqa: E402
from v2t_foley.foley_core.video import open_video  # noqa: E402
from v2t_foley.foley_core.video.convert import FrameConverter  # noqa: E402

SIZES = {"160x96@12": (160, 96, 12.0, 12), "1280x720@30": (1280, 720, 30.0, 6)}  # w, h, fps, clips
SETTINGS = ProposalSettings()


def log(**fields) -> None:
    print(json.dumps(fields), flush=True)


def clips(folder: Path, width: int, height: int, fps: float, n: int) -> list:
    spec = dict(duration=10.0, fps=fps, width=width, height=height, cuts=(5.0,), motions=((2.0, 4.0),))
    paths = [
        write_scene_video(
            folder / f"{width}-{k}.mp4",
            SceneSpec(**spec, clicks=(1.0 + 0.1 * k, 6.5), speech=((7.0, 9.0),), seed=k),
        )
        for k in range(n)
    ]
    return [open_video(str(p)) for p in paths]


def convert_cost(size: str, video) -> None:
    with av.open(str(video.path)) as media:
        frames = list(media.decode(media.streams.video[0]))
    width = SETTINGS.analysis_width
    height = _analysis_height(video, width)  # the size cut and motion detection scale to
    started = time.perf_counter()
    for frame in frames:
        frame.to_ndarray(format="bgr24", width=width, height=height)
    each = (time.perf_counter() - started) / len(frames)
    convert = FrameConverter("bgr24", width, height)
    started = time.perf_counter()
    for frame in frames:
        convert.array(frame)
    shared = (time.perf_counter() - started) / len(frames)
    log(
        figure="convert",
        clip=size,
        frames=len(frames),
        own_scaler_ms=round(1e3 * each, 3),
        one_converter_ms=round(1e3 * shared, 3),
    )


def measure_all(measure, videos, threads: int) -> tuple[float, list]:
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(lambda v: measure(v, SETTINGS), videos))
    return time.perf_counter() - started, found


def propose_cost(size: str, videos) -> None:
    propose(videos[0], SETTINGS)  # models loaded, caches warm
    alone, truth = measure_all(propose, videos, 1)
    log(figure="propose", clip=size, way="1 thread", s_per_clip=round(alone / len(videos), 3), same=True)
    took, found = measure_all(propose, videos, 2)
    log(
        figure="propose",
        clip=size,
        way="2 threads",
        s_per_clip=round(took / len(videos), 3),
        same=found == truth,
    )
    for processes in (1, 2):
        pool = MeasuringPool(processes)
        started = time.perf_counter()
        pool.start()
        log(figure="pool_start", processes=processes, s=round(time.perf_counter() - started, 2))
        measure_all(pool, videos[:processes], processes)  # each process's models loaded
        took, found = measure_all(pool, videos, 2 * processes)
        pool.close()
        way = f"{processes} process{'es' if processes > 1 else ''}"
        log(
            figure="propose", clip=size, way=way, s_per_clip=round(took / len(videos), 3), same=found == truth
        )


def loop_rate(seconds: float = 4.0) -> float:
    """Rounds a second of a pure-Python loop in this thread."""
    rounds, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        sum(range(200))
        rounds += 1
    return rounds / (time.perf_counter() - started)


def gil_cost(videos) -> None:
    log(figure="gil", beside="nothing", loop_rounds_per_s=round(loop_rate()))
    pool = MeasuringPool(1)
    pool.start()
    for beside, measure in (("1 thread measuring", propose), ("1 process measuring", pool)):
        stop = threading.Event()

        def measuring(measure=measure, stop=stop) -> None:
            while not stop.is_set():
                for video in videos:
                    measure(video, SETTINGS)

        worker = threading.Thread(target=measuring)
        worker.start()
        time.sleep(1.0)
        rate = loop_rate()
        stop.set()
        worker.join()
        log(figure="gil", beside=beside, loop_rounds_per_s=round(rate))
    pool.close()


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="foley-propose-cost-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    log(figure="machine", cpus=os.cpu_count(), commit=commit.stdout.strip())
    for size, (width, height, fps, n) in SIZES.items():
        videos = clips(folder, width, height, fps, n)
        convert_cost(size, videos[0])
        propose_cost(size, videos)
        if size.startswith("160"):
            gil_cost(videos)


if __name__ == "__main__":
    main()
