"""Why a video cannot be used. One subclass per reason, so tests and rows can name it exactly."""

from __future__ import annotations

import re

from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.safenames import redact_uri, uri_secrets

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _scrub(text: str, uri: str) -> str:
    """`text` with `uri`, any other URI in it, and every secret piece of `uri` redacted: a library's
    message may quote the URI, another one, or a piece it parsed out (botocore: `bucket "KEY:SECRET"`)."""
    text = _URI.sub(lambda m: redact_uri(m.group(0)), text.replace(uri, redact_uri(uri)))
    for secret in uri_secrets(uri):
        text = text.replace(secret, "***")
    return text


class VideoError(InputError):
    """A video that cannot be used. `reason` is a short machine-readable tag stored in failed rows.

    The message, `uri` and `detail` never hold credentials: user info (`key:secret@`) and query values
    (presigned signatures, tokens) are replaced by `***` (see `foley_core.safenames.redact_uri`).
    """

    reason = "unreadable"

    def __init__(self, uri: str, detail: str) -> None:
        shown = redact_uri(uri)
        detail = _scrub(detail, uri)
        super().__init__(f"{shown}: {detail}")
        self.uri = shown
        self.detail = detail

    def __reduce__(self) -> tuple:
        # rebuilt from its parts (redacting them again changes nothing), so that the error of a video
        # measured in another process (proposals/processes.py) arrives as itself
        return type(self), (self.uri, self.detail)


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


class DisallowedSourceError(VideoError):
    """The URI is not one the project fetches: a protocol other than local paths, file://, s3://, gs://,
    http(s)://, or a path outside the allowed roots. Move the file, or allow its folder."""

    reason = "disallowed_source"


class VideoFetchError(VideoError):
    """A remote video could not be copied (access denied, a connection or server failure). Check the
    credentials and the URL, then run again (`build-dataset --retry-failed` redoes its failed row)."""

    reason = "fetch_failed"
