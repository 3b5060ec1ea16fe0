"""Turn a video URI into a local, seekable file plus its sha256.

Decoders need random access, so remote files are copied once into a cache folder named by content;
the sha256 is computed while copying, so a remote file is read exactly once.

Video URIs come from manifests, which are untrusted input, so only these are fetched:
- local paths and `file://` URIs;
- `s3://`, `gs://` (or `gcs://`), `http://` and `https://`, through fsspec.
Anything else (`memory://`, `ftp://`, `sftp://`, chained `simplecache::s3://...`) is refused with
`DisallowedSourceError`, which fails that row, not the run. With `allow_roots` (the CLI's
`--allow-root`), a local path must lie inside one of the local roots after resolving symlinks and
`..`; and when any root is a URI (`s3://bucket/videos`), a remote URI must lie under one of those.
Errors never show credentials (see `VideoError`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import fsspec

from v2t_foley.foley_core.safenames import redact_uri
from v2t_foley.foley_core.video.errors import (
    DisallowedSourceError,
    EmptyVideoError,
    NotAVideoError,
    VideoFetchError,
    VideoNotFoundError,
)

CHUNK = 1 << 20
REMOTE_PROTOCOLS = frozenset({"s3", "gs", "gcs", "http", "https"})  # fetched through fsspec


@dataclass(frozen=True)
class LocalVideo:
    """A video available on the local disk."""

    uri: str  # what the user gave
    path: Path  # where the bytes are on this machine
    sha256: str  # hex digest of the file's content
    size_bytes: int  # file size


def default_cache_dir() -> Path:
    """`$FOLEY_CACHE_DIR` or `~/.cache/v2t-foley`."""
    return Path(os.environ.get("FOLEY_CACHE_DIR", Path.home() / ".cache" / "v2t-foley"))


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def check_source(uri: str, allow_roots: tuple[str, ...] | None = None) -> Path | None:
    """Refuse what is not fetched (see the module docstring); return a local path, resolved, or None.

    Raises `DisallowedSourceError` naming the URI (redacted) and what would be allowed.
    """
    if is_remote(uri):
        protocol = uri.split("://", 1)[0].lower()
        if "::" in uri or protocol not in REMOTE_PROTOCOLS:
            shown = ", ".join(f"{p}://" for p in sorted(REMOTE_PROTOCOLS))
            raise DisallowedSourceError(
                uri, f"videos are fetched from local paths, file:// and {shown} only; copy it to one of those"
            )
        uri_roots = [r for r in allow_roots or () if is_remote(r)]
        if uri_roots and not any(_under_uri(uri, root) for root in uri_roots):
            raise DisallowedSourceError(uri, f"is outside the allowed roots ({_shown(uri_roots)})")
        return None
    path = Path(uri.removeprefix("file://")).expanduser()
    if allow_roots is None:
        return path
    resolved = path.resolve()
    local_roots = [r for r in allow_roots if not is_remote(r)]  # a path or a file:// URI
    if not any(
        resolved.is_relative_to(Path(r.removeprefix("file://")).expanduser().resolve()) for r in local_roots
    ):
        raise DisallowedSourceError(
            uri,
            f"resolves to {resolved}, outside the allowed roots ({_shown(local_roots) or 'no local root'});"
            " move the file under one of them or allow its folder (--allow-root)",
        )
    return resolved  # what was checked is what is read, even if a link changes later


def _under_uri(uri: str, root: str) -> bool:
    # Object stores and web servers may treat `..` differently from a prefix match: refuse them outright.
    path = uri.split("://", 1)[1].split("?", 1)[0]
    if any(part in (".", "..") for part in path.split("/")):
        return False
    return uri.startswith(root.rstrip("/") + "/")


def _shown(roots: list[str]) -> str:
    return ", ".join(redact_uri(r) for r in roots)


def fetch(
    uri: str, cache_dir: str | Path | None = None, *, allow_roots: tuple[str, ...] | None = None
) -> LocalVideo:
    """Resolve `uri` to a local file, hashing it.

    Raises DisallowedSourceError / VideoNotFoundError / EmptyVideoError / NotAVideoError / VideoFetchError.
    """
    if not uri.strip():
        raise VideoNotFoundError(uri, "no video given (an empty path)")
    path = check_source(uri, allow_roots)
    if path is None:
        return _fetch_remote(uri, Path(cache_dir) if cache_dir else default_cache_dir() / "videos")
    if not path.exists():
        raise VideoNotFoundError(uri, "no such file")
    if path.is_dir():
        raise NotAVideoError(uri, "is a directory, not a video file")
    size = path.stat().st_size
    if size == 0:
        raise EmptyVideoError(uri, "the file is empty (0 bytes)")
    return LocalVideo(uri=uri, path=path, sha256=sha256_file(path), size_bytes=size)


def _fetch_remote(uri: str, cache_dir: Path) -> LocalVideo:
    # Library errors may quote the URL (a presigned one included); VideoError redacts what it shows.
    try:
        fs, remote_path = fsspec.core.url_to_fs(uri)
        info = fs.info(remote_path)
    except FileNotFoundError:
        raise VideoNotFoundError(uri, "no such object") from None
    except PermissionError:
        raise VideoFetchError(uri, "access denied; check the credentials") from None
    except Exception as err:  # fsspec backends raise their own zoo (botocore, aiohttp, import errors)
        raise VideoFetchError(uri, f"cannot be read: {type(err).__name__}: {err}") from None
    if info.get("type") == "directory":
        raise NotAVideoError(uri, "is a directory, not a video file")
    if not info.get("size"):
        raise EmptyVideoError(uri, "the object is empty (0 bytes)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    suffix = Path(remote_path).suffix
    digest = hashlib.sha256()
    # Copy under a temporary name, then move to the content-addressed name: a killed copy leaves
    # only a temp file, never a truncated video under a valid-looking name.
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".part", delete=False) as tmp:
        try:
            with fs.open(remote_path, "rb") as src:
                while block := src.read(CHUNK):
                    digest.update(block)
                    tmp.write(block)
        except Exception as err:
            tmp.close()
            os.unlink(tmp.name)
            raise VideoFetchError(uri, f"the copy failed: {type(err).__name__}: {err}") from None
    sha = digest.hexdigest()
    target = cache_dir / f"{sha}{suffix}"
    os.replace(tmp.name, target)
    return LocalVideo(uri=uri, path=target, sha256=sha, size_bytes=target.stat().st_size)
