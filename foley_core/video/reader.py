"""Frame readers: decode given frame indices of a probed video into RGB arrays.

`FrameReader` is the interface; `pyav_reader.PyAVReader` (sequential decoding, always right) and
`decord_reader.DecordReader` (fast seeking, verified where seeking is known to be unreliable) implement it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2t_foley.foley_core.video.probe import VideoInfo


@dataclass(frozen=True)
class Frames:
    """Decoded frames with their true presentation times."""

    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    times: tuple[float, ...]  # seconds from the first frame, one per image
    indices: tuple[int, ...]  # frame index in presentation order, one per image

    def __len__(self) -> int:
        return len(self.times)

    def describe_times(self) -> str:
        """'frame 1 at 0.00 s, frame 2 at 0.50 s, ...' for prompts."""
        return ", ".join(f"frame {k + 1} at {t:.2f} s" for k, t in enumerate(self.times))


class FrameReader(ABC):
    """Decodes frames of one file by presentation index."""

    name: str = "abstract"

    @abstractmethod
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
        """RGB frames for `indices` (in that order, repeats allowed) as an (N, H, W, 3) uint8 array.

        `info` is what probing found; `max_side` scales frames down so the longer side
        is at most that many pixels; `frame_times` (the frame table) lets a reader seek instead of
        decoding from the start. Raises CorruptVideoError when a frame cannot be decoded.
        """


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most `max_side`, kept even for yuv420p."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
