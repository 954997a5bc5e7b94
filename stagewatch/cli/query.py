"""Read-only commands over the store: `changes`, `history`, `status`, `schema`.

None of them writes to the database or creates a file: a missing or foreign database is an error.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.table import Column, Table

from stagewatch.diff import EVENT_FIELDS, EVENT_KINDS
from stagewatch.store import Store, StoreError
from stagewatch.timeutil import format_ts, parse_ts, utcnow

EventKind = StrEnum("EventKind", {kind: kind for kind in EVENT_KINDS})

HISTORY_FIELDS = (
    "integration_id",
    "application_id",
    "job_id",
    "stage_id",
    "stage_name",
    "entered_at",
    "entered_after",
    "left_at",
    "left_by",
    "seconds_in_stage",
    "is_current",
    "sync_run_id",
    "event_id",
)

STATUS_FIELDS = (
    "integration_id",
    "last_run_id",
    "last_run_mode",
    "last_run_status",
    "last_run_started_at",
    "last_run_finished_at",
    "last_run_events",
    "last_run_error",
    "last_success_at",
    "watermark",
    "locked_by_run_id",
    "locked_by_pid",
    "locked_by_hostname",
    "lock_renewed_at",
    "lock_expires_at",
    "jobs",
    "applications",
    "deleted_applications",
    "events",
)


class Format(StrEnum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


class StatusFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"


DB_OPTION = typer.Option(
    "stagewatch.db",
    "--db",
    envvar="STAGEWATCH_DB",
    help="stagewatch database: a SQLite file or a postgresql:// URL (default: $STAGEWATCH_DB, "
    "else stagewatch.db here).",
)


def _open(db: str) -> Store:
    try:
        return Store(db, readonly=True)
    except StoreError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_ts(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not a date or time (use 2026-01-05 or 2026-01-05T09:30:00Z)",
            param_hint="--since",
        ) from exc


def _write_jsonl(rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> None:
    for row in rows:
        sys.stdout.write(json.dumps({f: row[f] for f in fields}, ensure_ascii=False) + "\n")


def _write_csv(rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow(["" if row[f] is None else row[f] for f in fields])


def _short(timestamp: str | None) -> str:
    """`2026-01-05T09:00:00.000Z` as `2026-01-05 09:00:00`: tables say UTC in their headers."""
    return timestamp[:19].replace("T", " ") if timestamp else ""


def lease_expiry(expires_at: str) -> str:
    """`lease expires <when>`, or `lease expired <when>` once that is past."""
    verb = "expired" if expires_at <= format_ts(utcnow()) else "expires"
    return f"lease {verb} {_short(expires_at)} UTC"


def _stage(name: str | None, stage_id: str | None) -> str:
    return name or stage_id or "(none)"


def describe(event: Mapping[str, Any]) -> str:
    """One line saying what changed, for people."""
    kind = event["kind"]
    if kind == "first_seen":
        outcome = f", {event['to_outcome']}" if event["to_outcome"] else ""
        return f"in {_stage(event['to_stage_name'], event['to_stage_id'])}{outcome}"
    if kind == "stage_changed":
        return (
            f"{_stage(event['from_stage_name'], event['from_stage_id'])} -> "
            f"{_stage(event['to_stage_name'], event['to_stage_id'])} ({event['direction']})"
        )
    if kind == "outcome_changed":
        reason = f" ({event['rejection_reason_name']})" if event["rejection_reason_name"] else ""
        return f"{event['from_outcome'] or '(none)'} -> {event['to_outcome'] or '(none)'}{reason}"
    if kind == "job_changed":
        return f"{event['from_job_id'] or '(none)'} -> {event['to_job_id'] or '(none)'}"
    if kind == "deleted":
        when = f" at {event['deleted_at']}" if event["deleted_at"] else ""
        return f"{event['deleted_reason']}{when}"
    return "back in the listing"


def _left(stay: Mapping[str, Any]) -> str:
    if stay["left_at"] is None:
        return "(current)"
    return _short(stay["left_at"]) + (" (deleted)" if stay["left_by"] == "deleted" else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def changes(
    db: str = DB_OPTION,
    integration: str | None = typer.Option(None, "--integration", help="Only this integration."),
    since: str | None = typer.Option(
        None, "--since", help="Only changes observed at or after this date or time (UTC)."
    ),
    kind: list[EventKind] | None = typer.Option(
        None, "--kind", help="Only this kind of change (repeatable)."
    ),
    application: str | None = typer.Option(None, "--application", help="Only this application."),
    output: Format = typer.Option(Format.table, "--format", help="table, jsonl or csv."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many changes."),
) -> None:
    """List recorded changes, oldest first."""
    since_at = _since(since)
    with _open(db) as store:
        events = store.events(
            integration_id=integration,
            since=since_at,
            kind=[k.value for k in kind] if kind else None,
            application_id=application,
            limit=limit,
        )
        if output is Format.jsonl:
            _write_jsonl(events, EVENT_FIELDS)
        elif output is Format.csv:
            _write_csv(events, EVENT_FIELDS)
        else:
            table = Table(
                "observed (UTC)",
                _ids("integration"),
                _ids("application"),
                "kind",
                "change",
                _ids("job"),
            )
            for event in events:
                table.add_row(
                    _short(event["observed_at"]),
                    event["integration_id"],
                    event["application_id"],
                    event["kind"],
                    describe(event),
                    event["job_id"] or "",
                )
            Console().print(table)


def history(
    application_id: str = typer.Argument(..., help="Kombo application id."),
    db: str = DB_OPTION,
    integration: str | None = typer.Option(None, "--integration", help="Only this integration."),
    output: Format = typer.Option(Format.table, "--format", help="table, jsonl or csv."),
) -> None:
    """One application's stage timeline: each stay with when it was entered and left."""
    with _open(db) as store:
        stays = store.history(application_id, integration_id=integration)
    if not stays:
        typer.echo(f"Error: no stage history for application {application_id!r}", err=True)
        raise typer.Exit(1)
    if output is Format.jsonl:
        _write_jsonl(stays, HISTORY_FIELDS)
    elif output is Format.csv:
        _write_csv(stays, HISTORY_FIELDS)
    else:
        table = Table(
            _ids("integration"),
            "stage",
            "entered (UTC)",
            "left (UTC)",
            "time in stage",
            _ids("job"),
        )
        for stay in stays:
            table.add_row(
                stay["integration_id"],
                _stage(stay["stage_name"], stay["stage_id"]),
                _short(stay["entered_at"]),
                _left(stay),
                _duration(stay["seconds_in_stage"]),
                stay["job_id"] or "",
            )
        Console().print(table)


