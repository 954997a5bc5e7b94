"""One listing page at a time: the response envelope, its records, its cursor and its date.

Besides parsing, this reads a page's next cursor off the raw bytes (`early_next_cursor`) so the
next request can go out while this page is parsed (`SendAhead`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any, Generic, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from stagewatch.kombo import jsontext
from stagewatch.kombo.errors import TransientError, error_from_response
from stagewatch.kombo.models import KomboModel, Page, parse_records
from stagewatch.timeutil import ensure_utc

log = logging.getLogger(__name__)

M = TypeVar("M", bound=KomboModel)


def success_body(response: httpx.Response) -> dict[str, Any]:
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
    data = success_body(response).get("data")
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


class SendAhead:
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
