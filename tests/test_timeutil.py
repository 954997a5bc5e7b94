"""Timestamps as Kombo writes them: UTC, milliseconds, `Z`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from stagewatch.timeutil import format_ts, parse_ts


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC), "2026-01-05T10:00:00.123Z"),
        (
            datetime(2026, 1, 5, 10, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-05T08:00:00.000Z",
        ),
        (datetime(2026, 1, 5, 10, 0), "2026-01-05T10:00:00.000Z"),  # naive: taken as UTC
        (datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "2026-12-31T23:59:59.999Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000Z"),
    ],
)
def test_format_ts_writes_utc_milliseconds_and_z(value, text):
    assert format_ts(value) == text


@pytest.mark.parametrize(
    "text", ["2026-01-05T10:00:00.5Z", "2026-01-05T12:00:00.500+02:00", "2026-01-05T10:00:00.500"]
)
def test_parse_then_format_normalises_every_form_kombo_may_send(text):
    assert format_ts(parse_ts(text)) == "2026-01-05T10:00:00.500Z"
