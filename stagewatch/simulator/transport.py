"""The simulator as an `httpx.BaseTransport`: real client code, no sockets, no sleeping in tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qsl

import httpx

from stagewatch.simulator.faults import FaultConfig
from stagewatch.simulator.handler import Simulator
from stagewatch.simulator.world import World


class SimulatorTransport(httpx.BaseTransport):
    """Serve a sync `httpx.Client` from a `World` in-process.

    A `timeout` fault raises `httpx.ReadTimeout` when its delay exceeds the request's read timeout
    (without waiting); shorter delays (latency) go through `sleep`, which tests replace.
    """

    def __init__(
        self,
        world: World | Simulator,
        faults: FaultConfig | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        latency_ms: float = 0,
        rate_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(world, Simulator):
            if faults is not None or latency_ms or rate_limit is not None:
                raise ValueError("pass faults, latency and rate limits to the Simulator itself")
            self.simulator = world
        else:
            self.simulator = Simulator(
                world, faults, latency_ms=latency_ms, rate_limit=rate_limit, clock=clock
            )
        self._sleep = sleep

    def stats(self) -> dict:
        return self.simulator.stats()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        query = parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True)
        with self.simulator.track(request.url.path):
            answer = self.simulator.handle(
                request.method, request.url.path, query, request.headers.multi_items(), body
            )
            if answer.delay:
                read_timeout = (request.extensions.get("timeout") or {}).get("read")
                if read_timeout is not None and answer.delay > read_timeout:
                    raise httpx.ReadTimeout(
                        f"simulated: no answer within the {read_timeout}s read timeout",
                        request=request,
                    )
                self._sleep(answer.delay)
        if answer.disconnect:
            raise httpx.RemoteProtocolError(
                "simulated: peer closed connection without sending complete message body",
                request=request,
            )
        return httpx.Response(
            answer.status, headers=answer.headers, content=answer.body, request=request
        )
