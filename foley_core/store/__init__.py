"""The dataset store: Parquet shards, completion markers and a dataset card, on local disk or s3://."""

from v2t_foley.foley_core.store.card import render_card
from v2t_foley.foley_core.store.store import DatasetStore, ShardMarker

__all__ = ["DatasetStore", "ShardMarker", "render_card"]
