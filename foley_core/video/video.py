"""`open_video`: one object per video that knows its content hash, its frame table and how to sample."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from v2t_foley.foley_core.video.probe import VideoInfo, probe
from v2t_foley.foley_core.video.reader import FrameReader, Frames
from v2t_foley.foley_core.video.sampling import (
    FramePolicy,
    fps_indices,
    policy_indices,
    uniform_indices,
    window_indices,
)
from v2t_foley.foley_core.video.source import LocalVideo, fetch

log = logging.getLogger(__name__)


def make_reader(name: str = "auto") -> FrameReader:
    """'decord', 'pyav', or 'auto' (decord where it imports, else PyAV)."""
    from v2t_foley.foley_core.video.pyav_reader import PyAVReader

    if name == "pyav":
        return PyAVReader()
    try:
        from v2t_foley.foley_core.video.decord_reader import DecordReader

        return DecordReader()
    except ImportError:
        if name == "decord":
            raise
        log.info("decord is not installed; decoding with PyAV")
        return PyAVReader()


class FrameCache:
    """A small process-wide LRU of decoded frames, bounded in entries and in bytes.

    The chain asks about the same frames several times (identify, every event, synthesize); decoding
    them once per process is enough. Only sampled frames are kept (never a whole video's), and at most
    `max_bytes` of them, so a long video costs no more memory than a short one. Frames are never
    persisted as task results. A transformers model may hold pixel values made from a frames object
    while that object lives (backends/prompt_inputs.py: 4.8 MB for 8 frames of Video-LLaVA, uncounted
    here), so at most `max_entries` of those are kept alive by this cache.
    """

    def __init__(self, max_entries: int = 32, max_bytes: int = 256 * 2**20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, Frames] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Frames | None:
        with self._lock:
            frames = self._entries.get(key)
            if frames is not None:
                self._entries.move_to_end(key)
            return frames

    def put(self, key: tuple, frames: Frames) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.images.nbytes
            self._entries[key] = frames
            self._bytes += frames.images.nbytes
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_entries or self._bytes > self.max_bytes
            ):
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.images.nbytes


FRAME_CACHE = FrameCache()


@dataclass
class Video:
    """A probed, hashed video ready for frame sampling. Build it with `open_video`."""

    source: LocalVideo  # where the bytes are, and their sha256
    info: VideoInfo  # duration, fps, size, audio
    frame_times: np.ndarray  # presentation time of every frame, seconds from the first frame
    reader: FrameReader  # the decoder used for sampling
    max_side: int | None = None  # frames are scaled down so their longer side is at most this
    # a chunk of a longer video (`span`): its first frame's index and time in the whole video, and the
    # whole video's info and frame table (what the reader decodes by); 0 / None for a whole video
    first_index: int = 0
    offset: float = 0.0
    whole_info: VideoInfo | None = None
    whole_times: np.ndarray | None = None

    @property
    def uri(self) -> str:
        return self.source.uri

    @property
    def sha256(self) -> str:
        return self.source.sha256

    @property
    def path(self) -> Path:
        return self.source.path

    def span(self, start: float, end: float) -> Video:
        """The frames shown in [start, end) as a video of its own: times from `start`, length end - start.

        Sampling and decoding work as on any video (frames are read from the whole file by seeking);
        `offset` and `first_index` say where the chunk lies in the whole video.
        """
        times = self.frame_times
        lo = int(np.searchsorted(times, start - 1e-9))
        hi = max(int(np.searchsorted(times, end - 1e-9)), lo + 1)
        duration = round(end - start, 6)
        info = replace(self.info, duration=duration, frame_count=hi - lo)
        return replace(
            self,
            info=info,
            frame_times=times[lo:hi] - times[lo],
            first_index=self.first_index + lo,
            offset=round(self.offset + float(times[lo]), 6),
            whole_info=self.whole_info or self.info,
            whole_times=self.whole_times if self.whole_times is not None else self.frame_times,
        )

    def frames(self, indices: list[int] | tuple[int, ...]) -> Frames:
        """Decode the frames at these presentation indices (remembered per process, see FrameCache)."""
        whole = [i + self.first_index for i in indices]
        key = (self.sha256, tuple(whole), self.max_side, self.offset)
        cached = FRAME_CACHE.get(key)
        if cached is not None:
            return cached
        info = self.whole_info or self.info
        table = self.whole_times if self.whole_times is not None else self.frame_times
        images = self.reader.read(self.path, self.uri, whole, info, max_side=self.max_side, frame_times=table)
        times = tuple(round(float(self.frame_times[i]), 6) for i in indices)
        frames = Frames(images=images, times=times, indices=tuple(indices))
        FRAME_CACHE.put(key, frames)
        return frames

    def uniform(self, n: int) -> Frames:
        """`n` frames spread over the whole video (Video-LLaVA's sampling)."""
        return self.frames(uniform_indices(self.info.frame_count, n))

    def window(self, start: float, end: float, n: int) -> Frames:
        """`n` frames spread over the frames shown in [start, end)."""
        return self.frames(window_indices(self.frame_times, start, end, n))

    def at_fps(self, fps: float, start: float = 0.0, end: float | None = None) -> Frames:
        """The frames on screen every 1/fps seconds from `start` to `end`."""
        return self.frames(fps_indices(self.frame_times, fps, start, end))

    def sample(self, policy: FramePolicy, start: float = 0.0, end: float | None = None) -> Frames:
        """Frames as a model's `FramePolicy` asks, over [start, end) (default: the whole video)."""
        return self.frames(policy_indices(self.frame_times, policy, start, end))


def open_video(
    uri: str,
    *,
    reader: str | FrameReader = "auto",
    cache_dir: str | Path | None = None,
    max_side: int | None = None,
    allow_roots: tuple[str, ...] | None = None,
) -> Video:
    """Fetch (if remote), hash and probe `uri`. Raises a `VideoError` subclass if it is unusable.

    `allow_roots`: when given, a local path must resolve inside one of its local folders, and a remote
    URI must lie under one of its URI roots if it names any (see `foley_core.video.source`).
    """
    source = fetch(uri, cache_dir, allow_roots=allow_roots)
    info, times = probe(source.path, uri)
    chosen = make_reader(reader) if isinstance(reader, str) else reader
    return Video(source=source, info=info, frame_times=times, reader=chosen, max_side=max_side)
