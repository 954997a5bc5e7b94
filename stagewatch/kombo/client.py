"""The one way stagewatch talks to Kombo: auth, the request loop, retries and listings.

Retries live here and nowhere else: callers see either a page, or an error that retrying cannot fix
(or a `TransientError` once the retry budget is spent). Pages are parsed in `pages`, filters
encoded in `filters`, errors mapped in `errors`.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from functools import cache, partial
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field, SecretStr

from stagewatch import __version__
from stagewatch.kombo.errors import (
    ConnectionFailedError,
    FatalError,
    InputInvalidError,
    KomboError,
    PaginationLoopError,
    TransientError,
    safe_to_resend,
)
from stagewatch.kombo.filters import (
    APPLICATION_FILTERS,
    JOB_FILTERS,
    MAX_PAGE_SIZE,
    check_page_size,
    encode_filters,
    require_text,
)
from stagewatch.kombo.imports import (
    IMPORT_PATH,
    ImportAnswer,
    parse_answer,
    request_from_tool_ids,
)
from stagewatch.kombo.models import Application, Job, KomboModel, Page
from stagewatch.kombo.pages import SendAhead, early_next_cursor, parse_page, success_body

log = logging.getLogger(__name__)

EU_BASE_URL = "https://api.kombo.dev/v1"
US_BASE_URL = "https://api.us.kombo.dev/v1"
BASE_URLS = {"eu": EU_BASE_URL, "us": US_BASE_URL}
USER_AGENT = f"stagewatch/{__version__}"

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_INITIAL_DELAY = 0.5
DEFAULT_MAX_DELAY = 30.0
DEFAULT_MAX_TOTAL_WAIT = 120.0
DEFAULT_JITTER = 0.25

ALREADY_EXISTS = "ATS.APPLICATION_ALREADY_EXISTS"

M = TypeVar("M", bound=KomboModel)
T = TypeVar("T")


class RetryPolicy(BaseModel):
    """How long the client keeps trying one request before a `TransientError` reaches the caller."""

    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, description="First try included.")
    initial_delay: float = Field(default=DEFAULT_INITIAL_DELAY, ge=0)
    max_delay: float = Field(default=DEFAULT_MAX_DELAY, ge=0)
    max_total_wait: float = Field(
        default=DEFAULT_MAX_TOTAL_WAIT,
        ge=0,
        description="Per request; a wait that would exceed it raises the last TransientError.",
    )
    jitter: float = Field(
        default=DEFAULT_JITTER,
        ge=0,
        le=1,
        description="Fraction of the backoff delay removed at random, so clients spread out.",
    )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay after the `attempt`-th failure (1-based) when the server named no wait."""
        delay = min(self.max_delay, self.initial_delay * 2 ** (attempt - 1))
        return delay * (1 - self.jitter * rng.random())


class ClientStats(BaseModel):
    """Counters for the run report, shared by every client made with `with_integration`."""

    requests: int = 0
    retries: int = 0
    waited_seconds: float = 0.0
    # Early requests for a listing's next page that went unused: the page they followed failed to
    # parse (and was requested again) or named another cursor, or the listing stopped. Counted in
    # `requests` too.
    dropped: int = 0


class _BearerAuth(httpx.Auth):
    """Adds the key at send time, so it sits in no default header, repr or log of the client."""

    def __init__(self, api_key: SecretStr) -> None:
        self._api_key = api_key

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(api_key=SecretStr('**********'))"


class _Shared:
    """What every client made from one root shares: the connection pool and a lock for counters."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.lock = threading.Lock()

    def count(
        self,
        stats: ClientStats,
        *,
        requests: int = 0,
        retries: int = 0,
        waited: float = 0.0,
        dropped: int = 0,
    ) -> None:
        with self.lock:
            stats.requests += requests
            stats.retries += retries
            stats.waited_seconds += waited
            stats.dropped += dropped


def _transport_failure(exc: httpx.TransportError, method: str, path: str) -> KomboError:
    """A failure before Kombo answered, described without the request (whose headers hold the key)."""
    what = f"{type(exc).__name__} on {method} {path}"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return ConnectionFailedError(f"{what}: Kombo could not be reached")
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return TransientError(f"{what}: the connection failed before Kombo answered")
    return FatalError(f"{what}: the request could not be sent")


def _always(error: TransientError) -> bool:
    return True


def _outcome(error: KomboError) -> str:
    """What to log about a failed attempt: the status, never the message or headers."""
    return f"HTTP {error.status_code}" if error.status_code is not None else "no response"


@cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default context, built once: loading the CA bundle costs CPU that every
    integration of a many-integration run would otherwise pay."""
    return httpx.create_ssl_context()


