"""Kombo's query filters: Python values in, the query-string form Kombo documents out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from stagewatch.timeutil import format_ts

MAX_PAGE_SIZE = 250


# Each encoder turns a Python value into Kombo's query-string form or raises ValueError.
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


def require_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def check_page_size(page_size: Any) -> int:
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise ValueError(f"page_size must be an int from 1 to {MAX_PAGE_SIZE}, got {page_size!r}")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}, got {page_size}")
    return page_size
