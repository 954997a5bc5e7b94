"""`stagewatch unlock`: for operators, the one command that changes the store outside a sync."""

from __future__ import annotations

from pathlib import Path

import typer

from stagewatch.cli.query import DB_OPTION, lease_expiry
from stagewatch.store import LockedError, Store, StoreError
from stagewatch.store.location import is_postgres


def _fail(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(1)


def unlock(
    integration: str = typer.Option(
        ..., "--integration", "-i", help="Integration whose lock to release."
    ),
    force: bool = typer.Option(
        False, "--force", help="Release it even while its lease is live (its run then stops)."
    ),
    db: str = DB_OPTION,
) -> None:
    """Release an integration's run lock left by a run that will never finish, and mark that run
    abandoned. A live lease (not run out, or held by a live process on this machine) needs
    --force; a sync would take over a run-out lease by itself."""
    # A new database holds no lock, and a typo must not create one.
    if not is_postgres(db) and not Path(db).is_file():
        raise _fail(f"no stagewatch database at {db}")
    try:
        with Store(db) as store:
            released = store.release_lock(integration, force=force)
    except LockedError as exc:
        raise _fail(
            f"{exc}: its lease is live; stop that run, wait for the lease to run out, or pass "
            "--force to release it anyway"
        ) from exc
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(
        f"Released the lock of {integration}: run {released['run_id']} (pid {released['pid']} "
        f"on {released['hostname']}, {lease_expiry(released['lease_expires_at'])}). "
        f"Run {released['run_id']} is marked abandoned and its staging discarded."
    )


def register(app: typer.Typer) -> None:
    """Add `unlock` to the app."""
    app.command("unlock")(unlock)
