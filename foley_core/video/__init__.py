"""Video access: open a local path or fsspec URI, probe it, hash it, sample frames with true times."""

from v2t_foley.foley_core.video.errors import (
    CorruptVideoError,
    DisallowedSourceError,
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    VideoError,
    VideoFetchError,
    VideoNotFoundError,
    ZeroDurationError,
)
from v2t_foley.foley_core.video.probe import VideoInfo, probe
from v2t_foley.foley_core.video.reader import FrameReader, Frames
from v2t_foley.foley_core.video.source import LocalVideo, check_source, fetch, redact_uri, sha256_file
from v2t_foley.foley_core.video.video import Video, make_reader, open_video

__all__ = [
    "CorruptVideoError",
    "DisallowedSourceError",
    "EmptyVideoError",
    "FrameReader",
    "Frames",
    "LocalVideo",
    "NoVideoStreamError",
    "NotAVideoError",
    "Video",
    "VideoError",
    "VideoFetchError",
    "VideoInfo",
    "VideoNotFoundError",
    "ZeroDurationError",
    "check_source",
    "fetch",
    "make_reader",
    "open_video",
    "probe",
    "redact_uri",
    "sha256_file",
]
