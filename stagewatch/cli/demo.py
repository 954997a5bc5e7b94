"""`stagewatch demo`: a few simulated days of a Kombo customer, synced by the real flow, offline.

The simulator serves on loopback in a thread; Prefect runs ephemeral (no server to start, no
account) with its home inside the output directory, so nothing outside it is touched.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import typer

from stagewatch import report

DEMO_API_KEY = "sk_demo_simulator_only"
DEMO_SEED = 7


def _prefect_environment(home: Path) -> None:
    """Point Prefect at a project-local home and its ephemeral server, before it is imported.

    The heartbeat stays on, as in production; it costs about a second per flow run here.
    """
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home.resolve())
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILES_PATH", "KOMBO_BASE_URL"):
        os.environ.pop(name, None)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "stagewatch")
    os.environ["KOMBO_API_KEY"] = DEMO_API_KEY  # the simulator's key, only in this process


def _remove_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def _day_line(day: int, now: str, outcomes: list[dict[str, Any]], seconds: float) -> str:
    counts: Counter[str] = Counter()
    for outcome in outcomes:
        counts.update(outcome.get("counts") or {})
    parts = [f"{n} {label}" for label in report.LABEL_ORDER if (n := counts[label])]
    return f"day {day} ({now[:10]}): {', '.join(parts) or 'no changes'}  [{seconds:.1f} s]"


def _latest_artifact(key: str) -> str | None:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return found[0].data if found else None


def _summary(console: Any, store: Any, integration_id: str, outcomes: list[dict]) -> str:
    """Print what was recorded; returns an application worth a `stagewatch history` look."""
    from rich.table import Table

    events = list(store.events(integration_id=integration_id))
    job_names = store.job_names(integration_id)
    counts = report.label_counts(events)
    table = Table(title=f"Changes recorded for {integration_id}", title_justify="left")
    table.add_column("change")
    table.add_column("count", justify="right")
    for label, count in counts.items():
        table.add_row(label, f"{count:,}")
    console.print(table)

    def line(event: dict[str, Any]) -> str:
        job = job_names.get(event["job_id"], event["job_id"])
        return f"  {event['application_id']} ({job})"

    moves = [e for e in events if e["kind"] == "stage_changed"]
    backward = [e for e in moves if e["direction"] == "backward"][:1]
    moves = backward + moves[-4:]  # the latest, and one that went backward
    console.print("\n[bold]A few stage moves[/bold] (observed between two syncs):")
    for e in moves:
        flag = "  [red]backward[/red]" if e["direction"] == "backward" else ""
        console.print(
            f"{line(e)}: {e['from_stage_name']} -> {e['to_stage_name']}, "
            f"between {e['previous_observed_at']} and {e['observed_at']}{flag}",
            markup=True,
            highlight=False,
        )
    hires = [e for e in events if report.event_label(e) == "hired"][:5]
    console.print("\n[bold]Hires[/bold]:")
    for e in hires:
        console.print(f"{line(e)} at {e['observed_at']}", highlight=False)
    console.print("\n[bold]Every integration of the simulated customer[/bold] (last sync):")
    for o in outcomes:
        note = f" ({o['error_code'] or o['message']})" if o.get("message") else ""
        console.print(
            f"  {o['integration_id']}  {report.STATUS_LABELS[o['status']]}{note}",
            highlight=False,
        )
    return (moves or events)[0]["application_id"]


def demo(
    days: int = typer.Option(5, min=1, max=30, help="Simulated days, one incremental sync each."),
    applications: int = typer.Option(
        2_000, min=10, max=100_000, help="Applications of the simulated customer's main ATS."
    ),
    output: Path = typer.Option(
        Path("demo-output"), help="Where the database, Prefect's home and the artifact go."
    ),
) -> None:
    """Run several incremental syncs against the built-in simulator, with simulated days passing
    between them, and show what stagewatch recorded. No account, network or server needed."""
    started = time.monotonic()
    output.mkdir(parents=True, exist_ok=True)
    db = (output / "stagewatch.db").resolve()
    _remove_database(db)
    _prefect_environment(output / ".prefect")

    from rich.console import Console

    from flows.sync import SyncManyParams
    from stagewatch.simulator import World, serve_in_thread
    from stagewatch.store import Store

    console = Console(soft_wrap=True)
    world = World(seed=DEMO_SEED, applications=applications, jobs=40, api_key=DEMO_API_KEY)
    base_url, stop = serve_in_thread(world)
    console.print(
        f"Simulated Kombo at {base_url} with {len(world.integrations)} integrations "
        f"({', '.join(sorted(set(world.integrations.values())))}); "
        "starting Prefect (ephemeral, first start takes a few seconds)...",
        highlight=False,
    )
    params = SyncManyParams(
        integration_ids=list(world.integrations), base_url=base_url, db=str(db), max_concurrency=3
    )
    try:
        outcomes = _sync_days(console, world, params, days)
        main_integration = world.normal_integration_id
        artifact = _latest_artifact(report.artifact_key(main_integration))
    finally:
        stop()
    artifact_path = output / f"{report.artifact_key(main_integration)}.md"
    artifact_path.write_text(artifact or "")
    with Store(db, readonly=True) as store:
        console.print()
        sample_app = _summary(console, store, main_integration, outcomes)
    _where_next(console, db, sample_app, artifact_path)
    console.print(
        f"\n{world.integration_for('permission-missing')} fails on purpose: its simulated "
        f"customer did not grant permission. Demo took {time.monotonic() - started:.0f} s.",
        highlight=False,
    )


def _sync_days(console: Any, world: Any, params: Any, days: int) -> list[dict[str, Any]]:
    """A sync on day 0, then one after each simulated day; the last day's outcomes."""
    from stagewatch.cli.sync import failure_lines, run_sync

    for day in range(days + 1):
        if day:
            world.advance(hours=24)
        sync_started = time.monotonic()
        _, outcomes, error = run_sync(params)
        if error:
            raise typer.Exit(_print_error(console, error))
        console.print(
            _day_line(day, world.now.isoformat(), outcomes, time.monotonic() - sync_started),
            highlight=False,
        )
    unexpected = [line for line in failure_lines(outcomes) if "PERMISSION_MISSING" not in line]
    if unexpected:
        raise typer.Exit(_print_error(console, "; ".join(unexpected)))
    return outcomes


def _where_next(console: Any, db: Path, sample_app: str, artifact_path: Path) -> None:
    command = _command()
    console.print(
        "\n[bold]Where to look next[/bold]\n"
        f"  database:        {db}\n"
        f"  the change log:  {command} changes --db {db} --kind stage_changed --limit 20\n"
        f"  one application: {command} history {sample_app} --db {db}\n"
        f"  per integration: {command} status --db {db}\n"
        f"  latest artifact: {artifact_path} (the markdown the Prefect UI shows)\n"
        "  the Prefect UI:  make ui (server, simulator and served deployments on 127.0.0.1)",
        highlight=False,
    )


def _command() -> str:
    """How the reader can run stagewatch again: `stagewatch` when that is on PATH (an activated venv),
    else the script running now (`make demo` runs `.venv/bin/stagewatch`, which is not on PATH)."""
    running = Path(sys.argv[0])
    on_path = shutil.which("stagewatch")
    if not running.is_file() or (on_path and Path(on_path).resolve() == running.resolve()):
        return "stagewatch"
    relative = os.path.relpath(running)
    return str(running.resolve()) if relative.startswith("..") else relative


def _print_error(console: Any, message: str) -> int:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return 1
