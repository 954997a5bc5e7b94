"""`stagewatch webhooks`: receive Kombo's signed webhooks and pass them on to Prefect.

Prefect is imported inside the command (its side effects live in `deployments/receiver.py`), so the
library under it stays importable without Prefect.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from stagewatch.errors import StagewatchError
from stagewatch.webhooks import WEBHOOK_PATH, Ledger, create_app, default_ledger_path


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _log_deliveries() -> None:
    """One line per delivery (id, type, integration, outcome) on stderr; uvicorn's access log is
    off, as it would only repeat the path."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("stagewatch.webhooks")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def webhooks(
    host: str = typer.Option(
        "127.0.0.1", help="Address to listen on. Expose it to Kombo through a TLS reverse proxy."
    ),
    port: int = typer.Option(8780, min=0, max=65535, help="TCP port (0 picks a free one)."),
    ledger: Path | None = typer.Option(
        None,
        "--ledger",
        envvar="STAGEWATCH_WEBHOOK_LEDGER",
        help="The receiver's SQLite ledger (default: stagewatch-webhooks.db beside STAGEWATCH_DB).",
        show_default=False,
    ),
) -> None:
    """Receive Kombo's webhooks on POST /kombo/webhooks (health: GET /healthz) and turn them into
    Prefect events and changes to the synced integrations. Needs a Prefect server
    (PREFECT_API_URL) and the webhook secret (Secret block kombo-webhook-secret or
    KOMBO_WEBHOOK_SECRET)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise _fail(
            "stagewatch webhooks passes webhooks on to a Prefect server: start one with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    import uvicorn

    from deployments.receiver import resolve_webhook_secret, side_effects
    from stagewatch.settings import Settings

    path = ledger or default_ledger_path(Settings().stagewatch_db)
    try:
        secret = resolve_webhook_secret()
        opened = Ledger(path)
    except StagewatchError as exc:
        raise _fail(str(exc)) from None
    with opened:
        app = create_app(secret, opened, side_effects())
        _log_deliveries()
        typer.echo(f"webhook path {WEBHOOK_PATH}, ledger {path}", err=True)
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


def register(app: typer.Typer) -> None:
    """Add `stagewatch webhooks` to the app."""
    app.command("webhooks")(webhooks)
