"""Where a command will write, checked before it does the work: a run that ends on a bad `--out` would
lose what it computed."""

from __future__ import annotations

import os
from pathlib import Path

from v2t_foley.foley_core.errors import InputError


def _nearest_existing(path: Path) -> Path:
    absolute = path.absolute()
    return next(p for p in (absolute, *absolute.parents) if p.exists())


def check_out_folder(path: Path, option: str = "--out") -> None:
    """`path` is a folder, or can be made one (it is created later, when something is written)."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file; give a folder (it is created if missing)")
    _check_ancestor(path, option)


def check_out_file(path: Path | None, option: str = "--out") -> None:
    """`path` can be written as a file: not a folder, and its folder exists or can be made."""
    if path is None:
        return
    if path.is_dir() or not path.name:
        raise InputError(f"{option} {path} is a folder; give a file name")
    _check_ancestor(path.parent, option)


def _check_ancestor(folder: Path, option: str) -> None:
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        raise InputError(f"{option} {folder}: {ancestor} is a file, so no folder can be made there")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{option} {folder}: {ancestor} is not writable")
