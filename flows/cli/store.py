"""`foley verify`: fsck for a store (no Prefect involved: it reads and repairs storage directly)."""

from __future__ import annotations

from typing import Annotated

import typer

from v2t_foley.flows.cli.common import VerboseOpt, app, err, guarded, setup_logging


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
        from v2t_foley.foley_core.store import DatasetStore
        from v2t_foley.foley_core.store.verify import repair as repair_store
        from v2t_foley.foley_core.store.verify import verify as verify_store

        dataset = DatasetStore(store)
        if not dataset.fs.exists(dataset.path("_shards")):
            from v2t_foley.foley_core.errors import InputError

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
