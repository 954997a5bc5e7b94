"""The simulator over real HTTP: a Starlette app for uvicorn, and a background-thread server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from stagewatch.simulator.faults import FaultConfig
from stagewatch.simulator.handler import API_PREFIX, SimResponse, Simulator
from stagewatch.simulator.world import World

LOOPBACK = "127.0.0.1"
_START_TIMEOUT_SECONDS = 10.0


class SimulatedDisconnect(ConnectionAbortedError):
    """Raised after half a body to make uvicorn drop the connection (a `disconnect` fault)."""


class _DropConnection(Response):
    """Announce the full length, send half, then abort: the client sees a cut-off body."""

    def __init__(self, answer: SimResponse) -> None:
        super().__init__(answer.body, status_code=answer.status, headers=dict(answer.headers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        raise SimulatedDisconnect("simulated dropped connection")


class _QuietDisconnects(logging.Filter):
    """Keep uvicorn from logging our own deliberate disconnects as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDisconnect)


logging.getLogger("uvicorn.error").addFilter(_QuietDisconnects())


def create_app(
    world: World,
    faults: FaultConfig | None = None,
    *,
    latency_ms: float = 0,
    rate_limit: int | None = None,
    advance_every_seconds: float | None = None,
    advance_hours: float = 1.0,
    on_advance: Callable[[int], None] | None = None,
) -> Starlette:
    """Kombo's API for uvicorn; `app.state.simulator` holds the handler (stats, faults)."""
    simulator = Simulator(world, faults, latency_ms=latency_ms, rate_limit=rate_limit)
    if advance_every_seconds is not None and advance_every_seconds <= 0:
        raise ValueError("advance_every_seconds must be > 0")
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    route = Route("/{path:path}", _endpoint(simulator), methods=methods)
    lifespan = _advancing(world, advance_every_seconds, advance_hours, on_advance)
    app = Starlette(routes=[route], lifespan=lifespan)
    app.state.simulator = simulator
    return app


def _endpoint(simulator: Simulator) -> Callable[[Request], Awaitable[Response]]:
    """Every path goes to `simulator`; this only carries out its delay and disconnect."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        client_host = request.client.host if request.client else None
        with simulator.track(request.url.path):
            answer = simulator.handle(
                request.method,
                request.url.path,
                request.query_params.multi_items(),
                request.headers.items(),
                body,
                client_host=client_host,
            )
            if answer.delay:
                await asyncio.sleep(answer.delay)
        if answer.disconnect:
            return _DropConnection(answer)
        return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))

    return endpoint


def _advancing(
    world: World, every: float | None, hours: float, on_advance: Callable[[int], None] | None
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that, given `every`, advances `world` by `hours` every `every` seconds."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        if every is not None:
            task = asyncio.create_task(_advance_forever(world, every, hours, on_advance))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return lifespan


async def _advance_forever(
    world: World, every: float, hours: float, on_advance: Callable[[int], None] | None
) -> None:
    while True:
        await asyncio.sleep(every)
        changes = await asyncio.to_thread(world.advance, hours)
        if on_advance is not None:
            on_advance(changes)


class _Server(uvicorn.Server):
    """uvicorn that tells us when it is listening."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._ready()


def bind_loopback(host: str = LOOPBACK, port: int = 0) -> socket.socket:
    """A listening-ready socket on a loopback address (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def build_server(
    app: Starlette, ready: Callable[[], None], log_level: str = "warning"
) -> uvicorn.Server:
    """A uvicorn server for `app` that calls `ready` once listening; `.run(sockets=[sock])`."""
    # date_header=False: the simulator sends its own Date, on the simulated clock.
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, lifespan="on", date_header=False
    )
    return _Server(config, ready)


def serve_in_thread(
    world: World,
    faults: FaultConfig | None = None,
    *,
    latency_ms: float = 0,
    rate_limit: int | None = None,
    host: str = LOOPBACK,
    port: int = 0,
) -> tuple[str, Callable[[], None]]:
    """Serve `world` with uvicorn in a daemon thread; returns (base URL with /v1, stop)."""
    app = create_app(world, faults, latency_ms=latency_ms, rate_limit=rate_limit)
    sock = bind_loopback(host, port)
    ready = threading.Event()
    server = build_server(app, ready.set)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="stagewatch-simulator", daemon=True
    )
    thread.start()
    if not ready.wait(_START_TIMEOUT_SECONDS):
        server.should_exit = True
        thread.join(_START_TIMEOUT_SECONDS)
        sock.close()
        raise RuntimeError("the simulator did not start listening within 10 s")
    bound_host, bound_port = sock.getsockname()[:2]
    base_url = f"http://{_url_host(bound_host)}:{bound_port}{API_PREFIX}"

    def stop() -> None:
        server.should_exit = True
        thread.join(_START_TIMEOUT_SECONDS)
        sock.close()

    return base_url, stop


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
