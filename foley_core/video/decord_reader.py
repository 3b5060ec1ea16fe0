"""Random access with decord, checked where its seeks are known to go wrong.

decord seeks by index and can land on the wrong frame in some containers: AVI with B-frames is the
known case (measured here: asking for frame 13 of an mpeg4 AVI returned frame 3). For those containers,
and whenever decord's own timestamps disagree with the probe, the frames are compared against
sequential decoding and the sequential frames win.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from v2t_foley.foley_core.video.errors import CorruptVideoError
from v2t_foley.foley_core.video.probe import VideoInfo
from v2t_foley.foley_core.video.pyav_reader import PyAVReader
from v2t_foley.foley_core.video.reader import FrameReader, scaled_size

log = logging.getLogger(__name__)

# Demuxers whose seeks decord is known to get wrong.
UNRELIABLE_SEEK_CONTAINERS = ("avi",)
# Mean absolute pixel difference above which two decodes of "the same" frame are different frames.
SAME_FRAME_TOLERANCE = 12.0
# Files kept open. Opening indexes the whole file (137 ms for a 60-minute MP4 against 29 ms for 10
# minutes, measured here), and a long video's chunks read it hundreds of times.
KEEP_OPEN = 2


class DecordReader(FrameReader):
    name = "decord"

    def __init__(self) -> None:
        import decord  # noqa: F401  (fail at construction when decord is missing, not mid-run)

        self.fallback = PyAVReader()
        self._open: OrderedDict[tuple, tuple[Any, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def _reader(self, path: Path, width: int, height: int, info: VideoInfo) -> tuple[Any, threading.Lock]:
        """An open decord reader of `path` at this size (one per file and size, LRU), with its lock:
        a decord reader is not safe to use from two threads at once."""
        import decord

        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size, width, height)
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key]
        size = {} if (width, height) == (info.width, info.height) else {"width": width, "height": height}
        opened = (decord.VideoReader(str(path), num_threads=1, **size), threading.Lock())
        with self._lock:
            self._open[key] = opened
            while len(self._open) > KEEP_OPEN:
                self._open.popitem(last=False)
        return opened

    def read(
        self,
        path: Path,
        uri: str,
        indices: Sequence[int],
        info: VideoInfo,
        *,
        max_side: int | None,
        frame_times: np.ndarray | None = None,
    ) -> np.ndarray:
        import decord

        try:
            width, height = scaled_size(info.width, info.height, max_side)
            reader, lock = self._reader(Path(path), width, height, info)
            with lock:
                if max(indices) >= len(reader):
                    raise CorruptVideoError(
                        uri, f"decord sees {len(reader)} frames; frame {max(indices)} asked"
                    )
                images = reader.get_batch(list(indices)).asnumpy()
                stamps = reader.get_frame_timestamp(list(indices))[:, 0]
        except decord.DECORDError as err:
            raise CorruptVideoError(uri, f"decoding failed: {err}") from None
        suspicious = any(name in info.container.split(",") for name in UNRELIABLE_SEEK_CONTAINERS)
        if suspicious or not _plausible(stamps):
            reference = self.fallback.read(path, uri, indices, info, max_side=max_side)
            if reference.shape != images.shape or _differs(images, reference):
                log.warning("decord returned wrong frames for %s; using sequential decoding", uri)
                return reference
        return images


def _plausible(stamps: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(stamps)) and np.all(stamps >= 0))


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).reshape(len(a), -1).mean(axis=1)
    return bool(np.any(diff > SAME_FRAME_TOLERANCE))
