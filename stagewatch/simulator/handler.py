"""One request handler shared by the HTTP app and the in-process transport.

`Simulator.handle(method, path, query, headers, body)` returns a `SimResponse`; the two adapters only
carry out what it says (wait `delay` seconds, drop the connection), so both paths behave the same.
Kombo's API is served under `/v1` (also accepted without the prefix); `/_sim/*` is the simulator's
own control surface: loopback only, no Kombo auth, never faulted, rate limited or counted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import Any

from stagewatch.simulator import api, faults
from stagewatch.simulator.faults import FaultConfig
from stagewatch.simulator.integration import Integration
from stagewatch.simulator.render import format_ms
from stagewatch.simulator.world import World

API_PREFIX = "/v1"
DEFAULT_RATE_WINDOW_SECONDS = 60
# Reported when no limit is configured: large enough that no client ever throttles on it.
UNLIMITED_REPORTED_LIMIT = 1_000_000
MAX_ADVANCE_HOURS = 24 * 366
JSON_TYPE = "application/json; charset=utf-8"
_HTML_500 = (
    b"<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n"
    b"<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)

_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("GET", re.compile(r"/ats/jobs"), "GET /ats/jobs"),
    ("GET", re.compile(r"/ats/applications"), "GET /ats/applications"),
    (
        "POST",
        re.compile(r"/ats/jobs/(?P<job_id>[^/]+)/applications"),
        "POST /ats/jobs/{job_id}/applications",
    ),
    (
        "PUT",
        re.compile(r"/ats/applications/(?P<application_id>[^/]+)/stage"),
        "PUT /ats/applications/{application_id}/stage",
    ),
    ("GET", re.compile(r"/check-api-key"), "GET /check-api-key"),
    (
        "POST",
        re.compile(r"/ats/import-tracked-application"),
        "POST /ats/import-tracked-application",
    ),
)


@dataclass
class SimResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    delay: float = 0.0  # seconds before the answer arrives
    disconnect: bool = False  # the connection drops after half the body
    fault: str | None = None


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _api_path(path: str) -> str:
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        return path[len(API_PREFIX) :] or "/"
    return path


def is_control(path: str) -> bool:
    """The simulator's own `/_sim/*` endpoints (with or without the /v1 prefix)."""
    return _api_path(path).startswith("/_sim/")


class RateLimiter:
    """A fixed window of `limit` requests per `window` seconds, like Kombo's ratelimit-* headers."""

    def __init__(self, limit: int | None, window: float, clock: Callable[[], float]) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"rate limit must be >= 1 request per window, got {limit}")
        if window <= 0:
            raise ValueError("rate limit window must be > 0 seconds")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._window_start = math.floor(clock() / window) * window
        self._used = 0

    def take(self) -> tuple[bool, list[tuple[str, str]]]:
        """Count one request; returns (allowed, ratelimit headers)."""
        now = self._clock()
        start = math.floor(now / self.window) * self.window
        if start != self._window_start:
            self._window_start, self._used = start, 0
        limit = self.limit or UNLIMITED_REPORTED_LIMIT
        allowed = self.limit is None or self._used < self.limit
        if allowed:
            self._used += 1
        reset = max(1, math.ceil(self._window_start + self.window - now))
        headers = [
            ("ratelimit-limit", str(limit)),
            ("ratelimit-remaining", str(max(0, limit - self._used))),
            ("ratelimit-reset", str(reset)),
        ]
        return allowed, headers


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    in_flight: int = 0
    max_concurrent: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(sorted(self.requests.items())),
            "requests_total": sum(self.requests.values()),
            "statuses": dict(sorted(self.statuses.items())),
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "rate_limited": self.rate_limited,
            "in_flight": self.in_flight,
            "max_concurrent": self.max_concurrent,
        }


