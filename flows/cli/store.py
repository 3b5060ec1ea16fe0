"""`foley verify`: fsck for a store (no Prefect involved: it reads and repairs storage directly)."""

from __future__ import annotations

import json
from pathlib import Path
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
        dataset.check_is_store()
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
        from v2t_foley.foley_core.store import DatasetStore
        from v2t_foley.foley_core.store.commit import migrate as migrate_store
        from v2t_foley.foley_core.store.markers import STORE_FORMAT

        dataset = DatasetStore(store)
        dataset.check_is_store()
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
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--compare",
            help="Two prompt versions (A B): also compare.html, each video's two scripts side by side.",
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """A static review site for a store: every row, and per video the player over its four tracks.

    Opens from disk or any static host (no server). Videos are referenced by relative path or URL, not
    copied unless --copy-media; s3:// videos need --copy-media to play. Each row page lets a curator
    approve, reject or mark a row needs-fix and edit its cues; decisions stay in the browser until
    exported as curation.json (then: foley curate STORE --apply curation.json).
    """
    setup_logging(verbose)

    def run() -> None:
        from v2t_foley.foley_core.errors import InputError
        from v2t_foley.foley_core.review import build_review
        from v2t_foley.foley_core.store import DatasetStore

        dataset = DatasetStore(store)
        dataset.check_is_store()
        if "://" not in out:
            from v2t_foley.foley_core.output_paths import check_out_folder

            check_out_folder(Path(out))
        try:
            site = build_review(dataset, out, copy_media=copy_media, compare=compare)
        except ValueError as error:
            raise InputError(str(error)) from None
        err.print(f"{len(site.pages)} row page(s); open {site.index}", highlight=False, soft_wrap=True)
        if compare:
            err.print(f"comparison: {Path(site.index).parent / 'compare.html'}", highlight=False)

    guarded(run)


@app.command()
def curate(
    store: Annotated[str, typer.Argument(help="Dataset folder or s3://bucket/prefix.")],
    apply: Annotated[
        Path | None,
        typer.Option("--apply", help="curation.json exported from the review page: record its decisions."),
    ] = None,
    status: Annotated[bool, typer.Option("--status", help="Summarise the recorded decisions.")] = False,
    curator: Annotated[
        str | None, typer.Option("--curator", help="Who decided, where the file does not say.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Record a curator's decisions (approved / rejected / needs-fix, edited scripts) in a store.

    Append-only: each apply adds `_curation/<time>.json`; the latest decision per row wins. A decision
    for a row the store lacks, or an edited script that does not validate, is rejected with its row and
    reason (exit 2); the other decisions are recorded all the same.
    """
    setup_logging(verbose)

    def run() -> None:
        from v2t_foley.foley_core.curation import apply_curation, curation_status
        from v2t_foley.foley_core.errors import InputError
        from v2t_foley.foley_core.store import DatasetStore, render_card

        dataset = DatasetStore(store)
        dataset.check_is_store()
        if apply is None and not status:
            raise InputError("give --apply curation.json and/or --status")
        rejected = 0
        if apply is not None:
            try:
                text = apply.read_text(encoding="utf-8")
            except OSError as error:
                raise InputError(f"{apply}: cannot read: {error.strerror or error}") from None
            try:
                result = apply_curation(dataset, text, curator=curator, source=str(apply))
            except ValueError as error:
                raise InputError(f"{apply}: {error}") from None
            for row, reason in result.rejected:
                err.print(
                    f"decision not recorded for {row}: {reason}",
                    highlight=False,
                    soft_wrap=True,
                    markup=False,
                )
            rejected = len(result.rejected)
            if result.path:
                lease = dataset.lease("commit", "foley curate: card")
                if lease.acquire(60):
                    try:
                        dataset.write_card(render_card(dataset))
                    finally:
                        lease.release()
            err.print(
                f"{len(result.recorded)} decision(s) recorded"
                + (f" in {result.path}" if result.path else "")
                + f", {rejected} rejected",
                highlight=False,
                soft_wrap=True,
            )
        if status:
            summary = curation_status(dataset)
            err.print(
                f"{summary['rows']} rows: {summary['approved']} approved, {summary['rejected']} rejected, "
                f"{summary['needs-fix']} needs-fix, {summary['undecided']} undecided; "
                f"{summary['edited']} edited; {summary['files']} curation file(s); curators: "
                f"{', '.join(summary['curators']) or 'none'}",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
            for version, counts in sorted(summary["by_prompt_version"].items()):
                line = ", ".join(f"{n} {k}" for k, n in counts.items())
                err.print(f"  prompt version {version}: {line}", highlight=False, markup=False)
            print(json.dumps(summary))
        if rejected:
            raise typer.Exit(2)

    guarded(run)
