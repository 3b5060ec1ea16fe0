"""`foley verify`: fsck for a store (no Prefect involved: it reads and repairs storage directly)."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.common import VerboseOpt, app, err, guarded, setup_logging


@app.command()
def verify(
    store: Annotated[str, typer.Argument(help="Dataset folder or s3://bucket/prefix.")],
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Remove duplicates, orphans and bad markers; rewrite the card."),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check a store: duplicate rows, unmarked or missing files, bad markers, a stale card; 0 if clean."""
    setup_logging(verbose)

    def run() -> None:
        from foley_core.store import DatasetStore
        from foley_core.store.verify import repair as repair_store
        from foley_core.store.verify import verify as verify_store

        dataset = DatasetStore(store)
        if not dataset.fs.exists(dataset.path("_shards")):
            from foley_core.errors import InputError

            raise InputError(f"{store} is not a store (no _shards/ folder)")
        report = verify_store(dataset)
        for line in report.lines():
            err.print(line, highlight=False, soft_wrap=True)
        if repair and not report.clean:
            for line in repair_store(dataset):
                err.print(f"repaired: {line}", highlight=False, soft_wrap=True)
            report = verify_store(dataset)
            for line in report.lines():
                err.print(f"still wrong: {line}", highlight=False, soft_wrap=True)
        summary = f"{store}: {report.markers} live shard(s), {report.rows} rows"
        if report.clean:
            err.print(f"{summary}: clean", highlight=False)
            return
        err.print(
            f"{summary}: {len(report.lines())} problem(s); foley verify {store} --repair", highlight=False
        )
        raise typer.Exit(1)

    guarded(run)


@app.command()
def migrate(
    store: Annotated[str, typer.Argument(help="Dataset folder or s3://bucket/prefix.")],
    verbose: VerboseOpt = False,
) -> None:
    """Rewrite shards of an older store format (JSON-string script/events) as nested columns, safely.

    One commit under the store's lease: new files first, then one marker superseding the old ones, so a
    crash leaves the old view or the new one. Stores that are not migrated still load with this version
    (`DatasetStore.load`), and the next build migrates them when it writes.
    """
    setup_logging(verbose)

    def run() -> None:
        from foley_core.errors import InputError
        from foley_core.store import DatasetStore
        from foley_core.store.commit import migrate as migrate_store
        from foley_core.store.markers import STORE_FORMAT

        dataset = DatasetStore(store)
        if not dataset.fs.exists(dataset.path("_shards")):
            raise InputError(f"{store} is not a store (no _shards/ folder)")
        marker = migrate_store(dataset)
        if marker is None:
            err.print(f"{store}: already store format {STORE_FORMAT}; nothing to do", highlight=False)
        else:
            err.print(
                f"{store}: {marker.rows} rows rewritten as store format {STORE_FORMAT} "
                f"(marker {marker.name})",
                highlight=False,
                soft_wrap=True,
            )

    guarded(run)


@app.command()
def review(
    store: Annotated[str, typer.Argument(help="Dataset folder or s3://bucket/prefix.")],
    out: Annotated[str, typer.Option("--out", help="Folder for the static site (index.html + rows/).")],
    copy_media: Annotated[
        bool,
        typer.Option("--copy-media", help="Copy the videos into <out>/media (default: reference them)."),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """A static review site for a store: every row, and per video the player over its four tracks.

    Opens from disk or any static host (no server). Videos are referenced by relative path or URL, not
    copied unless --copy-media; s3:// videos need --copy-media to play.
    """
    setup_logging(verbose)

    def run() -> None:
        from foley_core.errors import InputError
        from foley_core.review import build_review
        from foley_core.store import DatasetStore

        dataset = DatasetStore(store)
        if not dataset.fs.exists(dataset.path("_shards")):
            raise InputError(f"{store} is not a store (no _shards/ folder)")
        site = build_review(dataset, out, copy_media=copy_media)
        err.print(f"{len(site.pages)} row page(s); open {site.index}", highlight=False, soft_wrap=True)

    guarded(run)
