"""Kombo's errors as a small hierarchy, mapped from responses in exactly one place.

Callers branch on the family (`TransientError`, `NotReadyError`, `UnsupportedError`, `FatalError`),
never on message text or HTTP status: Kombo tells clients to branch on `error.code`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

NOT_READY_CODES = frozenset(
    {
        "INTEGRATION.SETUP_SYNC_PENDING",
        "INTEGRATION.SETUP_INCOMPLETE",
        "INTEGRATION.QA_FAILED",
    }
)
UNSUPPORTED_CODES = frozenset({"INTEGRATION.MODEL_NOT_AVAILABLE", "INTEGRATION.MODEL_DISABLED"})
TRANSIENT_CODES = frozenset(
    {
        "PLATFORM.RATE_LIMIT_EXCEEDED",
        "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED",
        "REMOTE.RATE_LIMIT_EXCEEDED",
        "REMOTE.SERVICE_UNAVAILABLE",
    }
)


class StagewatchError(Exception):
    """Base of every error stagewatch raises on purpose."""


class KomboError(StagewatchError):
    """An error answered by Kombo (or by something in front of it)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        title: str | None = None,
        log_url: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.code = code
        self.title = title
        self.log_url = log_url
        self.status_code = status_code
        self.request_id = request_id
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.code or f"HTTP {self.status_code}" if self.status_code else self.code or ""]
        head = " ".join(p for p in parts if p)
        text = f"{head}: {self.message}" if head else self.message
        if self.log_url:
            text += f" (log: {self.log_url})"
        return text

    def __reduce__(self):  # keep keyword fields across pickling (Prefect persists exceptions)
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "code": self.code,
                    "title": self.title,
                    "log_url": self.log_url,
                    "status_code": self.status_code,
                    "request_id": self.request_id,
                },
            ),
        )


def _rebuild(cls, message, kwargs):
    return cls(message, **kwargs)


class TransientError(KomboError):
    """Worth retrying: rate limits, 5xx, timeouts, connection errors, a body that is not JSON."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class RateLimitError(TransientError):
    pass


class NotReadyError(KomboError):
    """The integration's first sync has not finished: 'not ready yet', not 'no data'."""


class UnsupportedError(KomboError):
    """The connected ATS does not offer this model; the integration is tracked for what it has."""


class FatalError(KomboError):
    """Retrying cannot fix it: authentication, permission, unknown integration, invalid input."""


class AuthenticationError(FatalError):
    pass


class PermissionDeniedError(FatalError):
    pass


class IntegrationNotFoundError(FatalError):
    pass


class InputInvalidError(FatalError):
    pass


class PaginationLoopError(FatalError):
    """Kombo returned a `next` cursor we already followed in this listing."""


FATAL_BY_CODE: dict[str, type[FatalError]] = {
    "PLATFORM.AUTHENTICATION_INVALID": AuthenticationError,
    "INTEGRATION.AUTHENTICATION_INVALID": AuthenticationError,
    "INTEGRATION.PERMISSION_MISSING": PermissionDeniedError,
    "PLATFORM.IP_NOT_WHITELISTED": PermissionDeniedError,
    "PLATFORM.INTEGRATION_NOT_FOUND": IntegrationNotFoundError,
    "PLATFORM.INPUT_INVALID": InputInvalidError,
    "REMOTE.INPUT_INVALID": InputInvalidError,
}
FATAL_BY_STATUS: dict[int, type[FatalError]] = {
    400: InputInvalidError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: IntegrationNotFoundError,
}


def _float_header(headers: httpx.Headers, name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """`Retry-After` (seconds) when present, else `ratelimit-reset`, else None."""
    retry_after = _float_header(headers, "retry-after")
    if retry_after is not None:
        return retry_after
    return _float_header(headers, "ratelimit-reset")


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    if (
        isinstance(body, dict)
        and body.get("status") == "error"
        and isinstance(body.get("error"), dict)
    ):
        return body["error"]
    return None


def error_from_response(response: httpx.Response) -> KomboError:
    """Map any non-success response (or a 200 with `status: "error"`) to one error class."""
    status = response.status_code
    error = _envelope(response)
    request_id = response.headers.get("x-request-id")
    retry_after = retry_after_seconds(response.headers)
    if error is not None:
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") if isinstance(error.get("message"), str) else None
        fields = {
            "code": code,
            "title": error.get("title") if isinstance(error.get("title"), str) else None,
            "log_url": error.get("log_url") if isinstance(error.get("log_url"), str) else None,
            "status_code": status,
            "request_id": request_id,
        }
        message = message or fields["title"] or f"Kombo answered HTTP {status} without a message"
        if code in TRANSIENT_CODES or status == 429:
            return RateLimitError(message, retry_after=retry_after, **fields)
        if code in NOT_READY_CODES:
            return NotReadyError(message, **fields)
        if code in UNSUPPORTED_CODES:
            return UnsupportedError(message, **fields)
        if code in FATAL_BY_CODE:
            return FATAL_BY_CODE[code](message, **fields)
        if status >= 500 or code in {
            "PLATFORM.UNKNOWN_ERROR",
            "PLATFORM.TASK_TIMED_OUT",
            "REMOTE.UNKNOWN_HTTP_ERROR",
        }:
            return TransientError(message, retry_after=retry_after, **fields)
        return FATAL_BY_STATUS.get(status, FatalError)(message, **fields)
    # Not Kombo's envelope: a load balancer's HTML, plain text, an empty body, or broken JSON.
    fields = {"status_code": status, "request_id": request_id}
    if status == 429:
        return RateLimitError("rate limited (no error envelope)", retry_after=retry_after, **fields)
    if status >= 500 or status == 200:
        kind = "an empty body" if not response.content else "a body that is not Kombo's JSON"
        return TransientError(f"HTTP {status} with {kind}", retry_after=retry_after, **fields)
    return FATAL_BY_STATUS.get(status, FatalError)(
        f"HTTP {status} with a body that is not Kombo's error envelope", **fields
    )
