"""Publish a store to a Hugging Face Hub dataset repo: its complete shards and its card, nothing else.

The token comes from the caller (the environment or a Prefect Secret block in the flow) and is never
logged or written anywhere. A dry run returns exactly the files that would be uploaded and where; the
files an earlier publish left under data/ that this one deletes are known only once the repo is read,
and the publish returns and logs them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from v2t_foley.foley_core.curated_view import CuratedView, CurationOptions
from v2t_foley.foley_core.errors import InputError
from v2t_foley.foley_core.store import DatasetStore, render_card

AS_STORED = CurationOptions()  # no curation: shard files go up as the store holds them


@dataclass(frozen=True)
class UploadItem:
    source: str  # the file's URI in the store
    path_in_repo: str  # where it lands in the dataset repo
    size_bytes: int  # in the store (a curated publish uploads a rewritten copy)
    curated: bool = False  # uploaded as `CuratedView.rewrite` makes it, not as stored


@dataclass(frozen=True)
class PublishPlan:
    repo_id: str  # org/name of the dataset repo
    endpoint: str  # the Hub (or a stand-in)
    revision: str  # branch the commit goes to
    items: list[UploadItem]  # the card first, then every live shard file
    card: bytes  # the card, rendered from the same read of the markers as the file list
    view: CuratedView | None = None  # the curation applied to the shard files, None: uploaded as stored
    # Parquet files an earlier publish left under data/ that this one does not upload (rows since
    # rejected, shards since compacted): deleted in the same commit; known only once the repo is read
    deleted: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        base = f"{self.endpoint.rstrip('/')}/datasets/{self.repo_id}/blob/{self.revision}"
        return [
            f"{item.source} -> {base}/{item.path_in_repo} ({item.size_bytes:,} bytes"
            f"{', curated copy' if item.curated else ''})"
            for item in self.items
        ] + [f"deleted {base}/{path} (not in this publish)" for path in self.deleted]


def check_repo_id(repo_id: str) -> None:
    """The Hub's own rules for a repo id (huggingface_hub's validator), as a one-line input error."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise InputError(f"--repo-id {repo_id!r}: {' '.join(str(error).split())}") from None


def plan_publish(
    store: DatasetStore,
    repo_id: str,
    endpoint: str = "https://huggingface.co",
    revision: str = "main",
    curation: CurationOptions = AS_STORED,
) -> PublishPlan:
    """The card and every live shard file, from one read of the markers (so the card lists exactly the
    files uploaded, even while shards are being added). Markers naming a file outside the store's data/
    folder are refused before anything is read (`DatasetStore.markers`). With `curation`, the shard
    files are uploaded as curated copies and the card counts what those hold."""
    check_repo_id(repo_id)
    markers = store.markers()
    if store.old_markers(markers):
        raise InputError(
            f"{store.uri} has shards of an older store format (JSON-string scripts); "
            f"run `foley migrate {store.uri}` first, then publish"
        )
    files = store.data_files(markers)
    view = CuratedView(store, curation) if curation.active else None
    published = (curation, view.count(files)) if view else None
    if published:
        files = published[1].files  # files whose every row is left out are not published
    shard_files = sorted(p for paths in files.values() for p in paths)
    card = render_card(store, markers=markers, repo_id=repo_id, published=published).encode()
    items = [UploadItem(store.url("README.md"), "README.md", len(card))]
    for relative in shard_files:
        size = int(store.fs.size(store.path(relative)))
        items.append(UploadItem(store.url(relative), relative, size, curated=view is not None))
    return PublishPlan(
        repo_id=repo_id, endpoint=endpoint, revision=revision, items=items, card=card, view=view
    )


def publish(
    store: DatasetStore,
    repo_id: str,
    token: str | None,
    *,
    endpoint: str = "https://huggingface.co",
    private: bool = True,
    revision: str = "main",
    message: str = "v2t-foley: publish dataset shards and card",
    curation: CurationOptions = AS_STORED,
) -> tuple[PublishPlan, str]:
    """Create the dataset repo if needed and commit the plan's files in one commit; return the plan (with
    the stale files it deleted) and the commit URL. The repo's data/ then holds exactly the card's files:
    a shard an earlier publish uploaded and this one leaves out (its rows since rejected, say) is
    deleted, not left for anyone who globs `data/` to read."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    plan = plan_publish(store, repo_id, endpoint, revision, curation)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    # the deletions are computed on the branch's head commit, and the commit is made on top of that
    # one only: a publish that lands in between makes this one fail, not delete what it did not see
    head = api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    uploading = {item.path_in_repo for item in plan.items}
    plan = replace(plan, deleted=tuple(sorted(_published_shards(api, repo_id, head) - uploading)))
    operations: list = [CommitOperationDelete(path_in_repo=path) for path in plan.deleted]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=plan.card))
    for item in plan.items[1:]:
        if plan.view is not None:
            content = plan.view.rewrite(item.path_in_repo)
        else:
            with store.fs.open(store.path(item.path_in_repo), "rb") as handle:
                content = handle.read()
        operations.append(CommitOperationAdd(path_in_repo=item.path_in_repo, path_or_fileobj=content))
    commit = api.create_commit(
        repo_id,
        operations,
        commit_message=message,
        repo_type="dataset",
        revision=revision,
        parent_commit=head,
    )
    return plan, commit.commit_url


def _published_shards(api, repo_id: str, revision: str | None) -> set[str]:
    """Parquet files under data/ in the repo at `revision` (none when the repo or the folder is new).
    data/ is this tool's: what else is kept there is not deleted, only Parquet files."""
    from huggingface_hub import RepoFile
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        entries = api.list_repo_tree(
            repo_id, path_in_repo="data", recursive=True, repo_type="dataset", revision=revision
        )
        return {e.path for e in entries if isinstance(e, RepoFile) and e.path.endswith(".parquet")}
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return set()
