"""The dataset card: README.md with a YAML header that `datasets.load_dataset(<store>)` reads.

The header's `configs.data_files` lists exactly the complete shards (never a glob), so a shard that is
still being written, or whose run died before its marker, is invisible to loaders.
"""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from v2t_foley.foley_core.schema.rows import FEATURES
from v2t_foley.foley_core.store.store import DatasetStore, ShardMarker, stats


def render_card(
    store: DatasetStore, title: str = "v2t-foley foley scripts", markers: list[ShardMarker] | None = None
) -> str:
    markers = store.markers() if markers is None else markers  # each read lists and reads every marker
    files = store.data_files(markers)
    counts = stats(markers)
    split_rows: dict[str, int] = {}
    for marker in markers:
        for split, n in marker.split_rows.items():
            split_rows[split] = split_rows.get(split, 0) + n
    header = {
        "pretty_name": title,
        "tags": ["foley", "video-to-audio", "sound-design", "video-text"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": paths} for split, paths in sorted(files.items())],
            }
        ],
        "dataset_info": {
            "features": [{"name": name, "dtype": feature.dtype} for name, feature in FEATURES.items()],
        },
    }
    body = f"""# {title}

Multi-track foley scripts (`foley`, `fx`, `ambience`, `dialogue`) written by a video-LLM chain of
thought, one row per (video, prompt-set version, model). Made by
[v2t-foley](https://github.com/v2t-foley/v2t-foley).

| | |
|---|---|
| complete shards | {counts["shards"]} |
| rows | {counts["rows"]} |
| ok | {counts["ok"]} |
| failed | {counts["failed"]} |
| splits | {", ".join(f"{s}: {n} rows" for s, n in sorted(split_rows.items())) or "none"} |
| prompt versions | {", ".join(counts["prompt_versions"]) or "none"} |
| models | {", ".join(counts["models"]) or "none"} |
| updated | {datetime.now(UTC).isoformat(timespec="seconds")} |

Rows with `status == "failed"` name the reason in `error` and `error_kind`. `script`, `events`,
`trace`, `generation`, `timings` and `metadata` are JSON strings.

```python
import datasets
ds = datasets.load_dataset("{store.uri}")            # a local store, through this card
ds = datasets.load_dataset("parquet", data_files={{"train": ["{store.url("data/train-...parquet")}"]}})
ok = ds["train"].filter(lambda row: row["status"] == "ok")
```
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + body
