"""Video access: open a local path or fsspec URI, probe it, hash it, sample frames with true times."""

from foley_core.video.errors import (
    CorruptVideoError,
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    VideoError,
    VideoNotFoundError,
    ZeroDurationError,
)
from foley_core.video.probe import VideoInfo, probe
from foley_core.video.reader import FrameReader, Frames
from foley_core.video.source import LocalVideo, fetch, sha256_file
from foley_core.video.video import Video, make_reader, open_video

__all__ = [
    "CorruptVideoError",
    "EmptyVideoError",
    "FrameReader",
    "Frames",
    "LocalVideo",
    "NoVideoStreamError",
    "NotAVideoError",
    "Video",
    "VideoError",
    "VideoInfo",
    "VideoNotFoundError",
    "ZeroDurationError",
    "fetch",
    "make_reader",
    "open_video",
    "probe",
    "sha256_file",
]
