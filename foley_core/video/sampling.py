"""Which frames to show the model: pure functions from the frame table to frame indices.

Indices are positions in presentation order (the frame table). A strategy that asks for more frames
than exist repeats frames, so a model that needs exactly N frames (Video-LLaVA: 8) always gets N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FramePolicy:
    """How a model wants its frames sampled for one question."""

    kind: str = "uniform"  # "uniform": n frames spread over the span; "fps": a fixed rate, at most n frames
    n: int = 8  # frame count for "uniform"; the cap for "fps"
    fps: float = 2.0  # frames per second for "fps"

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "fps"):
            raise ValueError(f"unknown frame policy {self.kind!r}; use 'uniform' or 'fps'")


def uniform_indices(frame_count: int, n: int) -> list[int]:
    """`n` frames spread evenly from the first to the last, as Video-LLaVA's own sampler does."""
    if frame_count <= 0 or n <= 0:
        raise ValueError(f"need frames and n > 0 (frame_count={frame_count}, n={n})")
    return np.linspace(0, frame_count - 1, n).round().astype(int).tolist()


def window_indices(times: np.ndarray, start: float, end: float, n: int) -> list[int]:
    """`n` frames spread evenly over the frames shown in [start, end).

    A window shorter than one frame gets the frame on screen at `start`.
    """
    inside = np.flatnonzero((times >= start - 1e-9) & (times < end - 1e-9))
    if inside.size == 0:
        inside = np.array([frame_at(times, start)])
    picks = np.linspace(0, inside.size - 1, n).round().astype(int)
    return inside[picks].tolist()


def fps_indices(times: np.ndarray, fps: float, start: float = 0.0, end: float | None = None) -> list[int]:
    """The frame on screen at start, start + 1/fps, ... up to `end` (default: the last frame).

    Consecutive duplicates are dropped, so asking for more fps than the video has returns each frame once.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    end = float(times[-1]) + 1e-9 if end is None else end
    targets = np.arange(start, end, 1.0 / fps)
    indices = [frame_at(times, t) for t in targets]
    return [i for k, i in enumerate(indices) if k == 0 or i != indices[k - 1]]


def frame_at(times: np.ndarray, t: float) -> int:
    """Index of the frame on screen at time t (the last frame starting at or before t)."""
    # 1e-6: times that went through JSON rounded to 6 decimals still name their own frame
    return int(max(0, np.searchsorted(times, t + 1e-6, side="right") - 1))


def policy_indices(
    times: np.ndarray, policy: FramePolicy, start: float = 0.0, end: float | None = None
) -> list[int]:
    """Frame indices for `policy` over [start, end) (default: the whole video)."""
    end = float(times[-1]) + 1e-6 if end is None else end
    if policy.kind == "uniform":
        return window_indices(times, start, end, policy.n)
    picks = fps_indices(times, policy.fps, start, end)
    if len(picks) > policy.n:
        keep = np.linspace(0, len(picks) - 1, policy.n).round().astype(int)
        picks = [picks[k] for k in keep]
    return picks
