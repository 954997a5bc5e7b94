"""The events table artifact: a run's change-log rows as the data Prefect shows in a table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import islice
from typing import Any

from stagewatch.diff import EVENT_FIELDS
from stagewatch.timeutil import format_ts

DEFAULT_TABLE_CAP = 500


def event_table(
    events: Iterable[Mapping[str, Any]], *, cap: int = DEFAULT_TABLE_CAP
) -> list[dict[str, Any]]:
    """The machine-readable table artifact: the first `cap` change-log rows with their public
    fields. Values stay raw (the table is data, rendered as text by the UI), timestamps in
    Kombo's format."""
    return [
        {
            field: format_ts(value) if isinstance(value, datetime) else value
            for field in EVENT_FIELDS
            for value in [event.get(field)]
        }
        for event in islice(events, cap)
    ]