class Simulator:
    """Kombo's API over a `World`, with auth, rate limits, faults, latency and statistics."""

    def __init__(
        self,
        world: World,
        faults: FaultConfig | None = None,
        *,
        latency_ms: float = 0,
        rate_limit: int | None = None,
        rate_window_seconds: float = DEFAULT_RATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if latency_ms < 0 or not math.isfinite(latency_ms):
            raise ValueError("latency_ms must be a finite number >= 0")
        self.world = world
        self.faults = faults or FaultConfig.none()
        self.latency = latency_ms / 1000
        self.rate_limiter = RateLimiter(rate_limit, rate_window_seconds, clock)
        self._fault_rng = random.Random(f"stagewatch-sim-faults:{self.faults.seed}")
        self._stats = Stats()
        self._stats_lock = threading.Lock()
        self._request_number = 0

    # -- bookkeeping ------------------------------------------------------------------------

    @contextlib.contextmanager
    def track(self, path: str) -> Iterator[None]:
        """Count a Kombo request in flight for the whole time it takes, waits included."""
        if is_control(path):
            yield
            return
        with self._stats_lock:
            self._stats.in_flight += 1
            self._stats.max_concurrent = max(self._stats.max_concurrent, self._stats.in_flight)
        try:
            yield
        finally:
            with self._stats_lock:
                self._stats.in_flight -= 1

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return self._stats.snapshot()

    def reset_stats(self) -> None:
        with self._stats_lock:
            in_flight = self._stats.in_flight
            self._stats = Stats(in_flight=in_flight, max_concurrent=in_flight)

    def _pick_fault(self) -> str | None:
        config = self.faults
        if not config.rate:
            return None
        if self._fault_rng.random() >= config.rate:
            return None
        return self._fault_rng.choice(config.kinds)

    # -- entry point ------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes = b"",
        *,
        client_host: str | None = "127.0.0.1",
    ) -> SimResponse:
        method = method.upper()
        path = _api_path(path)
        query = list(query)
        header_items = headers.items() if isinstance(headers, Mapping) else headers
        lowered = {name.lower(): value for name, value in header_items}
        if is_control(path):
            return self._control(method, path, query, client_host)

        endpoint, path_params, known_path = self._route(method, path)
        with self._stats_lock:
            self._request_number += 1
            request_id = f"sim_{self._request_number:010d}"
            self._stats.requests[endpoint or "unknown"] += 1
            fault = self._pick_fault()
            if fault:
                self._stats.faults[fault] += 1
        if fault in faults.REFUSING_KINDS:
            general = endpoint in (None, "GET /check-api-key")
            response = self._fault_response(fault, request_id, general)
        else:
            response = self._serve(
                endpoint, path_params, known_path, method, query, lowered, body, request_id
            )
            if fault == faults.TIMEOUT:
                response.delay += self.faults.slow_seconds
            elif fault == faults.DISCONNECT:
                response.disconnect = True
            elif fault == faults.TRUNCATED:
                response.body = response.body[: len(response.body) // 2]
            elif fault in faults.RECORD_KINDS:
                response.body = self._spoil_records(fault, response, query)
            response.fault = fault
        response.delay += self.latency
        # Date on the simulated clock, as Kombo's Date is on Kombo's: stagewatch reads the listing
        # start (its next watermark) from it.
        response.headers.append(("date", format_datetime(self.world.now, usegmt=True)))
        with self._stats_lock:
            self._stats.statuses[str(response.status)] += 1
        return response

    def _spoil_records(
        self, fault: str, response: SimResponse, query: list[tuple[str, str]]
    ) -> bytes:
        """A listing page with one record dropped or made unparseable. A lookup by `ids` is one
        unpaged answer, so nothing can move past it: no record is dropped from it."""
        if response.status != 200:
            return response.body
        payload = json.loads(response.body)
        results = payload.get("data", {}).get("results")
        if not isinstance(results, list) or not results:
            return response.body
        with self._stats_lock:
            position = self._fault_rng.randrange(len(results))
        if fault == faults.SKIP_RECORD:
            if any(name == "ids" for name, _ in query):
                return response.body
            del results[position]
        else:
            results[position] = {**results[position], "remote_created_at": "not a timestamp"}
        return _dumps(payload)

    def _route(self, method: str, path: str) -> tuple[str | None, dict[str, str], bool]:
        known_path = False
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if match:
                known_path = True
                if route_method == method:
                    return name, match.groupdict(), True
        return None, {}, known_path

    # -- Kombo's API ------------------------------------------------------------------------

    def _serve(
        self,
        endpoint: str | None,
        path_params: dict[str, str],
        known_path: bool,
        method: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
        request_id: str,
    ) -> SimResponse:
        base_headers = [("x-request-id", request_id)]
        general = endpoint in (None, "GET /check-api-key")
        if endpoint is None:
            status = 405 if known_path else 404
            message = f"{method} is not allowed here." if known_path else "No such endpoint."
            # Kombo's error codes have no "not found"; a wrong path is the caller's input error.
            return self._error("PLATFORM.INPUT_INVALID", message, base_headers, status=status)
        if not self._authenticated(headers):
            return self._error(
                "PLATFORM.AUTHENTICATION_INVALID",
                "The API key is missing or invalid. Send it as 'Authorization: Bearer <key>'.",
                base_headers,
            )
        allowed, limit_headers = self._take_rate_limit()
        headers_out = base_headers + limit_headers
        if not allowed:
            return self._error(
                "PLATFORM.RATE_LIMIT_EXCEEDED",
                "You have exceeded the rate limit; retry after ratelimit-reset seconds.",
                headers_out,
            )
        try:
            payload = self._answer(endpoint, path_params, query, headers, body)
        except api.ApiError as exc:
            log_url = None if general else f"https://app.kombo.dev/logs/{request_id}"
            return self._error(
                exc.code, exc.message, headers_out, status=exc.status, log_url=log_url
            )
        return SimResponse(200, [*headers_out, ("content-type", JSON_TYPE)], _dumps(payload))

    def _take_rate_limit(self) -> tuple[bool, list[tuple[str, str]]]:
        with self._stats_lock:
            allowed, limit_headers = self.rate_limiter.take()
            if not allowed:
                self._stats.rate_limited += 1
        return allowed, limit_headers

    def _answer(
        self,
        endpoint: str,
        path_params: dict[str, str],
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
    ) -> dict[str, Any]:
        """The success body of an authenticated, admitted request; raises `api.ApiError`."""
        with self.world.lock:
            if endpoint == "GET /check-api-key":
                env = self.world.environment_id
                return {"status": "success", "data": {"environment_id": env, "customer_id": env}}
            return self._ats(endpoint, path_params, query, headers, body)

    def _authenticated(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token) and self.world.accepts_key(token.strip())

    def _integration(self, headers: dict[str, str]) -> Integration:
        integration_id = headers.get("x-integration-id", "").strip()
        if not integration_id:
            raise api.invalid("The X-Integration-Id header is required for /ats endpoints.")
        integ = self.world.find_integration(integration_id)
        if integ is None:
            raise api.ApiError(
                "PLATFORM.INTEGRATION_NOT_FOUND", f"No integration with id {integration_id!r}."
            )
        if integ.scenario == "setup-pending":
            raise api.ApiError(
                "INTEGRATION.SETUP_SYNC_PENDING",
                "The initial sync of this integration has not finished yet. Try again later.",
            )
        if integ.scenario == "permission-missing":
            raise api.ApiError(
                "INTEGRATION.PERMISSION_MISSING",
                "The connected account lacks the permission to read this data. "
                "Ask the customer to grant it in the ATS.",
            )
        return integ

    def _ats(
        self,
        endpoint: str,
        path_params: dict[str, str],
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
    ) -> dict[str, Any]:
        integ = self._integration(headers)
        if endpoint == "GET /ats/jobs":
            return api.list_jobs(integ, query)
        if endpoint == "GET /ats/applications":
            return api.list_applications(integ, query)
        if query:
            raise api.invalid(f"{endpoint} takes no query parameters.")
        if endpoint == "POST /ats/jobs/{job_id}/applications":
            return api.create_application(integ, path_params["job_id"], body)
        if endpoint == "POST /ats/import-tracked-application":
            return api.import_tracked_application(integ, body)
        return api.set_application_stage(integ, path_params["application_id"], body)

    def _error(
        self,
        code: str,
        message: str,
        headers: list[tuple[str, str]],
        *,
        status: int | None = None,
        log_url: str | None = None,
    ) -> SimResponse:
        payload = {
            "status": "error",
            "error": {
                "code": code,
                "title": api.TITLE_BY_CODE[code],
                "message": message,
                "log_url": log_url,
            },
        }
        return SimResponse(
            status or api.STATUS_BY_CODE[code],
            [*headers, ("content-type", JSON_TYPE)],
            _dumps(payload),
        )

    def _fault_response(self, fault: str, request_id: str, general: bool) -> SimResponse:
        """A refusal; `general` endpoints (check-api-key) have only PLATFORM codes to use."""
        base = [("x-request-id", request_id)]
        if fault in (faults.RATE_LIMIT, faults.RATE_LIMIT_NO_RETRY_AFTER):
            limit = self.rate_limiter.limit or UNLIMITED_REPORTED_LIMIT
            retry_after = self.faults.retry_after_seconds
            headers = [
                *base,
                ("ratelimit-limit", str(limit)),
                ("ratelimit-remaining", "0"),
                ("ratelimit-reset", str(max(1, retry_after))),
            ]
            if fault == faults.RATE_LIMIT:
                headers.append(("retry-after", str(retry_after)))
            response = self._error(
                "PLATFORM.RATE_LIMIT_EXCEEDED", "You have exceeded the rate limit.", headers
            )
        elif fault == faults.HTML_500:
            response = SimResponse(500, [("content-type", "text/html")], _HTML_500)
        elif fault == faults.EMPTY_502:
            response = SimResponse(502, [], b"")
        else:
            response = self._error(
                "PLATFORM.UNKNOWN_ERROR" if general else "REMOTE.SERVICE_UNAVAILABLE",
                "The service is temporarily unavailable. Please retry.",
                base,
                status=503,
                log_url=f"https://app.kombo.dev/logs/{request_id}",
            )
        response.fault = fault
        return response

    # -- control surface --------------------------------------------------------------------

    def _control(
        self, method: str, path: str, query: list[tuple[str, str]], client_host: str | None
    ) -> SimResponse:
        if not _is_loopback(client_host):
            return self._error(
                "PLATFORM.INPUT_INVALID",
                "The /_sim control endpoints answer loopback only.",
                [],
                status=403,
            )
        params = dict(query)
        if path == "/_sim/advance" and method == "POST":
            raw = params.get("hours", "")
            try:
                hours = float(raw)
            except ValueError:
                hours = math.nan
            if not (math.isfinite(hours) and 0 <= hours <= MAX_ADVANCE_HOURS):
                return self._error(
                    "PLATFORM.INPUT_INVALID",
                    f"hours must be a number from 0 to {MAX_ADVANCE_HOURS}, got {raw!r}.",
                    [],
                )
            changes = self.world.advance(hours=hours)
            payload: dict[str, Any] = {"now": format_ms(self.world.now_ms), "changes": changes}
        elif path == "/_sim/stats" and method == "GET":
            payload = self.stats()
            payload["now"] = format_ms(self.world.now_ms)
        elif path == "/_sim/stats/reset" and method == "POST":
            self.reset_stats()
            payload = {"reset": True}
        elif path == "/_sim/integrations" and method == "GET":
            payload = {
                "now": format_ms(self.world.now_ms),
                "integrations": [
                    {"id": i, "scenario": s} for i, s in self.world.integrations.items()
                ],
            }
        elif path.startswith("/_sim/integrations") and method in ("POST", "DELETE"):
            return self._change_integrations(method, path, params)
        elif path == "/_sim/untracked" and method == "GET":
            return self._untracked(params)
        else:
            return self._error(
                "PLATFORM.INPUT_INVALID", f"No control endpoint {method} {path}.", [], status=404
            )
        return SimResponse(200, [("content-type", JSON_TYPE)], _dumps(payload))

    def _untracked(self, params: dict[str, str]) -> SimResponse:
        """`GET /_sim/untracked?integration_id=I`: the ATS's applications Kombo does not track
        yet, with every id an import may name (what `stagewatch import` reads from a file)."""
        integ = self.world.find_integration(params.get("integration_id", ""))
        if integ is None:
            return self._error(
                "PLATFORM.INPUT_INVALID", "Name a known integration_id.", [], status=404
            )
        with self.world.lock:
            rows = [{"tool": integ.tool, **u.ids(integ.jobs)} for u in integ.untracked()]
        payload = {"integration_id": integ.id, "untracked": rows}
        return SimResponse(200, [("content-type", JSON_TYPE)], _dumps(payload))

    def _change_integrations(self, method: str, path: str, params: dict[str, str]) -> SimResponse:
        """`POST /_sim/integrations?scenario=S` connects one, `DELETE /_sim/integrations/{id}`
        disconnects one (each sends its webhook when the simulator sends webhooks)."""
        if method == "POST" and path == "/_sim/integrations":
            scenario = params.get("scenario", "normal")
            try:
                integration_id = self.world.add_integration(scenario)
            except ValueError as exc:
                return self._error("PLATFORM.INPUT_INVALID", str(exc), [])
            payload = {"id": integration_id, "scenario": scenario}
            return SimResponse(201, [("content-type", JSON_TYPE)], _dumps(payload))
        integration_id = path.removeprefix("/_sim/integrations/")
        if method == "DELETE" and integration_id != path and integration_id:
            try:
                self.world.remove_integration(integration_id)
            except LookupError as exc:
                return self._error("PLATFORM.INPUT_INVALID", str(exc), [], status=404)
            payload = {"deleted": integration_id}
            return SimResponse(200, [("content-type", JSON_TYPE)], _dumps(payload))
        return self._error(
            "PLATFORM.INPUT_INVALID", f"No control endpoint {method} {path}.", [], status=404
        )
