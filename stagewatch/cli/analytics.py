"""Stage analytics commands: `stays`, `funnel`, `stuck` (read-only) and `browse` (Datasette).

Times are UTC. A stay's entry happened between `entered_after` and `entered_at`; the `±h` column
is how far the true time in stage may be from the days shown (README, "Stage analytics").
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from stagewatch import analytics
from stagewatch.analytics.stays import AnalyticsError
from stagewatch.cli.layout import Col, Layout, print_table, short, ts, ts_minutes
from stagewatch.cli.query import (
    DB_OPTION,
    Format,
    _open,
    _since,
    _write_csv,
    _write_jsonl,
)
from stagewatch.store import Store, StoreError
from stagewatch.timeutil import utcnow

INTEGRATION_OPTION = typer.Option(None, "--integration", help="Only this integration.")
JOB_OPTION = typer.Option(None, "--job", help="Only this job.")
SINCE_OPTION = typer.Option(
    None, "--since", help="Only stays entered at or after this date or time (UTC)."
)
FORMAT_OPTION = typer.Option(Format.table, "--format", help="table, jsonl or csv.")


def _fail(exc: Exception) -> None:
    typer.echo(f"Error: {exc}", err=True)
    raise typer.Exit(1) from exc


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


# The stays and stuck tables, richest first (cli.layout picks the first that fits the terminal):
# full ids and times, then short ids, then times to the minute without the year and endings
# in a word, with the stage name giving way last.
_ENDED_SHORT = {"moved_forward": "forward", "moved_backward": "backward", "moved_unknown": "moved"}


def _day_minute(timestamp: str | None) -> str:
    """`2026-01-05T09:00:00.000Z` as `01-05 09:00`."""
    return ts_minutes(timestamp)[5:]


def _stay_layouts() -> list[Layout]:
    app, app_s = Col("application", lambda r: r["application_id"]), _short_col("application")
    job, job_s = Col("job", lambda r: r["job_id"] or ""), _short_col("job")
    stage = Col("stage", _stage_cell)
    entered = Col("entered (UTC)", lambda r: ts(r["entered_at"]))
    left = Col("left (UTC)", lambda r: ts(r["left_at"]))
    entered_d = Col("entered", lambda r: _day_minute(r["entered_at"]))
    left_d = Col("left", lambda r: _day_minute(r["left_at"]))
    ended = Col("ended", lambda r: r["ended"])
    ended_s = Col("ended", lambda r: _ENDED_SHORT.get(r["ended"], r["ended"]))
    days = Col("days", lambda r: _number(r["days_in_stage"]), "right")
    hours = Col("±h", lambda r: _number(r["uncertainty_hours"], 0), "right")
    app_t, stage_t = _short_col("application", "app"), Col("stage", _stage_cell, flexible=True)
    return [
        [app, job, stage, entered, left, ended, days, hours],
        [app_s, job_s, stage, entered, left, ended, days, hours],
        [app_s, job_s, stage, entered_d, left_d, ended_s, days, hours],
        [app_t, stage_t, entered_d, left_d, ended_s, days, hours],
    ]


def _stuck_layouts() -> list[Layout]:
    integration = Col("integration", lambda r: r["integration_id"])
    integration_s = Col("integration", lambda r: short(r["integration_id"]))
    app, app_s = Col("application", lambda r: r["application_id"]), _short_col("application")
    job, job_s = Col("job", lambda r: r["job_id"] or ""), _short_col("job")
    stage = Col("stage", _stage_cell)
    entered = Col("entered (UTC)", lambda r: ts(r["entered_at"]))
    entered_d = Col("entered", lambda r: _day_minute(r["entered_at"]))
    days = Col("days", lambda r: _number(r["days_in_stage"]), "right")
    hours = Col("±h", lambda r: _number(r["uncertainty_hours"], 0), "right")
    limit = Col("threshold", lambda r: _number(r["threshold_days"], 0), "right")
    limit_s = Col("limit", limit.cell, "right")
    app_t, stage_t = _short_col("application", "app"), Col("stage", _stage_cell, flexible=True)
    return [
        [integration, app, job, stage, entered, days, hours, limit],
        [integration_s, app_s, job_s, stage, entered, days, hours, limit],
        [integration_s, app_s, stage, entered_d, days, hours, limit_s],
        [integration_s, app_t, stage_t, entered_d, days, hours, limit_s],
    ]


def _short_col(name: str, header: str | None = None) -> Col:
    return Col(header or name, lambda r: short(r[f"{name}_id"], 8))


def _stage_cell(row: Mapping[str, Any]) -> str:
    return row["stage_name"] or row["stage_id"] or "(none)"


STAY_LAYOUTS = _stay_layouts()
STUCK_LAYOUTS = _stuck_layouts()


def stays(
    db: str = DB_OPTION,
    integration: str | None = INTEGRATION_OPTION,
    job: str | None = JOB_OPTION,
    since: str | None = SINCE_OPTION,
    output: Format = FORMAT_OPTION,
) -> None:
    """Every stay of every application in a stage: entered, left, how it ended, days in it."""
    since_at = _since(since)
    with _open(db) as store:
        try:
            rows = analytics.stays(
                store._conn, as_of=utcnow(), integration_id=integration, job_id=job, since=since_at
            )
            if output is Format.jsonl:
                return _write_jsonl(rows, analytics.STAY_FIELDS)
            if output is Format.csv:
                return _write_csv(rows, analytics.STAY_FIELDS)
            rows = list(rows)
        except AnalyticsError as exc:
            _fail(exc)
    print_table(Console(), STAY_LAYOUTS, rows)


def _conversion(row: Mapping[str, Any]) -> str:
    return "" if row["conversion"] is None else f"{row['conversion']:.0%}"


def _funnel_layouts(noted: bool) -> list[Layout]:
    """Full headers, then short ones that keep a job's table within 80 columns; the note column
    only when a stage of the job has one (in the short layout, as one word)."""
    short_notes = {"index shared": "shared", "not among the job's stages": "unlisted"}
    stage = Col("stage", _stage_cell)
    head = [Col("#", lambda r: str(r["stage_order"]), "right")]
    counts = [
        ("reached", "reach", lambda r: str(r["reached"])),
        ("in now", "now", lambda r: str(r["currently_in"])),
        ("moved on", "on", lambda r: str(r["reached_later"])),
        ("conversion", "conv", _conversion),
        ("median d", "med d", lambda r: _number(r["median_days"])),
        ("p90 d", "p90 d", lambda r: _number(r["p90_days"])),
        ("back", "back", lambda r: str(r["backward_out"])),
    ]
    full = [*head, stage, *(Col(name, cell, "right") for name, _, cell in counts)]
    short = [*head, Col("stage", stage.cell, flexible=True)]
    short += [Col(abbreviated, cell, "right") for _, abbreviated, cell in counts]
    if noted:
        note = Col("note", lambda r: r["order_note"] or "")
        full.append(note)
        short.append(
            Col("note", lambda r: short_notes.get(note.cell(r), note.cell(r)), flexible=True)
        )
    return [full, short]


def _print_funnel(console: Console, rows: list[dict]) -> None:
    first = rows[0]
    print_table(
        console,
        _funnel_layouts(any(r["order_note"] for r in rows)),
        rows,
        title=f"{first['job_name'] or first['job_id']} ({first['job_id']})",
        caption=(
            f"hired {first['job_hired']}, declined {first['job_declined']}, median days to hire "
            f"{_number(first['job_median_days_to_hire']) or '-'}"
        ),
    )


def _refresh_funnels(db: str, stale: int, integration: str) -> None:
    """Rebuild the kept funnels of the jobs changed since the last read, when the store can be
    written here; else their rows are computed from the stays for this read, as the view does."""
    if not stale:
        return
    typer.echo(
        f"rebuilding the kept funnels of {stale} job(s) changed since the last read", err=True
    )
    try:
        with Store(db) as store:
            store.refresh_funnels(integration)
    except (StoreError, sqlite3.OperationalError) as exc:
        typer.echo(f"not kept ({exc}): computing them for this read", err=True)


def funnel(
    integration: str = typer.Option(..., "--integration", help="The integration."),
    db: str = DB_OPTION,
    job: str | None = JOB_OPTION,
    since: str | None = SINCE_OPTION,
    output: Format = FORMAT_OPTION,
) -> None:
    """Per job, stage by stage in index order: reached, in now, conversion, days in stage."""
    since_at = _since(since)
    with _open(db) as store:
        if since_at is None:
            _refresh_funnels(db, store.stale_funnel_jobs(integration), integration)
        try:
            rows = analytics.funnel(store._conn, integration, job_id=job, since=since_at)
        except AnalyticsError as exc:
            _fail(exc)
    if output is Format.jsonl:
        return _write_jsonl(rows, analytics.FUNNEL_FIELDS)
    if output is Format.csv:
        return _write_csv(rows, analytics.FUNNEL_FIELDS)
    if not rows:
        typer.echo(f"no stages or stays for integration {integration!r}", err=True)
        return
    console = Console()
    jobs: dict[str, list[dict]] = {}
    for row in rows:
        jobs.setdefault(row["job_id"], []).append(row)
    for job_rows in jobs.values():
        _print_funnel(console, job_rows)


def _overrides(values: list[str] | None) -> dict[str, float]:
    overrides: dict[str, float] = {}
    for value in values or []:
        stage, sep, days = value.rpartition("=")
        try:
            overrides[stage] = float(days)
        except ValueError:
            sep = ""
        if not sep or not stage:
            raise typer.BadParameter(
                f"{value!r} is not STAGE=DAYS (a stage id or name, then days)",
                param_hint="--stage",
            )
    return overrides


def stuck(
    days: float = typer.Option(..., "--days", min=0, help="Days in the current stage."),
    stage: list[str] | None = typer.Option(
        None, "--stage", help="Another threshold for one stage: STAGE=DAYS, by id or name."
    ),
    db: str = DB_OPTION,
    integration: str | None = INTEGRATION_OPTION,
    job: str | None = JOB_OPTION,
    output: Format = FORMAT_OPTION,
) -> None:
    """Applications in their current stage longer than --days (at least that long: days count
    from the observation that saw them enter)."""
    overrides = _overrides(stage)
    with _open(db) as store:
        try:
            rows = analytics.stuck(
                store._conn,
                days=days,
                as_of=utcnow(),
                integration_id=integration,
                job_id=job,
                overrides=overrides,
            )
        except AnalyticsError as exc:
            _fail(exc)
        # jsonl and csv stream while the store is open; the table lays out every row first.
        if output is Format.jsonl:
            return _write_jsonl(rows, analytics.STUCK_FIELDS)
        if output is Format.csv:
            return _write_csv(rows, analytics.STUCK_FIELDS)
        rows = list(rows)
    print_table(Console(), STUCK_LAYOUTS, rows)


def browse(
    db: str = DB_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8001, "--port", min=0, max=65535, help="Port (0: any free one)."),
    metadata_out: Path | None = typer.Option(
        None,
        "--metadata-out",
        help="Write Datasette's metadata file here and exit.",
        dir_okay=False,
    ),
) -> None:
    """Open the store in Datasette, read-only, with every table and view described and canned
    queries for stays, funnel and stuck (needs the browse extra)."""
    from stagewatch.analytics import browse as browsing
    from stagewatch.store.location import is_postgres

    if is_postgres(db):
        typer.echo(
            "Error: browse opens SQLite stores (Datasette reads files); a PostgreSQL store has the "
            "same tables and views for psql or any SQL tool",
            err=True,
        )
        raise typer.Exit(2)
    with _open(db) as store:
        metadata = browsing.metadata(store._conn, database=browsing.database_name(db))
    if metadata_out is not None:
        browsing.write_metadata(metadata, metadata_out)
        return
    try:
        argv = browsing.datasette_argv(db, metadata, host=host, port=port)
    except browsing.BrowseUnavailable as exc:
        _fail(exc)
    typer.echo(f"Datasette on http://{host}:{port}/ (read-only); Ctrl-C stops it", err=True)
    sys.exit(browsing.run(argv))


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command("stays")(stays)
    app.command("funnel")(funnel)
    app.command("stuck")(stuck)
    app.command("browse")(browse)
