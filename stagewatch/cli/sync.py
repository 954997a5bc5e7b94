"""`stagewatch sync` and `serve`: the Prefect flows from the command line.

Prefect is imported inside the commands, after the environment is set, so `stagewatch --help` stays
fast and the demo can point Prefect at a project-local home before Prefect reads its settings.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import typer
from pydantic import ValidationError

from stagewatch import report
from stagewatch.errors import StagewatchError

IDS_ENV = "STAGEWATCH_INTEGRATION_IDS"
SINCE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"]


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def simulator_integrations(base_url: str | None) -> list[str]:
    """Every integration of the simulator at `base_url` (its loopback-only control endpoint).

    Kombo itself has no endpoint listing the integrations a key can see, so against Kombo the
    integrations must be named.
    """
    if not base_url or not _is_loopback(base_url):
        raise _fail(
            "name at least one --integration-id (or set STAGEWATCH_INTEGRATION_IDS): Kombo has "
            "no endpoint that lists a key's integrations; only the simulator's loopback "
            "--base-url can default to all of its integrations",
            2,
        )
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/_sim/integrations", timeout=10)
        response.raise_for_status()
        return [item["id"] for item in response.json()["integrations"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise _fail(
            f"{base_url} did not list its integrations ({type(exc).__name__}); is it the "
            "stagewatch simulator? Otherwise name them with --integration-id",
            2,
        ) from None


def quiet_prefect_console(verbose: bool) -> None:
    """Prefect's console logs (task tracebacks included) only with --verbose; the server still
    receives every log, the client's retry notes included, and the command prints one line per
    failure itself."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "stagewatch")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def run_sync(params: Any) -> tuple[bool, list[dict[str, Any]], str | None]:
    """Run `sync_many`; returns (every integration fine, outcomes, error that stopped the flow)."""
    from flows.sync import sync_many

    state = sync_many(params, return_state=True)
    if state.is_completed():
        return True, state.result(), None
    error = state.result(raise_on_failure=False)
    outcomes = getattr(error, "outcomes", None)
    if outcomes is not None:
        return False, outcomes, None
    return False, [], str(error) if isinstance(error, BaseException) else state.message


def failure_lines(outcomes: list[dict[str, Any]]) -> list[str]:
    """One line per failure; a cause shared by every failed integration (a bad key) is one line."""
    failed = [o for o in outcomes if o["status"] == "failed"]
    codes = {o.get("error_code") for o in failed}
    if len(failed) > 1 and len(codes) == 1 and None not in codes:
        return [f"{failed[0]['message']} (all {len(failed)} failed integrations)"]
    return [f"{o['integration_id']}: {o['message']}" for o in failed]


def print_outcomes(outcomes: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="stagewatch sync", title_justify="left")
    table.add_column("integration", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("changes", "hired", "declined", "stage moves"):
        table.add_column(column, justify="right")
    table.add_column("requests", justify="right")
    table.add_column("seconds", justify="right")
    for o in outcomes:
        counts = o.get("counts") or {}
        table.add_row(
            o["integration_id"],
            report.STATUS_LABELS[o["status"]],
            str(sum(counts.values())),
            str(counts.get("hired", 0)),
            str(counts.get("declined", 0)),
            str(counts.get("stage moved", 0)),
            str(o.get("requests", 0)),
            f"{o.get('duration_seconds', 0.0):.1f}",
        )
    # Piped output gets a wide line rather than integration ids broken across rows.
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def sync(
    integration_ids: list[str] = typer.Option(
        None,
        "--integration-id",
        "--integration",
        "-i",
        help=(
            "Kombo integration id; repeat for several (or set STAGEWATCH_INTEGRATION_IDS, "
            "comma-separated). Default, only against the simulator: all of its integrations."
        ),
        show_default=False,
    ),
    base_url: str | None = typer.Option(
        None,
        envvar="KOMBO_BASE_URL",
        help="Kombo API base URL (default: the KOMBO_REGION's), e.g. the simulator's.",
    ),
    db: str = typer.Option(
        "stagewatch.db", envvar="STAGEWATCH_DB", help="SQLite file or postgresql:// URL."
    ),
    full: bool = typer.Option(
        False, "--full", help="List every application, inferring deletions (same as --mode full)."
    ),
    mode: str = typer.Option("incremental", "--mode", help="incremental or full."),
    overlap: int = typer.Option(
        10, "--overlap", min=0, max=24 * 60, help="Minutes re-listed before the last run."
    ),
    page_size: int = typer.Option(250, "--page-size", min=1, max=250, help="Records per request."),
    since: datetime | None = typer.Option(
        None, "--since", formats=SINCE_FORMATS, help="List changes after this UTC time instead."
    ),
    max_concurrency: int = typer.Option(
        4, "--max-concurrency", min=1, max=16, help="Integrations synced at once."
    ),
    show_candidate_names: bool = typer.Option(
        False, "--show-candidate-names", help="Allow candidate names in artifacts and events."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line instead of a table."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's own logs."),
) -> None:
    """Sync integrations through the Prefect flow (ephemeral Prefect unless PREFECT_API_URL is
    set). Exit code 0 when every integration synced or was reported not ready / unsupported."""
    ids = list(integration_ids or []) or [
        part for part in os.environ.get(IDS_ENV, "").replace(",", " ").split() if part
    ]
    if not ids:
        ids = simulator_integrations(base_url)
    if full:
        mode = "full"
    quiet_prefect_console(verbose)
    from flows.sync import SyncManyParams

    try:
        params = SyncManyParams(
            integration_ids=ids,
            mode=mode,
            overlap_minutes=overlap,
            page_size=page_size,
            since=since.replace(tzinfo=UTC) if since and since.tzinfo is None else since,
            show_candidate_names=show_candidate_names,
            base_url=base_url,
            db=str(db),
            max_concurrency=max_concurrency,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(f"invalid {where}: {first['msg']}", 2) from None
    started = time.monotonic()
    try:
        ok, outcomes, error = run_sync(params)
    except StagewatchError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(
            json.dumps(
                {"ok": ok, "seconds": round(time.monotonic() - started, 3), "error": error}
                | {"integrations": outcomes}
            )
        )
    else:
        print_outcomes(outcomes)
    if error:
        raise _fail(error)
    for line in failure_lines(outcomes):
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(0 if ok else 1)


def serve(
    integration_ids: list[str] = typer.Option(
        None, "--integration-id", "-i", help="Integrations the deployments sync; repeatable."
    ),
    base_url: str | None = typer.Option(None, envvar="KOMBO_BASE_URL", help="Kombo base URL."),
    db: str = typer.Option(
        "stagewatch.db", envvar="STAGEWATCH_DB", help="SQLite file or postgresql:// URL."
    ),
) -> None:
    """Serve the hourly, weekly-full and manual deployments from this process (no work pool);
    needs a Prefect server (PREFECT_API_URL). Ctrl-C stops it."""
    ids = list(integration_ids or []) or [
        part for part in os.environ.get(IDS_ENV, "").replace(",", " ").split() if part
    ]
    if not ids:
        ids = simulator_integrations(base_url)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise _fail(
            "stagewatch serve needs a Prefect server to schedule runs: start one with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api "
            "(or try `make ui`)",
            2,
        )
    from deployments.serve import serve_deployments

    serve_deployments(ids, base_url=base_url, db=str(db.resolve()))


def register(app: typer.Typer) -> None:
    """Add `sync` and `serve` to the app."""
    app.command("sync")(sync)
    app.command("serve")(serve)
