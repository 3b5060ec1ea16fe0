"""The step cache on a folder or any fsspec URI (s3://...): one JSON file per step result and key.

JSON, read back through each step's declared value type, never pickle: a store's cache may come from
someone else, and reading it must not run code. A file that cannot be read back (a write cut short,
an older format) is a miss, and the step is computed again.
"""

from __future__ import annotations

import logging
import uuid
from functools import cache
from typing import Any

import fsspec
from pydantic import TypeAdapter

from v2t_foley.foley_core.chain.graph import MISSING, Step, StepCache
from v2t_foley.foley_core.chain.steps import StepResult

log = logging.getLogger(__name__)


@cache
def _adapter(value_type: Any) -> TypeAdapter:
    return TypeAdapter(StepResult[value_type])


class FileStepCache(StepCache):
    """Step results under `uri`, one file per key: `<uri>/<key>.json`."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.uri)
        self.root = root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}.json"

    def get(self, step: Step, key: str) -> Any:
        try:
            raw = self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            return MISSING
        try:
            return _adapter(step.value_type).validate_json(raw)
        except Exception as err:
            log.warning("step cache entry %s is unreadable (%s); computing it again", key, err)
            return MISSING

    def put(self, step: Step, key: str, result: StepResult) -> None:
        raw = _adapter(step.value_type).dump_json(result)
        staging = f"{self.root}/_tmp-{uuid.uuid4().hex}"
        self.fs.pipe_file(staging, raw)
        self.fs.mv(staging, self._path(key))  # never half a file under the key
