"""The one way stagewatch talks to Kombo: auth, pagination, error mapping and retries.

Retries live here and nowhere else: callers see either a page, or an error that retrying cannot fix
(or a `TransientError` once the retry budget is spent).
"""

from __future__ import annotations

import json
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from functools import cache, partial
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field, SecretStr, ValidationError

from stagewatch import __version__, jsontext
from stagewatch.errors import (
    ConnectionFailedError,
    FatalError,
    KomboError,
    PaginationLoopError,
    TransientError,
    error_from_response,
    safe_to_resend,
)
from stagewatch.models import Application, Job, KomboModel, Page, parse_records
from stagewatch.timeutil import ensure_utc, format_ts

log = logging.getLogger(__name__)

EU_BASE_URL = "https://api.kombo.dev/v1"
US_BASE_URL = "https://api.us.kombo.dev/v1"
BASE_URLS = {"eu": EU_BASE_URL, "us": US_BASE_URL}
USER_AGENT = f"stagewatch/{__version__}"

MAX_PAGE_SIZE = 250
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_INITIAL_DELAY = 0.5
DEFAULT_MAX_DELAY = 30.0
DEFAULT_MAX_TOTAL_WAIT = 120.0
DEFAULT_JITTER = 0.25

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


# Filter encoders: each turns a Python value into Kombo's query-string form or raises ValueError.
def _encode_bool(name: str, value: Any) -> str:
    if not isinstance(value, bool):
        raise ValueError(f"filter {name!r} must be a bool, got {type(value).__name__}")
    return "true" if value else "false"


def _encode_list(name: str, value: Any) -> str:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple | set | frozenset):
        raise ValueError(f"filter {name!r} must be a list of strings, got {type(value).__name__}")
    if not items:
        raise ValueError(
            f"filter {name!r} is an empty list; Kombo would read it as 'no filter' and return all"
        )
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"filter {name!r} must hold non-empty strings, got {item!r}")
        if "," in item:
            raise ValueError(f"filter {name!r}: value {item!r} contains a comma, Kombo's separator")
    return ",".join(sorted(items) if isinstance(items, set | frozenset) else items)


def _encode_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"filter {name!r} must be a non-empty string, got {value!r}")
    return value


def _encode_time(name: str, value: Any) -> str:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    raise ValueError(f"filter {name!r} must be a datetime or a date, got {type(value).__name__}")


_COMMON_FILTERS: dict[str, Callable[[str, Any], str]] = {
    "updated_after": _encode_time,
    "include_deleted": _encode_bool,
    "ignore_unsupported_filters": _encode_bool,
    "ids": _encode_list,
    "remote_ids": _encode_list,
    "remote_created_after": _encode_time,
}
JOB_FILTERS: dict[str, Callable[[str, Any], str]] = {
    **_COMMON_FILTERS,
    "job_codes": _encode_list,
    "post_url": _encode_str,
    "status": _encode_str,  # deprecated by Kombo in favour of `statuses`
    "statuses": _encode_list,
    "employment_types": _encode_list,
    "visibilities": _encode_list,
    "name_contains": _encode_str,
}
APPLICATION_FILTERS: dict[str, Callable[[str, Any], str]] = {
    **_COMMON_FILTERS,
    "outcome": _encode_str,  # deprecated by Kombo in favour of `outcomes`
    "outcomes": _encode_list,
    "job_ids": _encode_list,
    "job_remote_ids": _encode_list,
    "current_stage_ids": _encode_list,
}


def encode_filters(
    endpoint: str, allowed: Mapping[str, Callable[[str, Any], str]], filters: Mapping[str, Any]
) -> dict[str, str]:
    """Kombo's query parameters for `filters`; a filter set to None is left out."""
    params: dict[str, str] = {}
    for name, value in filters.items():
        encoder = allowed.get(name)
        if encoder is None:
            raise ValueError(
                f"unknown filter {name!r} for {endpoint}; known: {', '.join(sorted(allowed))}"
            )
        if value is not None:
            params[name] = encoder(name, value)
    return params


def _require_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _check_page_size(page_size: Any) -> int:
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise ValueError(f"page_size must be an int from 1 to {MAX_PAGE_SIZE}, got {page_size!r}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}, got {page_size}")
    return page_size


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


