"""`stagewatch simulator`: a Kombo-compatible API on loopback, for demos, drills and benchmarks."""

from __future__ import annotations

import contextlib
import ipaddress
import sys

import typer

from stagewatch.simulator import FaultConfig, World, create_app, scenarios_with
from stagewatch.simulator.faults import FAULT_KINDS, RECORD_KINDS
from stagewatch.simulator.render import format_ms
from stagewatch.simulator.server import bind_loopback, build_server
from stagewatch.simulator.webhooks import WebhookSender


def _loopback_host(host: str) -> str:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise typer.BadParameter(f"the simulator serves loopback only; got {host!r}")
    return host


def _webhook_sender(world: World, url: str | None, secret: str | None) -> WebhookSender | None:
    if not url:
        return None  # a KOMBO_WEBHOOK_SECRET in the environment alone sends nothing
    if not secret:
        raise typer.BadParameter("--webhook-url needs --webhook-secret (or KOMBO_WEBHOOK_SECRET)")
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"--webhook-url must be an http(s) URL, got {url!r}")
    return WebhookSender(world, url, secret)


def simulator(
    api_key: str = typer.Option(
        ...,
        envvar="KOMBO_API_KEY",
        help="The API key clients must send as a bearer token (or set KOMBO_API_KEY).",
        show_default=False,
    ),
    port: int = typer.Option(8765, min=0, max=65535, help="TCP port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", callback=_loopback_host, help="Loopback address."),
    seed: int = typer.Option(1, help="Same seed, same calls: byte-identical answers."),
    applications: int = typer.Option(2_000, min=0, help="Applications per normal integration."),
    jobs: int = typer.Option(50, min=0, help="Jobs per normal integration."),
    normal_integrations: int = typer.Option(
        1, min=0, help="How many 'normal' integrations besides one of each limitation scenario."
    ),
    fault_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of requests to fail."),
    fault_kinds: str = typer.Option(
        "",
        help=(
            f"Comma-separated fault kinds (default: every transport fault: {', '.join(FAULT_KINDS)}; "
            f"also {', '.join(RECORD_KINDS)})."
        ),
    ),
    latency_ms: float = typer.Option(0.0, min=0.0, help="Added to every Kombo response."),
    rate_limit: int | None = typer.Option(
        None, min=1, help="Requests per 60 s window before 429 (default: unlimited)."
    ),
    advance_every_seconds: float | None = typer.Option(
        None, min=0.001, help="Advance simulated time every S real seconds..."
    ),
    advance_hours: float | None = typer.Option(
        None, min=0.0, help="...by H simulated hours each time (default 1)."
    ),
    webhook_url: str | None = typer.Option(
        None, help="POST Kombo's signed webhooks here (e.g. http://127.0.0.1:8780/kombo/webhooks)."
    ),
    webhook_secret: str | None = typer.Option(
        None,
        envvar="KOMBO_WEBHOOK_SECRET",
        help="Key their signatures (or KOMBO_WEBHOOK_SECRET).",
        show_default=False,
    ),
) -> None:
    """Serve a deterministic Kombo ATS world on loopback until interrupted.

    Prints `integration <id> <scenario>` per integration once it is listening. Base URL:
    http://HOST:PORT/v1; `POST /_sim/advance?hours=N` moves simulated time,
    `POST /_sim/integrations?scenario=S` and `DELETE /_sim/integrations/ID` connect and disconnect
    integrations. With --webhook-url, each of these sends Kombo's webhook.
    """
    if advance_hours is not None and advance_every_seconds is None:
        raise typer.BadParameter("--advance-hours needs --advance-every-seconds")
    try:
        faults = FaultConfig(rate=fault_rate, kinds=FaultConfig.parse_kinds(fault_kinds), seed=seed)
        world = World(
            seed=seed,
            applications=applications,
            jobs=jobs,
            api_key=api_key,
            scenarios=scenarios_with(normal=normal_integrations),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    sender = _webhook_sender(world, webhook_url, webhook_secret)

    def report_advance(changes: int) -> None:
        typer.echo(f"advanced to {format_ms(world.now_ms)}: {changes} changes", err=True)

    app = create_app(
        world,
        faults,
        latency_ms=latency_ms,
        rate_limit=rate_limit,
        advance_every_seconds=advance_every_seconds,
        advance_hours=advance_hours if advance_hours is not None else 1.0,
        on_advance=report_advance,
    )
    try:
        sock = bind_loopback(host, port)
    except OSError as exc:
        typer.echo(f"cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    bound_port = sock.getsockname()[1]

    def announce() -> None:
        for integration_id, scenario in world.integrations.items():
            typer.echo(f"integration {integration_id} {scenario}")
        sys.stdout.flush()
        url_host = f"[{host}]" if ":" in host else host
        typer.echo(f"serving Kombo's API at http://{url_host}:{bound_port}/v1", err=True)

    server = build_server(app, announce, log_level="warning")
    if sender is not None:
        sender.start()
    # uvicorn shuts down gracefully on Ctrl-C, then re-raises it; that is a normal exit here.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if sender is not None:
        sender.close()


def register(app: typer.Typer) -> None:
    """Add `stagewatch simulator` to the app."""
    app.command("simulator")(simulator)
