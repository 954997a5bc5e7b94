import json
import pickle

import httpx
import pytest

from stagewatch.kombo.errors import (
    AuthenticationError,
    ConnectionFailedError,
    FatalError,
    InputInvalidError,
    IntegrationInactiveError,
    IntegrationNotFoundError,
    KomboError,
    NotReadyError,
    PaginationLoopError,
    PermissionDeniedError,
    RateLimitError,
    TransientError,
    UnsupportedError,
    error_from_response,
    retry_after_seconds,
    safe_to_resend,
)
from tests.spec import load_spec


def envelope(code, message="went wrong", title=None, log_url=None):
    return {
        "status": "error",
        "error": {"code": code, "title": title, "message": message, "log_url": log_url},
    }


def response(status, body=None, *, content=None, headers=None):
    if body is not None:
        content = json.dumps(body).encode()
    return httpx.Response(status, content=content or b"", headers=headers or {})


def spec_error_examples():
    spec = load_spec()
    examples = spec["components"]["responses"]["ErrorResponseATS"]["content"]["application/json"]
    return {name: ex["value"] for name, ex in examples["examples"].items()}


# (status, code) -> class. Kombo says to branch on the code, so a known code wins over the status.
BY_CODE = [
    (429, "PLATFORM.RATE_LIMIT_EXCEEDED", RateLimitError),
    (429, "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED", RateLimitError),
    (429, "REMOTE.RATE_LIMIT_EXCEEDED", RateLimitError),
    (503, "REMOTE.SERVICE_UNAVAILABLE", TransientError),
    (500, "PLATFORM.UNKNOWN_ERROR", TransientError),
    (504, "PLATFORM.TASK_TIMED_OUT", TransientError),
    (502, "REMOTE.UNKNOWN_HTTP_ERROR", TransientError),
    (409, "INTEGRATION.SETUP_SYNC_PENDING", NotReadyError),
    (409, "INTEGRATION.SETUP_INCOMPLETE", NotReadyError),
    (409, "INTEGRATION.QA_FAILED", NotReadyError),
    (503, "INTEGRATION.SETUP_SYNC_PENDING", NotReadyError),  # before 2026-05-19 this was a 503
    (503, "INTEGRATION.QA_FAILED", NotReadyError),
    (400, "INTEGRATION.MODEL_NOT_AVAILABLE", UnsupportedError),
    (400, "INTEGRATION.MODEL_DISABLED", UnsupportedError),
    (400, "INTEGRATION.ACTION_NOT_AVAILABLE", UnsupportedError),
    (400, "INTEGRATION.ACTION_DISABLED", UnsupportedError),
    (401, "PLATFORM.AUTHENTICATION_INVALID", AuthenticationError),
    (401, "INTEGRATION.AUTHENTICATION_INVALID", AuthenticationError),
    (403, "INTEGRATION.PERMISSION_MISSING", PermissionDeniedError),
    (403, "PLATFORM.IP_NOT_WHITELISTED", PermissionDeniedError),
    (404, "PLATFORM.INTEGRATION_NOT_FOUND", IntegrationNotFoundError),
    (403, "INTEGRATION.INACTIVE", IntegrationInactiveError),
    (503, "INTEGRATION.INACTIVE", IntegrationInactiveError),  # a 5xx status does not make it retry
    (400, "PLATFORM.INPUT_INVALID", InputInvalidError),
    (400, "REMOTE.INPUT_INVALID", InputInvalidError),
    (500, "PLATFORM.AUTHENTICATION_INVALID", AuthenticationError),
    (400, "ATS.JOB_CLOSED", InputInvalidError),
    (409, "ATS.APPLICATION_ALREADY_EXISTS", InputInvalidError),
    (200, "INTEGRATION.SETUP_SYNC_PENDING", NotReadyError),  # a 200 whose body is an error
]


@pytest.mark.parametrize(("status", "code", "cls"), BY_CODE)
def test_known_codes_map_to_their_family_whatever_the_status(status, code, cls):
    error = error_from_response(
        response(status, envelope(code, "text", "Title", "https://app.kombo.dev/logs/1"))
    )
    assert type(error) is cls
    assert (error.code, error.title, error.message, error.log_url, error.status_code) == (
        code,
        "Title",
        "text",
        "https://app.kombo.dev/logs/1",
        status,
    )


