"""What a sync run shows people: markdown, table rows and Prefect event payloads, built from data.

Pure functions over the run's outcome and its change-log rows, so they test in milliseconds and the
Prefect layer only publishes what they return. The modules stack: `text` (escaping, redaction,
keys) under `outcome` (the run's outcome and change labels), under `markdown`, `rows` and `events`.
Callers import from here.
"""

from stagewatch.report.events import CAPPED_EVENT_NAME, EVENT_NAMES, capped_event, prefect_event
from stagewatch.report.markdown import (
    DEFAULT_LIST_CAP,
    LISTED_KINDS,
    integration_markdown,
    short_ts,
    summary_markdown,
)
from stagewatch.report.outcome import (
    LABEL_ORDER,
    STATUS_LABELS,
    Status,
    SyncOutcome,
    event_label,
    label_counts,
    labels_from_kinds,
    outcome_from_run,
)
from stagewatch.report.rows import DEFAULT_TABLE_CAP, REVIEWER_COLUMNS, event_table
from stagewatch.report.text import (
    MAX_TEXT,
    artifact_key,
    clip,
    escape_md,
    events_table_key,
    redact_contacts,
    short_id,
    slug,
)

__all__ = [
    "CAPPED_EVENT_NAME",
    "DEFAULT_LIST_CAP",
    "DEFAULT_TABLE_CAP",
    "EVENT_NAMES",
    "LABEL_ORDER",
    "LISTED_KINDS",
    "MAX_TEXT",
    "REVIEWER_COLUMNS",
    "STATUS_LABELS",
    "Status",
    "SyncOutcome",
    "artifact_key",
    "capped_event",
    "clip",
    "escape_md",
    "event_label",
    "event_table",
    "events_table_key",
    "integration_markdown",
    "label_counts",
    "labels_from_kinds",
    "outcome_from_run",
    "prefect_event",
    "redact_contacts",
    "short_id",
    "short_ts",
    "slug",
    "summary_markdown",
]
