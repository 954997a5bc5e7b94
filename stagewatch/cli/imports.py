"""`stagewatch import`: make applications Kombo did not create tracked, from a file of ATS ids.

Runs in this process, without Prefect: the `import-tracked-applications` flow does the same for a
deployment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from stagewatch.errors import StagewatchError
from stagewatch.importer import (
    OK_STATUSES,
    Importer,
    RowResult,
    counts,
    read_rows,
    tool_of,
    write_results,
)
from stagewatch.kombo.client import KomboClient
from stagewatch.kombo.imports import TRACKED_AT_PATTERN
from stagewatch.settings import Settings, resolve_api_key
from stagewatch.store import Store
from stagewatch.store.location import is_postgres


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _client(integration_id: str, base_url: str | None) -> KomboClient:
    settings = Settings()
    return KomboClient(
        resolve_api_key(settings),
        integration_id,
        base_url=base_url or settings.kombo_base_url,
        region=settings.kombo_region,
        timeout=settings.stagewatch_timeout,
        retry=settings.retry_policy(),
    )


def _run_with_progress(importer: Importer, rows: list, label: str) -> list[RowResult]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(label, total=len(rows), last="")

        def advance(result: RowResult) -> None:
            progress.update(task, advance=1, last=f"line {result.line}: {result.status}")

        return importer.run(rows, on_row=advance)


def _summary(results: list[RowResult], results_path: Path | None, dry_run: bool) -> None:
    by_status = counts(results)
    head = "dry run, nothing sent: " if dry_run else ""
    typer.echo(head + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in by_status.items()))
    for result in results:
        if result.status not in OK_STATUSES:
            typer.echo(f"line {result.line}: {result.status}: {result.message}", err=True)
    if by_status.get("unknown"):
        typer.echo(
            f"{by_status['unknown']} row(s) unknown: the request may have reached Kombo; they are "
            "not re-sent by a plain re-run (see --retry-unknown)",
            err=True,
        )
    if results_path is not None:
        typer.echo(f"results: {results_path}")


def import_command(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="CSV or JSONL of ATS ids."
    ),
    integration_id: str = typer.Option(
        ..., "--integration", "--integration-id", "-i", help="Kombo integration id."
    ),
    tool: str | None = typer.Option(
        None, "--tool", help="The ATS (default: the integration id's prefix, e.g. greenhouse)."
    ),
    tracked_at: str | None = typer.Option(
        None,
        "--tracked-at",
        help="tracked_at for rows without a tracked_at column (YYYY-MM-DDTHH:MM:SS.sssZ); "
        "default null (Kombo's choice).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check every row and print what would be sent; send nothing."
    ),
    retry_unknown: bool = typer.Option(
        False, "--retry-unknown", help="Send again rows whose earlier outcome is unknown."
    ),
    results: Path | None = typer.Option(
        None, "--results", help="Results file (.jsonl, or .csv); default FILE.results.jsonl."
    ),
    base_url: str | None = typer.Option(None, envvar="KOMBO_BASE_URL", help="Kombo base URL."),
    db: str = typer.Option(
        "stagewatch.db", envvar="STAGEWATCH_DB", help="SQLite file or postgresql:// URL."
    ),
) -> None:
    """Ask Kombo to track existing ATS applications (POST /ats/import-tracked-application).

    Exit code 0 when every row is imported, already tracked or skipped (or, in a dry run, valid).
    """
    if tracked_at is not None and not TRACKED_AT_PATTERN.match(tracked_at):
        raise _fail(f"--tracked-at must look like YYYY-MM-DDTHH:MM:SS.sssZ, got {tracked_at!r}", 2)
    try:
        ats = (tool or tool_of(integration_id)).lower()
        rows = read_rows(file)
    except StagewatchError as exc:
        raise _fail(str(exc), 2) from None
    results_path = results or file.with_name(file.name + ".results.jsonl")
    try:
        if dry_run:
            done = _dry_run(integration_id, ats, rows, tracked_at, db)
        else:
            done = _send(integration_id, ats, rows, tracked_at, retry_unknown, base_url, db)
    except StagewatchError as exc:
        raise _fail(str(exc)) from None
    try:
        write_results(results_path, done)
    except OSError as exc:
        _summary(done, None, dry_run)
        raise _fail(
            f"cannot write the results to {results_path} ({exc.strerror}); the store's import "
            "ledger holds what was sent"
        ) from None
    _summary(done, results_path, dry_run)
    raise typer.Exit(0 if all(r.status in OK_STATUSES for r in done) else 1)


def _dry_run(
    integration_id: str, tool: str, rows: list, tracked_at: str | None, db: str
) -> list[RowResult]:
    """Validate every row and print each body that would be sent; no request, no write. The
    ledger of an existing store says which rows a real run would skip."""
    store = Store(db, readonly=True) if is_postgres(db) or Path(db).is_file() else None
    try:
        ledger = store.import_ledger() if store else None
        importer = Importer(integration_id, tool, None, ledger, tracked_at)
        done = importer.run(rows)
    finally:
        if store:
            store.close()
    for result in done:
        if result.body is not None:
            sys.stdout.write(json.dumps(result.body, ensure_ascii=False) + "\n")
    return done


def _send(
    integration_id: str,
    tool: str,
    rows: list,
    tracked_at: str | None,
    retry_unknown: bool,
    base_url: str | None,
    db: str,
) -> list[RowResult]:
    with _client(integration_id, base_url) as client, Store(db) as store:
        importer = Importer(
            integration_id, tool, client, store.import_ledger(), tracked_at, retry_unknown
        )
        return _run_with_progress(importer, rows, f"importing into {integration_id}")


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