def _ids(header: str) -> Column:
    """A column of ids: folded onto more lines when narrow, never cut, so they can be copied."""
    return Column(header, overflow="fold")


def status(
    db: str = DB_OPTION,
    output: StatusFormat = typer.Option(StatusFormat.table, "--format", help="table or jsonl."),
) -> None:
    """Per integration: the last run and how it ended, the watermark, and what is stored."""
    with _open(db) as store:
        rows = store.status()
    if output is StatusFormat.jsonl:
        _write_jsonl(rows, STATUS_FIELDS)
        return
    table = Table(
        _ids("integration"),
        "last run",
        "status",
        "finished (UTC)",
        "watermark (UTC)",
        "applications",
        "events",
    )
    notes = []
    for row in rows:
        deleted = row["deleted_applications"]
        status = row["last_run_status"]
        if row["last_run_error"]:
            notes.append(f"{row['integration_id']}: {row['last_run_error']}")
            status += f" [{len(notes)}]"
        if row["locked_by_run_id"] is not None:
            notes.append(_lock_note(row))
            status += f" [{len(notes)}]"
        table.add_row(
            row["integration_id"],
            f"{row['last_run_id']} ({row['last_run_mode']})",
            status,
            _short(row["last_run_finished_at"]),
            _short(row["watermark"]),
            f"{row['applications']}" + (f" (+{deleted} deleted)" if deleted else ""),
            str(row["events"]),
        )
    console = Console()
    console.print(table)
    # A long Kombo message in a cell would wrap the table into a column of words.
    for number, note in enumerate(notes, start=1):
        console.print(f"[{number}] {note}", markup=False, highlight=False)


def _lock_note(row: dict[str, Any]) -> str:
    return (
        f"{row['integration_id']}: locked by run {row['locked_by_run_id']} "
        f"(pid {row['locked_by_pid']} on {row['locked_by_hostname']}), "
        f"{lease_expiry(row['lock_expires_at'])}, renewed {_short(row['lock_renewed_at'])}"
    )


def schema(
    db: str = DB_OPTION,
    markdown: bool = typer.Option(False, "--markdown", help="Markdown instead of SQL."),
) -> None:
    """Print the database's live schema."""
    with _open(db) as store:
        text = store.schema_markdown() if markdown else store.schema_sql()
    sys.stdout.write(text)


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("changes")(changes)
    app.command("history")(history)
    app.command("status")(status)
    app.command("schema")(schema)
