"""JSON from Kombo, decoded so that every string can be written as UTF-8.

An ATS that cuts a name inside an emoji (a UTF-16 length limit) sends half a surrogate pair, which
JSON allows as an escape (`"\\ud83d"`) and Python decodes to a string that SQLite, logs and Prefect
cannot encode. Such halves become U+FFFD here, where bytes become Python objects, so the record is
kept (with its stage and outcome) instead of crashing the run or being dropped on every listing.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def has_surrogate_escape(content: bytes) -> bool:
    """Whether the body may decode to a lone surrogate (a pair also matches: the check is cheap)."""
    return _SURROGATE_ESCAPE.search(content) is not None


def _scrub_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def scrub(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, list):
        return [scrub(item) for item in value]
    if isinstance(value, dict):
        return {scrub(key): scrub(item) for key, item in value.items()}
    return value


def loads(content: bytes) -> Any:
    """`json.loads`, with lone surrogates replaced; raises ValueError/UnicodeDecodeError as it does."""
    value = json.loads(content)
    return scrub(value) if has_surrogate_escape(content) else value
