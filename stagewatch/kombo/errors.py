"""Kombo's errors as a small hierarchy, mapped from responses in exactly one place.

Callers branch on the family (`TransientError`, `NotReadyError`, `UnsupportedError`, `FatalError`),
never on message text or HTTP status: Kombo tells clients to branch on `error.code`, so a known code
decides the class whatever the status; the status decides only when the code is missing or unknown.
"""

from __future__ import annotations

from typing import Any

import httpx

from stagewatch.errors import StagewatchError
from stagewatch.kombo import jsontext

NOT_READY_CODES = frozenset(
    {
        "INTEGRATION.SETUP_SYNC_PENDING",
        "INTEGRATION.SETUP_INCOMPLETE",
        "INTEGRATION.QA_FAILED",
    }
)
UNSUPPORTED_CODES = frozenset(
    {
        "INTEGRATION.MODEL_NOT_AVAILABLE",
        "INTEGRATION.MODEL_DISABLED",
        "INTEGRATION.ACTION_NOT_AVAILABLE",
        "INTEGRATION.ACTION_DISABLED",
    }
)
RATE_LIMIT_CODES = frozenset(
    {
        "PLATFORM.RATE_LIMIT_EXCEEDED",
        "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED",
        "REMOTE.RATE_LIMIT_EXCEEDED",
    }
)
# Kombo refused these before acting on the call, so even a write may be sent again.
REFUSED_CODES = frozenset({"PLATFORM.RATE_LIMIT_EXCEEDED", "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED"})
TRANSIENT_CODES = RATE_LIMIT_CODES | {
    "REMOTE.SERVICE_UNAVAILABLE",
    "PLATFORM.UNKNOWN_ERROR",
    "PLATFORM.TASK_TIMED_OUT",
    "REMOTE.UNKNOWN_HTTP_ERROR",
}
TRANSIENT_STATUSES = frozenset({408, 429})


class KomboError(StagewatchError):
    """An error answered by Kombo (or by something in front of it), or a failure to reach it."""

    # The status a sync run ends with when this error stops its listing (`Store.fail_run`).
    run_status = "failed"

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
        super().__init__(message)

    def __str__(self) -> str:
        status = f"HTTP {self.status_code}" if self.status_code is not None else None
        head = f"{self.code} ({status})" if self.code and status else self.code or status
        text = f"{head}: {self.message}" if head else self.message
        if self.request_id:
            text += f" [request {self.request_id}]"
        if self.log_url:
            text += f" (log: {self.log_url})"
        return text

    def _fields(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "title": self.title,
            "log_url": self.log_url,
            "status_code": self.status_code,
            "request_id": self.request_id,
        }

    def __reduce__(self):  # keep keyword fields across pickling (Prefect persists exceptions)
        return (_rebuild, (type(self), self.message, self._fields()))


def _rebuild(cls, message, kwargs):
    return cls(message, **kwargs)


class TransientError(KomboError):
    """Worth retrying: rate limits, 5xx, timeouts, connection errors, a body that is not JSON.

    `retry_after` is the wait in seconds the server asked for, or None when it named none.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "retry_after": self.retry_after}


class RateLimitError(TransientError):
    """Kombo or the ATS behind it throttled the call."""


class ConnectionFailedError(TransientError):
    """Kombo was never reached (connect failure or timeout), so nothing was sent."""


def safe_to_resend(error: TransientError) -> bool:
    """Whether a write that failed this way certainly had no effect, so sending it again is safe."""
    if isinstance(error, ConnectionFailedError):
        return True
    if error.code is None:
        return error.status_code == 429  # a throttling proxy in front of Kombo refused it
    return error.code in REFUSED_CODES


class NotReadyError(KomboError):
    """The integration's first sync has not finished: 'not ready yet', not 'no data'."""

    run_status = "not_ready"


class UnsupportedError(KomboError):
    """The connected ATS does not offer this model; the integration is tracked for what it has."""

    run_status = "unsupported"


class FatalError(KomboError):
    """Retrying cannot fix it: authentication, permission, unknown integration, invalid input."""


class AuthenticationError(FatalError):
    pass


class PermissionDeniedError(FatalError):
    pass


class IntegrationNotFoundError(FatalError):
    pass


class IntegrationInactiveError(FatalError):
    """The integration was deactivated in Kombo; it needs a human, not a retry."""


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
    "INTEGRATION.INACTIVE": IntegrationInactiveError,
    "PLATFORM.INPUT_INVALID": InputInvalidError,
    "REMOTE.INPUT_INVALID": InputInvalidError,
    "ATS.JOB_CLOSED": InputInvalidError,
    "ATS.APPLICATION_ALREADY_EXISTS": InputInvalidError,
}
FATAL_BY_STATUS: dict[int, type[FatalError]] = {
    400: InputInvalidError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: IntegrationNotFoundError,
    422: InputInvalidError,
}


def _float_header(headers: httpx.Headers, name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """`Retry-After` (seconds) when present, else `ratelimit-reset`, else None.

    Only for rate-limit answers: Kombo sends `ratelimit-reset` on every response, where it says when
    the quota window resets, not how long to wait after a 5xx.
    """
    retry_after = _float_header(headers, "retry-after")
    if retry_after is not None:
        return retry_after
    return _float_header(headers, "ratelimit-reset")


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    """The `error` object of Kombo's error envelope, or None when the body is something else."""
    try:
        body = jsontext.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    if (
        isinstance(body, dict)
        and body.get("status") == "error"
        and isinstance(body.get("error"), dict)
    ):
        return body["error"]
    return None


def _text(error: dict[str, Any], key: str) -> str | None:
    value = error.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _class_for(code: str | None, status: int) -> type[KomboError]:
    if code in RATE_LIMIT_CODES:
        return RateLimitError
    if code in TRANSIENT_CODES:
        return TransientError
    if code in NOT_READY_CODES:
        return NotReadyError
    if code in UNSUPPORTED_CODES:
        return UnsupportedError
    if code in FATAL_BY_CODE:
        return FATAL_BY_CODE[code]
    if status == 429:
        return RateLimitError
    if status >= 500 or status in TRANSIENT_STATUSES:
        return TransientError
    return FATAL_BY_STATUS.get(status, FatalError)


def error_from_response(response: httpx.Response) -> KomboError:
    """Map any non-success response (or a 200 whose body is not a success) to one error class."""
    status = response.status_code
    error = _envelope(response)
    fields: dict[str, Any] = {
        "status_code": status,
        "request_id": response.headers.get("x-request-id"),
    }
    if error is not None:
        code = _text(error, "code")
        fields.update(code=code, title=_text(error, "title"), log_url=_text(error, "log_url"))
        message = (
            _text(error, "message") or fields["title"] or "Kombo's error envelope has no message"
        )
        cls = _class_for(code, status)
    else:
        # A load balancer's HTML, plain text, an empty body, broken JSON; or a 2xx that is neither
        # an error nor a success envelope.
        message = (
            "the body is empty" if not response.content else "the body is not Kombo's JSON envelope"
        )
        cls = TransientError if response.is_success else _class_for(None, status)
    if cls is RateLimitError:
        return RateLimitError(message, retry_after=retry_after_seconds(response.headers), **fields)
    if issubclass(cls, TransientError):
        return cls(message, retry_after=_float_header(response.headers, "retry-after"), **fields)
    return cls(message, **fields)
