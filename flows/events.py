"""The factory's Prefect events and the state they read: what the dataset and training triggers match.

`foley.dataset.updated` names the store as its resource, with labels a deployment trigger can match:
`foley.train-ready` is "true" when the store holds at least `train_min_new_rows` ok rows the last
training did not read. train-lora records in `<store>/_training/last.json` the shards it read (and their
ok rows) from the same read that built its training data, so rows that land during a training count
toward the next one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Protocol

import fsspec

DATASET_UPDATED = "foley.dataset.updated"
ADAPTER_TRAINED = "foley.adapter.trained"
LAST_TRAINING = "_training/last.json"


def dataset_resource(store: str, **labels: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"foley.dataset.{hashlib.sha1(store.encode()).hexdigest()[:12]}",
        "prefect.resource.name": store,
        **labels,
    }


def training_labels(ok_rows: int, last_trained_rows: int, train_min_new_rows: int) -> dict[str, str]:
    """Resource labels of a dataset.updated event (labels are strings; triggers match them exactly).
    `last_trained_rows` is last.json's `ok_rows`: the ok rows in the shards the training read."""
    return _labels(max(ok_rows - last_trained_rows, 0), train_min_new_rows)


class Marker(Protocol):
    """What readiness needs of a shard marker (foley_core.store.ShardMarker)."""

    @property
    def name(self) -> str: ...

    ok: int
    keys: list[tuple[str, str, str, str]]


def rows_since_training(markers: Iterable[Marker], last: dict, *, include_adapter_rows: bool = False) -> int:
    """Ok rows in shards the last training did not read, of the kind training uses: adapters' own
    rows (model key `<model>@<adapter>`) only when asked, as in TrainConfig. A record from before
    shards were recorded falls back to its ok-row count."""
    markers = list(markers)
    if last and "markers" not in last:
        return max(sum(m.ok for m in markers) - int(last.get("ok_rows", 0)), 0)
    wanted = [
        (key[:3], marker.name)
        for marker in markers
        for key in marker.keys
        if key[3] == "ok" and (include_adapter_rows or "@" not in key[2])
    ]
    if "seen" in last:  # by key: a marker that supersedes read ones carries their rows again
        seen = {tuple(k) for k in last["seen"]}
        return sum(1 for key, _ in wanted if key not in seen)
    read = set(last.get("markers", ()))  # {}: never trained, every shard is new
    return sum(1 for _, name in wanted if name not in read)


def readiness_labels(markers: Iterable[Marker], last: dict, train_min_new_rows: int) -> dict[str, str]:
    """`training_labels` from the store's markers and the last training's record (`last_training`)."""
    return _labels(rows_since_training(markers, last), train_min_new_rows)


def _labels(since: int, train_min_new_rows: int) -> dict[str, str]:
    return {
        "foley.rows-since-training": str(since),
        "foley.train-ready": str(since >= train_min_new_rows).lower(),
    }


def last_training(store: str) -> dict:
    """What the last training of this store recorded ({} when it was never trained)."""
    fs, root = fsspec.core.url_to_fs(store)
    path = f"{root.rstrip('/')}/{LAST_TRAINING}"
    return json.loads(fs.cat_file(path)) if fs.exists(path) else {}


def record_training(store: str, record: dict) -> None:
    fs, root = fsspec.core.url_to_fs(store)
    path = f"{root.rstrip('/')}/{LAST_TRAINING}"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as handle:
        handle.write(json.dumps(record, indent=1))
