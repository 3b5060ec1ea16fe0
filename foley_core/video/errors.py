"""Why a video cannot be used. One subclass per reason, so tests and rows can name it exactly."""

from __future__ import annotations

from foley_core.errors import InputError


class VideoError(InputError):
    """A video that cannot be used. `reason` is a short machine-readable tag stored in failed rows."""

    reason = "unreadable"

    def __init__(self, uri: str, detail: str) -> None:
        super().__init__(f"{uri}: {detail}")
        self.uri = uri
        self.detail = detail


class VideoNotFoundError(VideoError):
    """The path or URI points at nothing. Check the spelling, the bucket and the credentials."""

    reason = "missing"


class EmptyVideoError(VideoError):
    """The file exists and has zero bytes: usually an interrupted copy or download. Copy it again."""

    reason = "empty"


class NotAVideoError(VideoError):
    """The file is not a media container FFmpeg recognises (a text file named .mp4, an image...)."""

    reason = "not_a_video"


class NoVideoStreamError(VideoError):
    """A media file with no video stream (an audio-only file, say)."""

    reason = "no_video_stream"


class CorruptVideoError(VideoError):
    """The container is recognised but its data is truncated or corrupt. Re-encode or re-download it."""

    reason = "corrupt"


class ZeroDurationError(VideoError):
    """The video stream holds no decodable frame, so there is no time to describe."""

    reason = "zero_duration"
