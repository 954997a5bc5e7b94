"""`stagewatch stack up|down`: the scale-out deployment on one machine (see deployments/README.md).

`deployments.stack` (and Prefect under it) is imported inside the commands, so `stagewatch --help`
stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from stagewatch.errors import StagewatchError

stack_app = typer.Typer(
    help="Prefect's server on PostgreSQL, a work pool with workers, the fan-out deployments and "
    "the webhook receiver, on this machine.",
    no_args_is_help=True,
)

STATE_DIR_OPTION = typer.Option(
    Path(".stack"), "--state-dir", help="Where the pid file and the logs live."
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@stack_app.command("up")
def up(
    state_dir: Path = STATE_DIR_OPTION,
    port: int = typer.Option(4200, min=1, max=65535, help="Prefect server (UI and API) port."),
    webhook_port: int = typer.Option(8780, min=1, max=65535, help="Webhook receiver port."),
    postgres: str = typer.Option(
        "postgresql+asyncpg://postgres@127.0.0.1:5432",
        envvar="STAGEWATCH_STACK_POSTGRES",
        help="PostgreSQL server for Prefect's database (postgresql+asyncpg://, no database name).",
    ),
    prefect_db: str = typer.Option("stagewatch_prefect", help="Prefect's database name."),
    store_db: str = typer.Option(
        "stagewatch", help="The store's database on the same server (created when missing)."
    ),
    store: str | None = typer.Option(
        None,
        envvar="STAGEWATCH_DB",
        help="Another store for every run: a SQLite file or a postgresql:// URL (default: "
        "--store-db on --postgres).",
        show_default=False,
    ),
    workers: int = typer.Option(2, min=1, max=16, help="Process workers polling the pool."),
    worker_limit: int = typer.Option(4, min=2, max=64, help="Flow runs per worker at a time."),
    poll_seconds: float = typer.Option(5.0, min=0.5, help="How often a worker asks for runs."),
    account_limit: int = typer.Option(
        8, min=1, help="Integrations syncing at once across the Kombo account (its rate limit)."
    ),
    integrations: str | None = typer.Option(
        None,
        "--integrations",
        "-i",
        help="Comma-separated integration ids for the scheduled deployments (a Prefect variable).",
        show_default=False,
    ),
) -> None:
    """Start the stack in the background and print the UI's address."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from deployments.stack import StackConfig
    from deployments.stack import up as stack_up

    ids = [part.strip() for part in (integrations or "").split(",") if part.strip()]
    try:
        config = StackConfig(
            state_dir=state_dir,
            port=port,
            webhook_port=webhook_port,
            postgres=postgres,
            prefect_db=prefect_db,
            store_db=store_db,
            store=store,
            workers=workers,
            worker_limit=worker_limit,
            poll_seconds=poll_seconds,
            account_limit=account_limit,
            integration_ids=ids,
        )
        stack_up(config, say=typer.echo)
    except StagewatchError as exc:
        raise _fail(str(exc)) from None


@stack_app.command("down")
def down(
    state_dir: Path = STATE_DIR_OPTION,
    drop_database: bool = typer.Option(
        False, "--drop-database", help="Also drop Prefect's database (its runs and artifacts)."
    ),
) -> None:
    """Stop the stack's processes: the receiver and the workers, then the server."""
    from deployments.stack import down as stack_down

    try:
        stack_down(state_dir, drop_database=drop_database, say=typer.echo)
    except StagewatchError as exc:
        raise _fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    """Add `stagewatch stack up|down` to the app."""
    app.add_typer(stack_app, name="stack")
