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

from stagewatch.cli.layout import Col, Layout, print_table, short, ts, ts_minutes
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
    "last_checked_at",
    "last_check_result",
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


def lease_expiry(expires_at: str) -> str:
    """`lease expires <when>`, or `lease expired <when>` once that is past."""
    verb = "expired" if expires_at <= format_ts(utcnow()) else "expires"
    return f"lease {verb} {ts(expires_at)} UTC"


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


def describe_briefly(event: Mapping[str, Any]) -> str:
    """`describe` with the kind folded in, for narrow tables without a kind column."""
    kind = event["kind"]
    if kind == "first_seen":
        return f"new in {_stage(event['to_stage_name'], event['to_stage_id'])}"
    if kind == "stage_changed":
        direction = f" ({event['direction']})" if event["direction"] != "forward" else ""
        return (
            f"{_stage(event['from_stage_name'], event['from_stage_id'])} -> "
            f"{_stage(event['to_stage_name'], event['to_stage_id'])}{direction}"
        )
    if kind == "outcome_changed":
        reason = f" ({event['rejection_reason_name']})" if event["rejection_reason_name"] else ""
        return f"{(event['to_outcome'] or '(none)').lower()}{reason}"
    if kind == "job_changed":
        return f"job {short(event['from_job_id'], 8)} -> {short(event['to_job_id'], 8)}"
    if kind == "deleted":
        return f"deleted ({(event['deleted_reason'] or '').replace('_', ' ')})"
    return "restored"


def _left(stay: Mapping[str, Any], when=ts) -> str:
    if stay["left_at"] is None:
        return "(current)"
    return when(stay["left_at"]) + (" (deleted)" if stay["left_by"] == "deleted" else "")


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
            print_table(Console(), CHANGES_LAYOUTS, list(events))


def _changes_layouts() -> list[Layout]:
    """Richest first: full ids and seconds; then short integration and job ids; then without
    the integration and job; then kind and change as one short column; then a short
    application id."""
    observed = Col("observed (UTC)", lambda e: ts(e["observed_at"]))
    observed_m = Col("observed (UTC)", lambda e: ts_minutes(e["observed_at"]))
    integration = Col("integration", lambda e: e["integration_id"])
    integration_s = Col("integration", lambda e: short(e["integration_id"]))
    application = Col("application", lambda e: e["application_id"])
    application_s = Col("application", lambda e: short(e["application_id"], 8))
    kind = Col("kind", lambda e: e["kind"])
    change = Col("change", describe, flexible=True)
    brief = Col("change", describe_briefly, flexible=True)
    job = Col("job", lambda e: e["job_id"] or "")
    job_s = Col("job", lambda e: short(e["job_id"], 8))
    return [
        [observed, integration, application, kind, change, job],
        [observed, integration_s, application, kind, change, job_s],
        [observed_m, integration_s, application, kind, change],
        [observed_m, application, kind, change],
        [observed_m, application, brief],
        [observed_m, application_s, brief],
    ]


CHANGES_LAYOUTS = _changes_layouts()


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
        print_table(Console(), HISTORY_LAYOUTS, stays)


def _history_layouts() -> list[Layout]:
    integration = Col("integration", lambda s: s["integration_id"])
    integration_s = Col("integration", lambda s: short(s["integration_id"]))
    stage = Col("stage", lambda s: _stage(s["stage_name"], s["stage_id"]))
    entered = Col("entered (UTC)", lambda s: ts(s["entered_at"]))
    entered_m = Col("entered (UTC)", lambda s: ts_minutes(s["entered_at"]))
    left = Col("left (UTC)", lambda s: _left(s, ts))
    left_m = Col("left (UTC)", lambda s: _left(s, ts_minutes))
    spent = Col("time in stage", lambda s: _duration(s["seconds_in_stage"]), justify="right")
    job = Col("job", lambda s: s["job_id"] or "")
    job_s = Col("job", lambda s: short(s["job_id"], 8))
    return [
        [integration, stage, entered, left, spent, job],
        [integration_s, stage, entered, left, spent, job_s],
        [stage, entered_m, left_m, spent, job_s],
        [stage, entered_m, left_m, spent],
    ]


