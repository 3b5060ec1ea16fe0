"""Publish a store to a Hugging Face Hub dataset repo: its complete shards and its card, nothing else.

The token comes from the caller (the environment or a Prefect Secret block in the flow) and is never
logged or written anywhere. A dry run returns exactly the files that would be uploaded and where.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2t_foley.foley_core.store import DatasetStore, render_card


@dataclass(frozen=True)
class UploadItem:
    source: str  # the file's URI in the store
    path_in_repo: str  # where it lands in the dataset repo
    size_bytes: int


@dataclass(frozen=True)
class PublishPlan:
    repo_id: str  # org/name of the dataset repo
    endpoint: str  # the Hub (or a stand-in)
    revision: str  # branch the commit goes to
    items: list[UploadItem]  # the card first, then every live shard file
    card: bytes  # the card, rendered from the same read of the markers as the file list

    def lines(self) -> list[str]:
        base = f"{self.endpoint.rstrip('/')}/datasets/{self.repo_id}/blob/{self.revision}"
        return [
            f"{item.source} -> {base}/{item.path_in_repo} ({item.size_bytes:,} bytes)" for item in self.items
        ]


def plan_publish(
    store: DatasetStore, repo_id: str, endpoint: str = "https://huggingface.co", revision: str = "main"
) -> PublishPlan:
    """The card and every live shard file, from one read of the markers (so the card lists exactly the
    files uploaded, even while shards are being added). Markers naming a file outside the store's data/
    folder are refused before anything is read (`DatasetStore.markers`)."""
    markers = store.markers()
    card = render_card(store, markers=markers).encode()
    items = [UploadItem(store.url("README.md"), "README.md", len(card))]
    for relative in sorted(p for paths in store.data_files(markers).values() for p in paths):
        items.append(UploadItem(store.url(relative), relative, int(store.fs.size(store.path(relative)))))
    return PublishPlan(repo_id=repo_id, endpoint=endpoint, revision=revision, items=items, card=card)


def publish(
    store: DatasetStore,
    repo_id: str,
    token: str | None,
    *,
    endpoint: str = "https://huggingface.co",
    private: bool = True,
    revision: str = "main",
    message: str = "v2t-foley: publish dataset shards and card",
) -> tuple[PublishPlan, str]:
    """Create the dataset repo if needed and commit the plan's files in one commit; return the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    plan = plan_publish(store, repo_id, endpoint, revision)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=plan.card)]
    for item in plan.items[1:]:
        with store.fs.open(store.path(item.path_in_repo), "rb") as handle:
            operations.append(
                CommitOperationAdd(path_in_repo=item.path_in_repo, path_or_fileobj=handle.read())
            )
    commit = api.create_commit(
        repo_id, operations, commit_message=message, repo_type="dataset", revision=revision
    )
    return plan, commit.commit_url
