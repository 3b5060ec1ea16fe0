"""The factory's Prefect events and the state they read: what the dataset and training triggers match.

`foley.dataset.updated` names the store as its resource, with labels a deployment trigger can match:
`foley.train-ready` is "true" when the store holds at least `train_min_new_rows` ok rows more than the
last training used (recorded by train-lora in `<store>/_training/last.json`).
"""

from __future__ import annotations

import hashlib
import json

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
    """Resource labels of a dataset.updated event (labels are strings; triggers match them exactly)."""
    since = max(ok_rows - last_trained_rows, 0)
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