HISTORY_LAYOUTS = _history_layouts()


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
    console = Console()
    notes: list[str] = []
    shown = [_status_row(row, notes) for row in rows]
    synced = [row for row in shown if row["last_success_at"] is not None]
    never = [row for row in shown if row["last_success_at"] is None]
    if synced or not never:
        checked = any(row["last_checked_at"] for row in synced)
        print_table(console, CHECKED_STATUS_LAYOUTS if checked else STATUS_LAYOUTS, synced)
    if never:
        console.print(
            "Never synced (a mistyped id, or not set up yet):", markup=False, highlight=False
        )
        print_table(console, NEVER_SYNCED_LAYOUTS, never)
    # A long Kombo message in a cell would wrap the table into a column of words.
    for number, note in enumerate(notes, start=1):
        console.print(f"[{number}] {note}", markup=False, highlight=False)


def _status_row(row: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The row with its status cell, numbering its error and lock notes into `notes`."""
    status = row["last_run_status"]
    if row["last_run_error"]:
        notes.append(f"{row['integration_id']}: {row['last_run_error']}")
        status += f" [{len(notes)}]"
    if row["locked_by_run_id"] is not None:
        notes.append(_lock_note(row))
        status += f" [{len(notes)}]"
    deleted = row["deleted_applications"]
    return row | {
        "status_cell": status,
        "run_cell": f"{row['last_run_id']} ({row['last_run_mode']})",
        "applications_cell": f"{row['applications']}"
        + (f" (+{deleted} deleted)" if deleted else ""),
    }


def _checked_cell(row: dict[str, Any]) -> str:
    if row["last_checked_at"] is None:
        return "-"
    return f"{ts_minutes(row['last_checked_at'])} ({row['last_check_result']})"


def _status_layouts() -> tuple[list[Layout], list[Layout], list[Layout]]:
    integration = Col("integration", lambda r: r["integration_id"])
    integration_s = Col("integration", lambda r: short(r["integration_id"]))
    run = Col("last run", lambda r: r["run_cell"])
    status = Col("status", lambda r: r["status_cell"])
    finished = Col("finished (UTC)", lambda r: ts(r["last_run_finished_at"]))
    finished_m = Col("finished (UTC)", lambda r: ts_minutes(r["last_run_finished_at"]))
    # An idle integration is checked, not synced: when its last check ran, and what it found.
    checked = Col("checked (UTC)", lambda r: _checked_cell(r))
    watermark = Col("watermark (UTC)", lambda r: ts(r["watermark"]))
    watermark_m = Col("watermark (UTC)", lambda r: ts_minutes(r["watermark"]))
    applications = Col("applications", lambda r: r["applications_cell"], justify="right")
    events = Col("events", lambda r: str(r["events"]), justify="right")
    synced = [
        [integration, run, status, finished, watermark, applications, events],
        [integration_s, run, status, finished, watermark, applications, events],
        [integration_s, run, status, finished_m, watermark_m, applications, events],
        [integration_s, status, finished_m, watermark_m, applications, events],
        [integration_s, status, finished_m, applications, events],
    ]
    # Once the fan-out checks (idle integrations get no run), the last check says more than the
    # watermark: at narrower widths it stays and the watermark goes.
    with_checks = [
        [integration, run, status, finished, checked, watermark, applications, events],
        [integration_s, run, status, finished_m, checked, watermark_m, applications, events],
        [integration_s, run, status, finished_m, checked, applications, events],
        [integration_s, status, finished_m, checked, applications, events],
        [integration_s, status, checked, applications, events],
        [integration_s, status, checked, applications],
    ]
    never = [
        [integration, run, status, finished],
        [integration_s, run, status, finished_m],
    ]
    return synced, with_checks, never


STATUS_LAYOUTS, CHECKED_STATUS_LAYOUTS, NEVER_SYNCED_LAYOUTS = _status_layouts()


def _lock_note(row: dict[str, Any]) -> str:
    return (
        f"{row['integration_id']}: locked by run {row['locked_by_run_id']} "
        f"(pid {row['locked_by_pid']} on {row['locked_by_hostname']}), "
        f"{lease_expiry(row['lock_expires_at'])}, renewed {ts(row['lock_renewed_at'])}"
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