class KomboClient:
    """Kombo's ATS API for one integration. Use as a context manager; it owns one `httpx.Client`.

    `send_ahead` (on by default) requests a listing's next page while the current one is parsed:
    at most one request of a listing is in flight either way.
    """

    def __init__(
        self,
        api_key: SecretStr | str,
        integration_id: str | None = None,
        *,
        base_url: str | None = None,
        region: Literal["eu", "us"] = "eu",
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        send_ahead: bool = True,
    ) -> None:
        secret = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        raw = secret.get_secret_value()
        if not raw or raw != raw.strip() or any(ch.isspace() for ch in raw):
            raise ValueError("the Kombo API key is empty or contains whitespace")
        if region not in BASE_URLS:
            raise ValueError(f"region must be one of {sorted(BASE_URLS)}, got {region!r}")
        if integration_id is not None:
            require_text("integration_id", integration_id)
        self.integration_id = integration_id
        self.base_url = (base_url or BASE_URLS[region]).rstrip("/")
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.send_ahead = send_ahead
        http = httpx.Client(
            base_url=self.base_url,
            auth=_BearerAuth(secret),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            transport=transport or httpx.HTTPTransport(verify=_ssl_context()),
        )
        self._shared = _Shared(http)
        self._stats = ClientStats()
        self._owns_http = True

    @property
    def stats(self) -> ClientStats:
        """This client's own counters: each integration's run report needs its own figures."""
        return self._stats

    def __repr__(self) -> str:
        return f"KomboClient(base_url={self.base_url!r}, integration_id={self.integration_id!r})"

    def __enter__(self) -> KomboClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool; a client from `with_integration` leaves it to its root."""
        if self._owns_http:
            self._shared.http.close()

    def with_integration(self, integration_id: str) -> KomboClient:
        """A client for another integration sharing this one's connections and retry policy.

        It counts its own requests, so each integration's run report shows its own figures.
        """
        require_text("integration_id", integration_id)
        other = object.__new__(KomboClient)
        other.__dict__.update(self.__dict__)
        other.integration_id = integration_id
        other._owns_http = False
        other._stats = ClientStats()
        return other

    # -- requests ---------------------------------------------------------------------------------

    def _retrying(
        self,
        method: str,
        path: str,
        once: Callable[[int], T],
        *,
        retry_if: Callable[[TransientError], bool] = _always,
    ) -> T:
        """Run `once(attempt)` until it succeeds, retrying `TransientError` within the policy.

        The one place stagewatch retries; a wait that would break the attempt or time budget
        re-raises the last `TransientError` instead.
        """
        policy = self.retry
        waited = 0.0
        attempt = 1
        while True:
            try:
                return once(attempt)
            except TransientError as exc:
                if not retry_if(exc) or attempt >= policy.max_attempts:
                    log.warning(
                        "%s %s failed (%s) on attempt %d; giving up",
                        method, path, _outcome(exc), attempt,
                    )  # fmt: skip
                    raise
                delay = (
                    exc.retry_after
                    if exc.retry_after is not None
                    else policy.backoff(attempt, self._rng)
                )
                if waited + delay > policy.max_total_wait:
                    log.warning(
                        "%s %s failed (%s) on attempt %d; waiting %.2f s more would pass the "
                        "%.2f s budget; giving up",
                        method, path, _outcome(exc), attempt, delay, policy.max_total_wait,
                    )  # fmt: skip
                    raise
                log.info(
                    "%s %s failed (%s) on attempt %d; retrying in %.2f s",
                    method, path, _outcome(exc), attempt, delay,
                )  # fmt: skip
                self._sleep(delay)
                waited += delay
                self._shared.count(self._stats, retries=1, waited=delay)
                attempt += 1

    def _send(
        self,
        method: str,
        path: str,
        attempt: int,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """One HTTP exchange; a failure before Kombo answered becomes a `TransientError`."""
        headers = {}
        if path.startswith("/ats/"):
            if self.integration_id is None:
                raise ValueError(f"{path} needs an integration_id (sent as X-Integration-Id)")
            headers["X-Integration-Id"] = self.integration_id
        self._shared.count(self._stats, requests=1)
        try:
            response = self._shared.http.request(
                method, path, params=params, json=json, headers=headers
            )
        except httpx.TransportError as exc:
            kind = type(exc).__name__
            failure = _transport_failure(exc, method, path)
        else:
            log.debug("%s %s -> %d (attempt %d)", method, path, response.status_code, attempt)
            return response
        log.debug("%s %s -> %s (attempt %d)", method, path, kind, attempt)
        raise failure  # outside the except block: the httpx error (and its headers) stays behind

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        retry_if: Callable[[TransientError], bool] = _always,
    ) -> dict[str, Any]:
        def once(attempt: int) -> dict[str, Any]:
            return success_body(self._send(method, path, attempt, json=json))

        return self._retrying(method, path, once, retry_if=retry_if)

    def _iter_pages(
        self,
        path: str,
        model: type[M],
        kind: str,
        allowed: Mapping[str, Callable[[str, Any], str]],
        page_size: int,
        filters: Mapping[str, Any],
    ) -> Iterator[Page[M]]:
        """Check the arguments now (not at the first `next()`), then page lazily."""
        params = {
            "page_size": str(check_page_size(page_size)),
            **encode_filters(path, allowed, filters),
        }
        if self.integration_id is None:
            raise ValueError(f"{path} needs an integration_id (sent as X-Integration-Id)")
        return self._follow_pages(path, model, kind, params)

    def _follow_pages(
        self, path: str, model: type[M], kind: str, params: dict[str, str]
    ) -> Iterator[Page[M]]:
        """Follow `data.next` until it is null or empty, re-sending the same filters each time.

        A failed page is retried with the same cursor, so a retry never restarts the listing. With
        `send_ahead`, the next page is requested while this one is parsed (see `early_next_cursor`).
        """
        followed: set[str] = set()
        cursor: str | None = None
        ahead = SendAhead(partial(self._shared.count, self._stats, dropped=1))
        try:
            while True:
                page_params = params if cursor is None else {**params, "cursor": cursor}

                def once(
                    attempt: int, cursor: str | None = cursor, page_params: dict = page_params
                ) -> Page[M]:
                    response = ahead.take(cursor, attempt)
                    if response is None:
                        response = self._send("GET", path, attempt, params=page_params)
                    early = early_next_cursor(response) if self.send_ahead else None
                    if early is not None and early not in followed:
                        early_params = {**params, "cursor": early}
                        ahead.start(early, partial(self._send, "GET", path, 1, params=early_params))
                    return parse_page(response, model, kind)

                page = self._retrying("GET", path, once)
                yield page
                cursor = page.next_cursor
                if cursor is None:
                    return
                if cursor in followed:
                    raise PaginationLoopError(
                        f"Kombo returned a next cursor already followed in this {path} listing "
                        f"(after {len(followed) + 1} pages)"
                    )
                followed.add(cursor)
        finally:
            ahead.close()

    def iter_job_pages(
        self, *, page_size: int = MAX_PAGE_SIZE, **filters: Any
    ) -> Iterator[Page[Job]]:
        """Pages of `GET /ats/jobs`; filters as in `JOB_FILTERS`, Python values."""
        return self._iter_pages("/ats/jobs", Job, "job", JOB_FILTERS, page_size, filters)

    def iter_application_pages(
        self, *, page_size: int = MAX_PAGE_SIZE, **filters: Any
    ) -> Iterator[Page[Application]]:
        """Pages of `GET /ats/applications`; filters as in `APPLICATION_FILTERS`, Python values."""
        return self._iter_pages(
            "/ats/applications", Application, "application", APPLICATION_FILTERS, page_size, filters
        )

    def check_api_key(self) -> dict[str, Any]:
        """`GET /check-api-key`: the key's `environment_id`; raises `AuthenticationError` if bad."""
        body = self._call("GET", "/check-api-key")
        if not isinstance(body.get("data"), dict):
            raise TransientError("GET /check-api-key answered success without a data object")
        return body["data"]

    def create_application(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /ats/jobs/{job_id}/applications`: the success envelope (`data`, `warnings`).

        Retried only when Kombo certainly did nothing (`safe_to_resend`): after a 5xx or a read
        timeout the application may exist already, and a second POST would apply twice.
        """
        require_text("job_id", job_id)
        if not isinstance(body, dict):
            raise ValueError(
                f"body must be a dict (Kombo's request JSON), got {type(body).__name__}"
            )
        path = f"/ats/jobs/{quote(job_id, safe=':')}/applications"
        return self._call("POST", path, json=body, retry_if=safe_to_resend)

    def set_application_stage(self, application_id: str, stage_id: str) -> dict[str, Any]:
        """`PUT /ats/applications/{id}/stage`: the success envelope (`data`, `warnings`).

        Retried like `create_application`: the ATS may run automations on every move, so a move
        that may have happened is not sent again.
        """
        require_text("application_id", application_id)
        require_text("stage_id", stage_id)
        path = f"/ats/applications/{quote(application_id, safe='')}/stage"
        return self._call("PUT", path, json={"stage_id": stage_id}, retry_if=safe_to_resend)

    def import_tracked_application(
        self, tool_ids: Mapping[str, Any], tracked_at: datetime | str | None = None
    ) -> ImportAnswer:
        """`POST /ats/import-tracked-application`: make an existing ATS application tracked.

        `tool_ids` is `{<tool>: {"id_type": ..., <ids>}}`, checked against the spec's shapes
        before anything is sent (`ImportRowError`). An application Kombo already tracks
        (`ATS.APPLICATION_ALREADY_EXISTS`) is an answer, not an error. Retried only when Kombo
        certainly did nothing (`safe_to_resend`); any other `TransientError` reaches the caller,
        who must treat the import as possibly done.
        """
        request = request_from_tool_ids(tool_ids, tracked_at)
        try:
            body = self._call("POST", IMPORT_PATH, json=request.body(), retry_if=safe_to_resend)
        except InputInvalidError as exc:
            if exc.code != ALREADY_EXISTS:
                raise
            return ImportAnswer(status="already_tracked", note=exc.message)
        try:
            return parse_answer(body)
        except ValueError as exc:
            # Kombo acted (2xx) but the id is missing: the import is done, its id unknown.
            raise TransientError(str(exc), status_code=200) from None
