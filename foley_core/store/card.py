"""The dataset card: README.md with a YAML header that `datasets.load_dataset(<store>)` and the Hub read.

The header's `configs.data_files` lists exactly the complete shards (never a glob), so a shard that is
still being written, or whose run died before its marker, is invisible to loaders. The header also
carries what the Hub shows and checks: license (kept in the store's `_card.json`, `unknown` until the
user sets one), task categories, size category, language, tags, the features and every split's rows.

The card never shows a path of the machine that built it: models given as local folders appear by
their folder name only, and URIs lose their credentials.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import yaml

from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.safenames import redact_uri
from v2t_foley.foley_core.schema.rows import FEATURES
from v2t_foley.foley_core.store.markers import STORE_FORMAT
from v2t_foley.foley_core.store.store import DatasetStore, ShardMarker, stats

if TYPE_CHECKING:
    from v2t_foley.foley_core.curated_view import CuratedCounts, CurationOptions

UNKNOWN_LICENSE = "unknown"  # the Hub's own id for "not stated"
TASK_CATEGORIES = ["video-text-to-text", "text-to-audio"]
TAGS = ["foley", "video-to-audio", "sound-design", "video-text", "audio-description", "v2t-foley"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name, nothing else


def size_category(rows: int) -> str:
    """The Hub's size_categories value for `rows` rows."""
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ):
        if rows < limit:
            return label
    return "n>1T" if rows >= 10**12 else "1B<n<10B"


def public_model_name(model_key: str) -> str:
    """A model key fit for a public card: Hub ids as they are, local folders by their last name only."""
    parts = []
    for part in model_key.split("@"):
        if _HUB_ID.match(part) or re.match(r"^[\w.-]+$", part):
            parts.append(part)
        elif "://" in part:
            parts.append(redact_uri(part).rstrip("/").rsplit("/", 1)[-1] + " (remote folder)")
        else:
            parts.append(part.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] + " (local folder)")
    return " + adapter ".join(parts)


def is_tiny(models: list[str]) -> bool:
    return any("tiny-random" in m for m in models)


