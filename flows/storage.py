"""Result storage for the chain's cached steps: a local folder or any fsspec URI (s3://...)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect.filesystems import RemoteFileSystem


def result_storage(uri: str) -> Path | RemoteFileSystem:
    """What Prefect tasks take as `result_storage` for `uri`.

    A local folder is passed as a Path. A remote one must be a block saved on the server (Prefect
    resolves result storage by reference), so it is saved under a name derived from the URI.
    """
    if "://" in uri and not uri.startswith("file://"):
        block = RemoteFileSystem(basepath=uri.rstrip("/"))
        block.save(f"foley-results-{hashlib.sha1(uri.encode()).hexdigest()[:12]}", overwrite=True)
        return block
    path = Path(uri.removeprefix("file://")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
