"""Decoded frames to arrays at one size and pixel format, with one scaling context for a whole pass.

`frame.to_ndarray(width=..., height=...)` gives each frame a reformatter of its own, so swscale sets
up its scaler for every frame: about 3 ms here, almost all of the cost of the small frames that cut and
motion detection read (96 pixels wide), and most of a 720p frame's. A `FrameConverter` keeps one
`VideoReformatter` for the pass: the scaler is set up on the first frame and reused (swscale sets it up
again only if the frames' size or format change), the pixels are the same, and the scaling itself runs
without the GIL (`bench/propose_cost.py` measures the difference).
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# FFmpeg's threads for a decoder or a scaler: 0 lets FFmpeg choose (about one a core). A measuring worker
# (proposals/processes.py) sets 1: its pool spreads the work over the cores, one video a process.
FFMPEG_THREADS = 0


def decode_in_threads(stream: av.video.stream.VideoStream) -> None:
    """Frame-threaded decoding of `stream`, with FFMPEG_THREADS threads (set before its first packet)."""
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = FFMPEG_THREADS


class FrameConverter:
    """Converts the frames of one decoding pass to `format` arrays of `width` x `height` pixels."""

    def __init__(self, format: str, width: int, height: int) -> None:
        self.format = format  # an FFmpeg pixel format with a numpy layout ("rgb24", "bgr24", "yuv420p")
        self.width = width  # output width in pixels
        self.height = height  # output height in pixels
        self._reformatter = VideoReformatter()  # one per pass: not shared between threads

    def frame(self, frame: av.VideoFrame) -> av.VideoFrame:
        """`frame` scaled and converted, as a frame (for an encoder)."""
        return self._reformatter.reformat(
            frame, width=self.width, height=self.height, format=self.format, threads=FFMPEG_THREADS
        )

    def array(self, frame: av.VideoFrame) -> np.ndarray:
        """`frame` scaled and converted, as an array ((height, width, 3) uint8 for packed RGB/BGR)."""
        return self.frame(frame).to_ndarray()