def render_card(
    store: DatasetStore,
    title: str = "v2t-foley foley scripts",
    markers: list[ShardMarker] | None = None,
    repo_id: str | None = None,
    published: tuple[CurationOptions, CuratedCounts] | None = None,
) -> str:
    """The card for `markers` (read once by the caller, or now). `repo_id`: the Hub repo it goes to.
    `published`: the curation options of a publish and what its rewritten files hold."""
    markers = store.markers() if markers is None else markers  # each read lists and reads every marker
    files = store.data_files(markers)
    counts = stats(markers)
    settings = store.card_settings()
    license_id = str(settings.get("license") or UNKNOWN_LICENSE)
    split_rows: dict[str, int] = {}
    for marker in markers:
        for split, n in marker.split_rows.items():
            split_rows[split] = split_rows.get(split, 0) + n
    models = [public_model_name(m) for m in counts["models"]]
    curated = _curation_counts(store, markers)
    features = FEATURES
    if published is not None:
        options, view = published
        split_rows = dict(view.split_rows)
        files = view.files
        counts |= {"rows": view.rows, "ok": view.ok, "failed": view.failed}
        curated += "; " + _published_line(options, view)
        if options.curation_column:
            from v2t_foley.foley_core.curated_view import CURATED_FEATURES

            features = CURATED_FEATURES
    tiny = is_tiny(counts["models"])
    header = {
        "pretty_name": title,
        "license": license_id,
        "language": ["en"],
        "task_categories": TASK_CATEGORIES,
        "size_categories": [size_category(counts["rows"])],
        "tags": [*TAGS, *(["synthetic-test-data"] if tiny else [])],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": paths} for split, paths in sorted(files.items())],
            }
        ],
        # features only: `datasets` ignores a `splits` list whose entries lack num_bytes (the Arrow size,
        # known only by reading every shard), with a warning at every load; rows per split are in the
        # card's text, and the Hub counts its own
        "dataset_info": {"features": features._to_yaml_list()},
    }
    if license_id == UNKNOWN_LICENSE:
        license_text = (
            "**License: unknown.** Whoever built this dataset has not stated a license yet "
            "(`foley build-dataset --license cc-by-4.0`, or any other Hub license id, sets one and the "
            "store keeps it). "
            "Until then, ask before reuse."
        )
    else:
        license_text = f"License of the scripts: `{license_id}`."
    warning = ""
    if tiny:
        warning = (
            "> [!WARNING]\n"
            "> **THE TEXT IN THIS DATASET IS MEANINGLESS.** It was written by `tiny-random`, a tiny "
            "random-weight\n> test model: the rows prove that the pipeline runs, nothing else. Do not "
            "train on it or\n> publish it as data.\n\n"
        )
    load_from = repo_id if repo_id and _HUB_ID.match(repo_id) else None
    load_line = (
        f'ds = datasets.load_dataset("{load_from}")'
        if load_from
        else f'ds = datasets.load_dataset("{_folder_name(store)}")  # run next to this folder'
    )
    split_table = "\n".join(f"| `{s}` | {n} |" for s, n in sorted(split_rows.items())) or "| none | 0 |"
    body = f"""# {title}

{warning}Multi-track foley scripts (`foley`, `fx`, `ambience`, `dialogue`) for videos, written by a
video-LLM chain of thought, one row per (video, prompt-set version, model). Made with v2t-foley,
store format {STORE_FORMAT}.

{license_text} The videos are not part of this dataset: rows name them (`video`) and keep their
sha256; each video keeps its own license.

## Contents

| split | rows |
|---|---|
{split_table}

| | |
|---|---|
| complete shards | {counts["shards"]} |
| rows | {counts["rows"]} |
| ok | {counts["ok"]} |
| failed | {counts["failed"]} |
| models | {", ".join(f"`{m}`" for m in models) or "none"} |
| prompt versions | {", ".join(f"`{v}`" for v in counts["prompt_versions"]) or "none"} |
| curation | {curated} |
| updated | {datetime.now(UTC).isoformat(timespec="seconds")} |

## How the rows were made

For each video the chain finds the audio-visual events (by default in windows measured from the
video itself: shot cuts, motion onsets, audio onsets, speech), asks the model four questions per event
(main object, action, context, every resulting sound), then writes the four-track script under a
bounded JSON Schema and validates it: cues sorted, inside the video, linked to their event. A video
that cannot be read or scripted gets a `failed` row naming why (`error`, `error_kind`). The full chain
(prompts, raw answers, frame times, measured `proposals`) is in `trace`.

## Columns

- `script`: struct of four lists of cues `{{timestamp, start, end, description, event}}` (null when
  failed); `events`: list of `{{index, start, end, summary, timing, onset, kind, reasoning}}` with
  `reasoning` = `{{main_object, action, context, sounds}}`.
- `trace`, `generation`, `timings`, `metadata`: JSON strings (free-form).
- `model_id`, `model_revision`, `adapter`, `adapter_revision`, `prompt_version`: provenance.
{_CURATION_COLUMN if published and published[0].curation_column else ""}
```python
import datasets
{load_line}
ok = ds["train"].filter(lambda row: row["status"] == "ok")
ok[0]["script"]["foley"]  # a list of dicts
```

```sql
-- DuckDB, next to this card (data/*.parquet may include files of a write in progress)
select id, len(script.foley) as foley, len(script.dialogue) as dialogue from 'data/*.parquet';
```

## Limitations

- Times come from measurements and the model's reading of a few frames; descriptions are a model's
  words, not a sound designer's. Check before use as ground truth.
- Scripts are in English. Dialogue cues describe speech; they are not transcripts.
- Only what the frames and audio show is scripted; off-screen sounds are guesses or missing.
{"- **This store was written by `tiny-random`: every description is random text.**" if tiny else ""}
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + body


def _curation_counts(store: DatasetStore, markers: list[ShardMarker]) -> str:
    """The card's curation line: rows per latest decision (`foley curate`), over the rows shown."""
    from v2t_foley.foley_core.curation import curation_counts, latest_decisions

    keys = {tuple(k[:3]) for m in markers for k in m.keys}
    decisions = {k: d for k, d in latest_decisions(store).items() if k in keys}
    if not decisions:
        return "none recorded (`foley review`, then `foley curate --apply`)"
    c = curation_counts(decisions, len(keys))
    return (
        f"{c['approved']} approved, {c['rejected']} rejected, {c['needs-fix']} needs-fix, "
        f"{c['undecided']} undecided; {c['edited']} with an edited script (in `_curation/`)"
    )


_CURATION_COLUMN = """- `curation`: a curator's latest decision
  `{decision, curator, decided_at, note, edited, chain_script}` (`undecided` when none); when
  `edited`, `script` is the curator's edit and `chain_script` the chain's own script (JSON).
"""


def _published_line(options: CurationOptions, view: CuratedCounts) -> str:
    parts = []
    if options.exclude_rejected:
        parts.append(f"published without the {view.left_out} rejected row(s)")
    if options.curation_column:
        parts.append(f"a `curation` column; {view.edited} row(s) published with the curator's script")
    return "; ".join(parts)


def _folder_name(store: DatasetStore) -> str:
    """The store's last path part: enough to load it from next to it, no more of the machine's paths."""
    return redact_uri(store.uri).rstrip("/").rsplit("/", 1)[-1] or "store"


LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")  # the Hub's ids: cc-by-4.0, apache-2.0, openrail++


def check_license_id(license_id: str) -> None:
    if not LICENSE_ID.fullmatch(license_id):
        raise InputError(
            f"--license {license_id!r} is no Hub license id; use one such as cc-by-4.0, apache-2.0, mit"
        )


def set_license(store: DatasetStore, license_id: str) -> bool:
    """Record the scripts' license for the card and rewrite the card now when it says another (a run
    that adds no rows writes no card otherwise). True when the card was rewritten. The card is written
    under the commit lease, as every card write."""
    check_license_id(license_id)
    store.update_card_settings(license=license_id)
    path = store.path("README.md")
    if not store.fs.exists(path) or _card_license(store.fs.cat_file(path).decode()) == license_id:
        return False
    with store.lease("commit", "build-dataset --license: card").hold(wait_s=120):
        store.write_card(render_card(store))
    return True


def _card_license(text: str) -> str | None:
    try:
        return (yaml.safe_load(text.split("---", 2)[1]) or {}).get("license")
    except (IndexError, yaml.YAMLError, AttributeError):
        return None
