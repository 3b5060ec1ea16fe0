"""Which weights exactly: the resolved revision of a model and of its adapter, known without loading.

Rows record these revisions and step cache keys are made of them, so a Hub branch that moved, a local
model folder that changed, or an adapter retrained into the same folder gives new keys and never reuses
answers of other weights. A Hub id resolves to the commit hash the local Hugging Face cache holds (no
network); a folder (the tiny models included) to a hash of its content.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from v2t_foley.foley_core.backends.tiny import is_tiny, tiny_model_path

if TYPE_CHECKING:
    from v2t_foley.foley_core.backends import BackendSpec

# Files at least this large are weights: hashed by size and their first and last 8 MiB, not in full.
# Hashing a 14 GB checkpoint in full on every run would cost a minute or more; a retrained or re-saved
# weight file changes its header (safetensors' JSON header holds every tensor's offset) or its tail, or
# its size. The trade-off: an edit confined to the middle of a big file that keeps its size goes unseen.
BIG_FILE = 64 * 1024 * 1024
EDGE = 8 * 1024 * 1024
_COMMIT = re.compile(r"[0-9a-f]{40}")

# path -> (stamp of every file: relative path, size, mtime, and the digest), so a repeated call only stats
_digests: dict[str, tuple[tuple, str]] = {}
_digests_lock = threading.Lock()


def join_revisions(model_revision: str, adapter_revision: str) -> str:
    """One string for model plus adapter: "<model_rev>" or "<model_rev>+<adapter_rev>"."""
    return f"{model_revision}+{adapter_revision}" if adapter_revision else model_revision


def resolve_model_revision(model: str, revision: str | None = None) -> str:
    """The commit of a Hub model in the local cache, or the content hash of a model folder.

    Never touches the network: an id the cache does not hold resolves to the requested revision ("" for
    none), and so does anything that fails to read.
    """
    try:
        if is_tiny(model):
            return folder_revision(tiny_model_path(model))
        if Path(model).is_dir():
            return folder_revision(Path(model))
        return _hub_commit(model, revision) or (revision or "")
    except OSError:
        return revision or ""


def resolve_adapter_revision(adapter: str | None) -> str:
    """The content hash of the adapter's weights and config ("" for no adapter)."""
    if not adapter:
        return ""
    # What PEFT loads is adapter_config.json and adapter_model.*: the trainer's checkpoints, log and card
    # in the same folder do not change the answers (and the checkpoints are big).
    return folder_revision(Path(adapter), top_level_prefix="adapter_")


def resolve_revisions(spec: BackendSpec) -> tuple[str, str]:
    """(model revision, adapter revision) that `spec` would run now."""
    if spec.backend != "transformers":
        return spec.revision or "", ""  # a served model: only what the caller pinned is known
    return resolve_model_revision(spec.model, spec.revision), resolve_adapter_revision(spec.adapter)


def revision_key(spec: BackendSpec) -> str:
    """The revisions a spec would run now, as one string (what rows and step keys compare)."""
    return join_revisions(*resolve_revisions(spec))


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, read when asked (tests and users set HF_HUB_CACHE at runtime)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_commit(model: str, revision: str | None) -> str:
    """The commit a Hub revision (default main) points to in the local cache; "" when unknown."""
    repo = hub_cache_dir() / f"models--{model.replace('/', '--')}"
    if revision and _COMMIT.fullmatch(revision):
        return revision  # already a commit: nothing can move it
    ref = repo / "refs" / (revision or "main")
    if ref.is_file():
        return ref.read_text().strip()
    snapshots = repo / "snapshots"
    if revision and (snapshots / revision).is_dir():
        return revision
    found = [p.name for p in snapshots.iterdir() if p.is_dir()] if snapshots.is_dir() else []
    # without a ref, a single snapshot is unambiguous; several are not (which one would load?)
    return found[0] if not revision and len(found) == 1 else ""


def folder_revision(folder: Path, top_level_prefix: str | None = None) -> str:
    """ "sha256:<16 hex>" of a folder's files: relative path, size and content (edges of big files).

    Hidden files and folders (a download's `.cache/`) are left out; with `top_level_prefix`, only the
    folder's own files whose names start with it count. Cached per process by every file's size, inode
    and times, so calling it once per shard costs a few stats.
    """
    if top_level_prefix is not None:
        found = (p for p in folder.iterdir() if p.name.startswith(top_level_prefix))
    else:
        found = (p for p in folder.rglob("*") if not _hidden(p.relative_to(folder)))
    files = sorted((path.relative_to(folder).as_posix(), path) for path in found if path.is_file())
    stats = [(rel, path.stat()) for rel, path in files]
    # ctime and inode too: a file rewritten within one coarse mtime tick at the same size still shows
    stamp = tuple((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for rel, st in stats)
    key = f"{folder.resolve()}|{top_level_prefix or ''}"
    with _digests_lock:
        known = _digests.get(key)
    if known and known[0] == stamp:
        return known[1]
    digest = hashlib.sha256()
    for (rel, path), (_, st) in zip(files, stats, strict=True):
        digest.update(f"{rel}\0{st.st_size}\0".encode())
        digest.update(_content_digest(path, st.st_size))
    value = f"sha256:{digest.hexdigest()[:16]}"
    with _digests_lock:
        _digests[key] = (stamp, value)
    return value


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _content_digest(path: Path, size: int) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size < BIG_FILE:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:
            digest.update(handle.read(EDGE))
            handle.seek(size - EDGE)
            digest.update(handle.read(EDGE))
    return digest.digest()