def test_every_code_in_the_spec_is_mapped_to_a_family_and_none_is_left_generic():
    spec = load_spec()
    schema = spec["components"]["responses"]["ErrorResponseATS"]["content"]["application/json"]
    codes = [c for c in schema["schema"]["properties"]["error"]["properties"]["code"]["enum"] if c]
    assert len(codes) == 24
    mapped = {code: type(error_from_response(response(418, envelope(code)))) for code in codes}
    assert {code for code, cls in mapped.items() if cls in (KomboError, FatalError)} == set()
    assert sorted(c for c, cls in mapped.items() if issubclass(cls, TransientError)) == [
        "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED",
        "PLATFORM.RATE_LIMIT_EXCEEDED",
        "PLATFORM.TASK_TIMED_OUT",
        "PLATFORM.UNKNOWN_ERROR",
        "REMOTE.RATE_LIMIT_EXCEEDED",
        "REMOTE.SERVICE_UNAVAILABLE",
        "REMOTE.UNKNOWN_HTTP_ERROR",
    ]


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InputInvalidError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, IntegrationNotFoundError),
        (408, TransientError),
        (409, FatalError),
        (418, FatalError),
        (422, InputInvalidError),
        (429, RateLimitError),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (599, TransientError),
    ],
)
def test_an_unknown_or_missing_code_falls_back_to_the_status(status, cls):
    assert type(error_from_response(response(status, envelope(None, "m")))) is cls
    assert type(error_from_response(response(status, envelope("PLATFORM.NEW_CODE", "m")))) is cls


def test_html_500_is_transient_with_a_clear_message():
    error = error_from_response(
        response(500, content=b"<html><body>Internal Server Error</body></html>")
    )
    assert type(error) is TransientError
    assert str(error) == "HTTP 500: the body is not Kombo's JSON envelope"
    assert (error.code, error.retry_after) == (None, None)


def test_empty_502_is_transient():
    error = error_from_response(response(502, content=b""))
    assert type(error) is TransientError
    assert str(error) == "HTTP 502: the body is empty"


def test_503_envelope_with_service_unavailable_is_transient_and_ignores_ratelimit_reset():
    error = error_from_response(
        response(
            503,
            envelope("REMOTE.SERVICE_UNAVAILABLE", "ATS down"),
            headers={"ratelimit-reset": "57"},
        )
    )
    assert type(error) is TransientError
    assert error.retry_after is None


def test_503_honours_retry_after_when_given():
    error = error_from_response(response(503, content=b"busy", headers={"Retry-After": "12"}))
    assert (type(error), error.retry_after) == (TransientError, 12.0)


def test_429_with_retry_after_prefers_it_over_ratelimit_reset():
    headers = {"Retry-After": "7", "ratelimit-reset": "57"}
    error = error_from_response(
        response(429, envelope("PLATFORM.RATE_LIMIT_EXCEEDED"), headers=headers)
    )
    assert (type(error), error.retry_after) == (RateLimitError, 7.0)


def test_429_without_retry_after_falls_back_to_ratelimit_reset():
    headers = {"ratelimit-limit": "300", "ratelimit-remaining": "0", "ratelimit-reset": "57"}
    error = error_from_response(
        response(429, envelope("PLATFORM.RATE_LIMIT_EXCEEDED"), headers=headers)
    )
    assert (type(error), error.retry_after) == (RateLimitError, 57.0)


def test_429_without_envelope_or_headers_is_a_rate_limit_with_no_wait_named():
    error = error_from_response(response(429, content=b"Too Many Requests"))
    assert (type(error), error.retry_after, error.message) == (
        RateLimitError,
        None,
        "the body is not Kombo's JSON envelope",
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "3.5"}, 3.5),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT", "ratelimit-reset": "9"}, 9.0),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "nan"}, None),
        ({"ratelimit-reset": "inf"}, None),
        ({"ratelimit-reset": "0"}, 0.0),
    ],
)
def test_retry_after_seconds_reads_only_sane_values(headers, expected):
    assert retry_after_seconds(httpx.Headers(headers)) == expected


def test_envelope_with_all_fields_null_still_says_what_happened():
    error = error_from_response(
        response(
            500,
            {
                "status": "error",
                "error": {"code": None, "title": None, "message": None, "log_url": None},
            },
        )
    )
    assert type(error) is TransientError
    assert str(error) == "HTTP 500: Kombo's error envelope has no message"