def _success_body(response: httpx.Response) -> dict[str, Any]:
    """The success envelope of a 2xx response, or the error it stands for."""
    if not response.is_success:
        raise error_from_response(response)
    try:
        body = jsontext.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        raise TransientError(
            "the body is not JSON",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from None
    if isinstance(body, dict) and body.get("status") == "error":
        raise error_from_response(response)
    if not isinstance(body, dict) or body.get("status") != "success":
        raise TransientError(
            "the body is not Kombo's success envelope",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
        )
    return body


class _ListData(BaseModel, Generic[M]):
    next: str | None
    results: list[M]


class _ListEnvelope(BaseModel, Generic[M]):
    """Kombo's listing envelope, validated straight from the response bytes on the fast path."""

    status: Literal["success"]
    data: _ListData[M]


@cache
def _ssl_context() -> ssl.SSLContext:
    """httpx's default context, built once: building it (loading the CA bundle) takes about 50 ms
    of CPU, paid by every integration of a many-integration run otherwise."""
    return httpx.create_ssl_context()


def served_at(response: httpx.Response) -> datetime | None:
    """When Kombo answered, by its `Date` header: watermarks follow Kombo's clock, not ours (the
    simulator's is simulated time, far from ours). None without a readable header."""
    date_header = response.headers.get("date")
    if not date_header:
        return None
    try:
        return ensure_utc(parsedate_to_datetime(date_header))
    except (TypeError, ValueError):
        return None


@cache
def _envelope_model(model: type[M]) -> type[_ListEnvelope[M]]:
    return _ListEnvelope[model]  # type: ignore[valid-type]


def parse_page(response: httpx.Response, model: type[M], kind: str) -> Page[M]:
    """One listing response as a `Page`: bad records are quarantined, the others kept.

    The whole page is validated from the raw bytes in one call; only a page that fails that (a bad
    record, an error body, broken JSON) takes the slow path, record by record.
    """
    if not response.is_success:
        raise error_from_response(response)
    if jsontext.has_surrogate_escape(response.content):
        return _parse_page_per_record(response, model, kind)
    try:
        envelope = _envelope_model(model).model_validate_json(response.content)
    except ValidationError:
        return _parse_page_per_record(response, model, kind)
    return Page[model].model_construct(  # type: ignore[valid-type]
        records=envelope.data.results,
        quarantined=[],
        next_cursor=envelope.data.next or None,
        served_at=served_at(response),
    )


def _parse_page_per_record(response: httpx.Response, model: type[M], kind: str) -> Page[M]:
    data = _success_body(response).get("data")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("results"), list)
        or "next" not in data
        or not isinstance(data["next"], str | None)
    ):
        raise TransientError(
            "the listing's data is not {next, results: [...]}",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
        )
    records, quarantined = parse_records(model, data["results"], kind)
    return Page[model].model_construct(  # type: ignore[valid-type]
        records=records,
        quarantined=quarantined,
        next_cursor=data["next"] or None,
        served_at=served_at(response),
    )


# A listing's next cursor read off the raw bytes, before the page is parsed, so that the next request
# is in flight while this page is parsed. An unescaped `"next"` followed by `:` can only be an object
# key, so a body holding it once holds only the envelope's; with two (a record with a `next` field),
# nothing is read early. The parsed page must agree, or the early request is dropped (see _SendAhead).
_NEXT_KEY = re.compile(rb'"next"\s*:\s*')
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def early_next_cursor(response: httpx.Response) -> str | None:
    """The listing's non-empty `data.next` if the raw body shows it unambiguously, else None."""
    if not response.is_success:
        return None
    content = response.content
    key = _NEXT_KEY.search(content)
    if key is None or _NEXT_KEY.search(content, key.end()) is not None:
        return None
    value = _JSON_STRING.match(content, key.end())
    if value is None:  # null, or not a string: no next page, or a body the parser will refuse
        return None
    try:
        cursor = json.loads(value.group())
    except ValueError:
        return None
    return cursor or None


class _SendAhead:
    """At most one early request per listing: the next page's first attempt, sent from a worker
    thread while this page is parsed. Kombo never sees two requests of one listing at once: a
    request that will not be used is waited for (and dropped) before any other is sent."""

    def __init__(self, on_drop: Callable[[], None]) -> None:
        self._on_drop = on_drop
        self._pool: ThreadPoolExecutor | None = None
        self._cursor: str | None = None
        self._pending: Future[httpx.Response] | None = None

    def start(self, cursor: str, send: Callable[[], httpx.Response]) -> None:
        self.discard()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="stagewatch-send-ahead")
        self._cursor, self._pending = cursor, self._pool.submit(send)

    def take(self, cursor: str | None, attempt: int) -> httpx.Response | None:
        """The early response for the first attempt at `cursor` (raising as its send raised), or
        None (after dropping a request sent for anything else)."""
        if self._pending is None or attempt != 1 or cursor is None or cursor != self._cursor:
            self.discard()
            return None
        pending, self._pending, self._cursor = self._pending, None, None
        return pending.result()

    def discard(self) -> None:
        pending, self._pending, self._cursor = self._pending, None, None
        if pending is None:
            return
        self._on_drop()
        try:
            pending.result()
        except Exception as exc:  # the page is requested again, so its failure is not an error
            log.debug("dropped an early request that failed (%s)", type(exc).__name__)

    def close(self) -> None:
        self.discard()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


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
            _require_text("integration_id", integration_id)
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
        _require_text("integration_id", integration_id)
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
            return _success_body(self._send(method, path, attempt, json=json))

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
            "page_size": str(_check_page_size(page_size)),
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
        ahead = _SendAhead(partial(self._shared.count, self._stats, dropped=1))
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
        _require_text("job_id", job_id)
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
        _require_text("application_id", application_id)
        _require_text("stage_id", stage_id)
        path = f"/ats/applications/{quote(application_id, safe='')}/stage"
        return self._call("PUT", path, json={"stage_id": stage_id}, retry_if=safe_to_resend)
