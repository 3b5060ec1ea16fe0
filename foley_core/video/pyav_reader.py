"""Sequential decoding with PyAV: slow on long videos, but frame k is always the k-th frame shown."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from v2t_foley.foley_core.video.errors import CorruptVideoError
from v2t_foley.foley_core.video.probe import VideoInfo
from v2t_foley.foley_core.video.reader import FrameReader, scaled_size


class PyAVReader(FrameReader):
    name = "pyav"

    def read(
        self, path: Path, uri: str, indices: Sequence[int], info: VideoInfo, *, max_side: int | None
    ) -> np.ndarray:
        wanted = set(indices)
        last = max(indices)
        found: dict[int, np.ndarray] = {}
        width, height = scaled_size(info.width, info.height, max_side)
        try:
            with av.open(str(path)) as media:
                stream = media.streams.video[0]
                stream.thread_type = "AUTO"
                for position, frame in enumerate(media.decode(stream)):
                    if position in wanted:
                        found[position] = frame.to_ndarray(format="rgb24", width=width, height=height)
                    if position >= last:
                        break
        except av.error.FFmpegError as err:
            raise CorruptVideoError(uri, f"decoding failed: {err}") from None
        missing = sorted(wanted - found.keys())
        if missing:
            raise CorruptVideoError(uri, f"frames {missing[:5]} could not be decoded (truncated stream?)")
        return np.stack([found[i] for i in indices])