def test_envelope_with_blank_message_uses_the_title():
    error = error_from_response(
        response(400, envelope("PLATFORM.INPUT_INVALID", message="  ", title="Invalid input"))
    )
    assert error.message == "Invalid input"


def test_spec_error_examples_map_with_all_their_fields():
    examples = spec_error_examples()
    full = error_from_response(
        response(400, examples["Error Response"], headers={"x-request-id": "req_1"})
    )
    assert type(full) is UnsupportedError
    assert str(full) == (
        'INTEGRATION.MODEL_NOT_AVAILABLE (HTTP 400): The "employees" model is not yet available '
        "for Greenhouse. Please reach out to Kombo if you need this functionality. [request req_1] "
        "(log: https://app.kombo.dev/my-prod/logs?interactionId=123456)"
    )
    assert full.title == "This data model isn't supported for the selected integration."
    minimal = error_from_response(response(400, examples["Minimal Error Response"]))
    assert type(minimal) is InputInvalidError
    assert str(minimal) == "HTTP 400: The message is always in the response."


@pytest.mark.parametrize(
    ("status", "content"),
    [
        (200, b"<html>maintenance</html>"),
        (200, b""),
        (200, b'{"status": "error"}'),
        (200, b'{"status": "error", "error": null}'),
    ],
)
def test_a_2xx_that_is_no_envelope_is_transient(status, content):
    assert type(error_from_response(response(status, content=content))) is TransientError


def test_non_envelope_4xx_maps_by_status():
    error = error_from_response(response(401, content=b"Unauthorized"))
    assert type(error) is AuthenticationError
    assert str(error) == "HTTP 401: the body is not Kombo's JSON envelope"


ALL_FIELDS = {
    "code": "PLATFORM.RATE_LIMIT_EXCEEDED",
    "title": "Rate limit",
    "log_url": "https://app.kombo.dev/logs/9",
    "status_code": 429,
    "request_id": "req_9",
}


@pytest.mark.parametrize(
    "error",
    [
        KomboError("m", **ALL_FIELDS),
        TransientError("m", retry_after=2.5, **ALL_FIELDS),
        RateLimitError("m", retry_after=57.0, **ALL_FIELDS),
        ConnectionFailedError("ConnectError on GET /ats/jobs: Kombo could not be reached"),
        NotReadyError("m", **ALL_FIELDS),
        UnsupportedError("m", **ALL_FIELDS),
        FatalError("m", **ALL_FIELDS),
        AuthenticationError("m", **ALL_FIELDS),
        PermissionDeniedError("m", **ALL_FIELDS),
        IntegrationNotFoundError("m", **ALL_FIELDS),
        IntegrationInactiveError("m", **ALL_FIELDS),
        InputInvalidError("m", **ALL_FIELDS),
        PaginationLoopError("loop"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling_with_every_field(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)


def test_a_mapped_error_survives_pickling_with_retry_after():
    error = error_from_response(
        response(429, envelope("PLATFORM.RATE_LIMIT_EXCEEDED"), headers={"ratelimit-reset": "57"})
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.retry_after, copy.code, copy.status_code) == (
        RateLimitError,
        57.0,
        "PLATFORM.RATE_LIMIT_EXCEEDED",
        429,
    )


def test_str_of_an_error_with_only_a_message_is_the_message():
    assert str(FatalError("plain")) == "plain"


@pytest.mark.parametrize(
    ("error", "safe"),
    [
        (ConnectionFailedError("ConnectError on POST /x"), True),
        (RateLimitError("m", code="PLATFORM.RATE_LIMIT_EXCEEDED", status_code=429), True),
        (RateLimitError("m", code="PLATFORM.CONCURRENCY_LIMIT_EXCEEDED", status_code=429), True),
        (RateLimitError("m", status_code=429), True),
        (RateLimitError("m", code="REMOTE.RATE_LIMIT_EXCEEDED", status_code=429), False),
        (TransientError("m", status_code=500), False),
        (TransientError("m", code="REMOTE.SERVICE_UNAVAILABLE", status_code=503), False),
        (TransientError("ReadTimeout on POST /x"), False),
    ],
)
def test_only_calls_kombo_certainly_did_not_act_on_are_safe_to_resend(error, safe):
    assert safe_to_resend(error) is safe
