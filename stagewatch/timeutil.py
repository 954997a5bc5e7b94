"""Kombo's timestamp format, in one place.

Kombo answers with ISO-8601 UTC and milliseconds (`2022-08-07T14:01:29.196Z`) and its `updated_after`
filter rejects offsets, so every timestamp we send or store goes through `format_ts`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_ts(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.sssZ`, the only form Kombo documents for `updated_after`."""
    if value.tzinfo is not UTC:
        value = ensure_utc(value)
    # Staging formats six stamps per record: isoformat (C) and swapping its "+00:00" for Kombo's
    # `Z` costs half of strftime. It also pads years to four digits, so stamps sort as text.
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_ts(text: str) -> datetime:
    """Parse Kombo's timestamps, tolerating missing milliseconds and explicit offsets."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    parsed = datetime.fromisoformat(cleaned)
    return ensure_utc(parsed)
