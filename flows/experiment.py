"""`experiment`: the same videos through several prompt sets, one build-dataset subflow each, then one
comparison report (Markdown + JSON + plots, and a Prefect Markdown artifact).

    foley experiment --manifest videos.csv --store ./store --prompts prompts-a --prompts prompts-b

Every build writes into the same store; rows are keyed by prompt version, so each set's rows sit next
to the others' and a rerun skips what is done. The report (foley_core/experiment.py) compares the
versions on the manifest's videos: per-version statistics and cost, agreement of each later version
with the first (A), and scores against references when `ref` is given. `foley review STORE --compare
A B` shows two versions of each video side by side; `foley train --prompt-version V` trains on one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger

from v2t_foley.flows.build_dataset import build_dataset
from v2t_foley.flows.core_logs import logged_flow
from v2t_foley.foley_core.backends import BackendSpec
from v2t_foley.foley_core.backends.base import DEFAULT_MODEL
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.manifest import read_manifest
from v2t_foley.foley_core.store import DatasetStore

log = logging.getLogger(__name__)


@logged_flow(name="experiment")
def experiment(
    manifest: str,
    store: str,
    prompts_dirs: list[str],
    out: str = "foley-experiment",
    ref: str | None = None,
    model: str = DEFAULT_MODEL,
    backend: str = "transformers",
    base_url: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    timing: str = "measured",
    similarity: bool = True,
    wait_for_store_s: float = 0.0,
    allow_roots: list[str] | None = None,
) -> dict:
    """Build `manifest` into `store` once per prompt folder, then write the comparison report to `out`."""
    from v2t_foley.foley_core.experiment import compare_versions, report_markdown, write_report

    logger = get_run_logger()
    if len(prompts_dirs) < 2:
        raise InputError("an experiment compares at least two prompt folders (--prompts A --prompts B)")
    references = None
    if ref:
        from v2t_foley.foley_core.evaluation import load_references

        references = load_references(ref)  # a bad folder fails before any build
    versions: list[str] = []
    labels: dict[str, str] = {}
    for folder in prompts_dirs:
        summary = build_dataset(
            manifest=manifest,
            store=store,
            model=model,
            backend=backend,
            base_url=base_url,
            device=device,
            batch_size=batch_size,
            prompts_dir=folder,
            limit=limit,
            timing=timing,
            wait_for_store_s=wait_for_store_s,
            allow_roots=allow_roots,
        )
        if summary.busy:
            raise InputError(f"store {store} is busy ({summary.busy}); run the experiment again later")
        name = Path(folder).name or folder
        if summary.prompt_version in versions:
            logger.warning(
                "%s has the same templates as %s: one version", folder, labels[summary.prompt_version]
            )
            continue
        versions.append(summary.prompt_version)
        labels[summary.prompt_version] = name
        logger.info("prompts %s: version %s, %d new rows", folder, summary.prompt_version, summary.new_rows)
    if len(versions) < 2:
        raise InputError("the prompt folders are identical: nothing to compare")
    entries = read_manifest(manifest)
    ids = [e.id for e in entries][: limit if limit is not None else None]
    model_key = BackendSpec(backend=backend, model=model, base_url=base_url).model_key
    rows = [r for r in DatasetStore(store).read_rows() if not r["adapter"] and r["model_id"] == model_key]
    scorer = None
    if similarity:
        from v2t_foley.foley_core.metrics import EmbeddingSimilarity

        scorer = EmbeddingSimilarity()
    report = compare_versions(
        rows, versions, ids=ids, references=references, similarity=scorer, labels=labels
    )
    report["store"] = store
    report["model"] = model_key
    report["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    paths = write_report(report, out)
    markdown = report_markdown(report)
    try:
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key="foley-experiment", markdown=markdown, description="prompt experiment")
    except Exception as error:  # pragma: no cover - an artifact is a view, never a reason to fail
        log.debug("experiment artifact not published: %s", error)
    return {"versions": versions, "labels": labels, "paths": {k: str(v) for k, v in paths.items()}}
