"""`publish-dataset`: push a store's complete shards and its card to a Hugging Face Hub dataset repo.

    foley publish --store ./foley-store --repo-id my-org/foley-scripts --dry-run
    prefect deployment run 'publish-dataset/hub' --param store=s3://b/ds --param repo_id=my-org/foley

The token comes from `HF_TOKEN` or from a Prefect Secret block (`token_secret`); it is never logged.
"""

from __future__ import annotations

import os

from prefect import get_run_logger

from v2t_foley.flows.core_logs import logged_flow
from v2t_foley.foley_core.curated_view import CurationOptions
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.publish import plan_publish, publish
from v2t_foley.foley_core.store import DatasetStore


def resolve_token(token_secret: str | None) -> str | None:
    if token_secret:
        from prefect.blocks.system import Secret

        return Secret.load(token_secret).get()
    return os.environ.get("HF_TOKEN")


@logged_flow(name="publish-dataset")
def publish_dataset(
    store: str,
    repo_id: str,
    dry_run: bool = False,
    private: bool = True,
    token_secret: str | None = None,
    endpoint: str | None = None,
    revision: str = "main",
    curation_column: bool = False,
    exclude_rejected: bool = False,
) -> dict:
    """Upload (or, with dry_run, list) what the dataset repo `repo_id` would receive from `store`.
    `curation_column` / `exclude_rejected`: publish curated copies of the shards (foley_core.curated_view)."""
    logger = get_run_logger()
    dataset = DatasetStore(store)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not dataset.data_files():
        raise InputError(f"{store}: no complete shard to publish")
    curation = CurationOptions(curation_column=curation_column, exclude_rejected=exclude_rejected)
    if dry_run:
        plan = plan_publish(dataset, repo_id, endpoint, revision, curation)
        for line in plan.lines():
            logger.info("would upload %s", line)
        return {"dry_run": True, "files": plan.lines()}
    token = resolve_token(token_secret)
    if not token:
        raise InputError("no Hub token: set HF_TOKEN or pass --token-secret <Prefect Secret block name>")
    plan, commit_url = publish(
        dataset, repo_id, token, endpoint=endpoint, private=private, revision=revision, curation=curation
    )
    logger.info("published %d file(s) to %s: %s", len(plan.items), repo_id, commit_url)
    for path in plan.deleted:
        logger.info("deleted %s from %s: an earlier publish's file that this one leaves out", path, repo_id)
    return {"dry_run": False, "files": plan.lines(), "commit": commit_url}
