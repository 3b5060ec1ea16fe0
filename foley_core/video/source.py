"""Turn a video URI (a local path or any fsspec URI) into a local, seekable file plus its sha256.

Decoders need random access, so remote files are copied once into a cache folder named by content;
the sha256 is computed while copying, so a remote file is read exactly once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import fsspec

from foley_core.video.errors import EmptyVideoError, NotAVideoError, VideoNotFoundError

CHUNK = 1 << 20


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


def fetch(uri: str, cache_dir: str | Path | None = None) -> LocalVideo:
    """Resolve `uri` to a local file, hashing it. Raises VideoNotFoundError / EmptyVideoError."""
    if is_remote(uri):
        return _fetch_remote(uri, Path(cache_dir) if cache_dir else default_cache_dir() / "videos")
    path = Path(uri.removeprefix("file://")).expanduser()
    if not path.exists():
        raise VideoNotFoundError(uri, "no such file")
    if path.is_dir():
        raise NotAVideoError(uri, "is a directory, not a video file")
    size = path.stat().st_size
    if size == 0:
        raise EmptyVideoError(uri, "the file is empty (0 bytes)")
    return LocalVideo(uri=uri, path=path, sha256=sha256_file(path), size_bytes=size)


def _fetch_remote(uri: str, cache_dir: Path) -> LocalVideo:
    fs, remote_path = fsspec.core.url_to_fs(uri)
    try:
        info = fs.info(remote_path)
    except FileNotFoundError:
        raise VideoNotFoundError(uri, "no such object") from None
    if info.get("type") == "directory":
        raise NotAVideoError(uri, "is a directory, not a video file")
    if not info.get("size"):
        raise EmptyVideoError(uri, "the object is empty (0 bytes)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    suffix = Path(remote_path).suffix
    digest = hashlib.sha256()
    # Copy under a temporary name, then move to the content-addressed name: a killed copy leaves
    # only a temp file, never a truncated video under a valid-looking name.
    with (
        tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".part", delete=False) as tmp,
        fs.open(remote_path, "rb") as src,
    ):
        while block := src.read(CHUNK):
            digest.update(block)
            tmp.write(block)
    sha = digest.hexdigest()
    target = cache_dir / f"{sha}{suffix}"
    os.replace(tmp.name, target)
    return LocalVideo(uri=uri, path=target, sha256=sha, size_bytes=target.stat().st_size)
