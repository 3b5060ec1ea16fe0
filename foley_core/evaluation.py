"""Load predictions and references for scoring: folders of `<id>.json` scripts, or a dataset store.

A store's ok rows are predictions (their `video` is kept for plots); failed rows count as invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import fsspec
from pydantic import ValidationError

from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.schema.script import FoleyScript


@dataclass(frozen=True)
class Prediction:
    script: FoleyScript | None  # None when missing, failed or not a valid script
    video: str | None  # where the video is, when known (for plots)
    reason: str = ""  # why there is no script


def _is_store(uri: str) -> bool:
    fs, root = fsspec.core.url_to_fs(uri)
    return fs.exists(f"{root.rstrip('/')}/_shards")


def _parse(text: str) -> FoleyScript | None:
    try:
        return FoleyScript.model_validate(json.loads(text))
    except (ValueError, ValidationError):
        return None


def load_predictions(uri: str) -> dict[str, Prediction]:
    """{id: Prediction} from a store (its newest row per id) or a folder of `<id>.json` files."""
    if _is_store(uri):
        from v2t_foley.foley_core.store import DatasetStore

        rows = sorted(DatasetStore(uri).read_rows(), key=lambda r: r["created_at"])
        found = {}
        for row in rows:  # later rows win: a retried video is scored by its newest row
            script = _parse(row["script"]) if row["status"] == "ok" else None
            found[row["id"]] = Prediction(script, row["video"], "" if script else row["error"] or "invalid")
        return found
    folder = Path(uri)
    if not folder.is_dir():
        raise InputError(f"{uri}: neither a dataset store nor a folder of <id>.json scripts")
    return {
        path.stem: Prediction(
            script := _parse(path.read_text()), None, "" if script else "not a valid script"
        )
        for path in sorted(folder.glob("*.json"))
    }


def load_references(uri: str) -> dict[str, FoleyScript]:
    folder = Path(uri)
    if not folder.is_dir():
        raise InputError(f"{uri}: not a folder of <id>.json reference scripts")
    references = {}
    for path in sorted(folder.glob("*.json")):
        script = _parse(path.read_text())
        if script is None:
            raise InputError(f"{path}: not a valid foley script")
        references[path.stem] = script
    if not references:
        raise InputError(f"{uri}: no <id>.json reference scripts")
    return references


def find_video(folder: Path, video_id: str) -> str | None:
    """The file in `folder` named `<id>.<ext>` (or `<safe_name(id)>.<ext>`), if there is one.

    Compared by name, never built into a path or a glob pattern: an id such as `../x` or `a[1]` must
    neither reach outside the folder nor match other files.
    """
    from v2t_foley.foley_core.safenames import safe_name

    wanted = {video_id, safe_name(video_id)}
    if not folder.is_dir():
        return None
    return next((str(p) for p in sorted(folder.iterdir()) if p.is_file() and p.stem in wanted), None)
