"""`stagewatch migrate-store`: copy a whole store to another database, SQLite or PostgreSQL."""

from __future__ import annotations

import typer

from stagewatch.store import Store, StoreError
from stagewatch.store.transfer import copy_store


def migrate_store(
    source: str = typer.Option(
        ..., "--from", help="The store to copy: a SQLite file or a postgresql:// URL."
    ),
    target: str = typer.Option(
        ..., "--to", help="A new store to copy it into (created), e.g. postgresql://host/db."
    ),
) -> None:
    """Copy runs, watermarks, snapshots, the change log and quarantine, ids and event keys
    unchanged, in one transaction that commits only when every table reads back with the same
    row count and digest. The source is only read; the target must hold no runs yet."""
    try:
        with Store(source, readonly=True) as old, Store(target) as new:
            copied = copy_store(old, new)
            shown = (old.path, new.path)
    except StoreError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    for table in copied:
        typer.echo(f"{table.table:<14} {table.rows:>10} rows  digest {table.digest}")
    typer.echo(f"Copied {shown[0]} to {shown[1]}: row counts and digests match.")


def register(app: typer.Typer) -> None:
    """Add `migrate-store` to the app."""
    app.command("migrate-store")(migrate_store)
