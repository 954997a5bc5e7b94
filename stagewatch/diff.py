"""Staging vs snapshot as set-based SQL: the change log is written here.

Every function runs inside the transaction `Store.commit_run` holds, takes the observation time as an
argument (no clock, no network) and touches only the rows of one run and one integration. An event is
one aspect of one application changing; its key hashes the integration, application, kind and the
snapshot version being left, so replays and overlapping windows insert nothing twice while A->B->A->B
still gives two distinct A->B events.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from typing import Any

EVENT_KINDS = (
    "first_seen",
    "stage_changed",
    "outcome_changed",
    "job_changed",
    "deleted",
    "restored",
)

# The public change-log format (jsonl/csv), in this order.
EVENT_FIELDS = (
    "event_key",
    "integration_id",
    "application_id",
    "kind",
    "observed_at",
    "previous_observed_at",
    "job_id",
    "sync_run_id",
    "from_stage_id",
    "from_stage_name",
    "to_stage_id",
    "to_stage_name",
    "direction",
    "from_outcome",
    "to_outcome",
    "from_job_id",
    "to_job_id",
    "rejection_reason_name",
    "rejected_at",
    "deleted_at",
    "deleted_reason",
    "from_stage_status",
    "to_stage_status",
)

REMOTE_DELETED = "remote_deleted"
# On PostgreSQL a run listing more applications than this refreshes the planner's statistics first.
ANALYZE_ABOVE_ROWS = 10_000
MISSING_FROM_FULL_LISTING = "missing_from_full_listing"


def _plain(text: str) -> bool:
    """Whether `json.dumps` writes `text` as itself between quotes: printable ASCII, no escapes."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def event_key(integration_id: str, application_id: str, kind: str, version_left: int) -> str:
    """The documented key: what changed, for whom, and from which stored version.

    SQLite calls this once per event, so ids that `json.dumps` would write unchanged (Kombo's
    are) are formatted directly: the same text, cheaper.
    """
    if type(version_left) is int and all(map(_plain, (integration_id, application_id, kind))):
        payload = f'["{integration_id}", "{application_id}", "{kind}", {version_left}]'
    else:
        payload = json.dumps([integration_id, application_id, kind, version_left])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def register_functions(conn: sqlite3.Connection) -> None:
    conn.create_function("sw_event_key", 4, event_key, deterministic=True)


_LAST_STAGED_JOB = (
    "s.id = (SELECT max(w.id) FROM staged_jobs AS w "
    "WHERE w.run_id = s.run_id AND w.job_id = s.job_id)"
)

_APPLY_JOBS = f"""
INSERT INTO jobs (
    integration_id, job_id, remote_id, name, status, changed_at, remote_created_at,
    remote_updated_at, remote_deleted_at, first_seen_at, last_seen_at, content_hash, raw
)
SELECT
    :integration_id, s.job_id, s.remote_id, s.name, s.status, s.changed_at, s.remote_created_at,
    s.remote_updated_at, s.remote_deleted_at, :observed_at, :observed_at, s.content_hash, s.raw
FROM staged_jobs AS s
WHERE s.run_id = :run_id AND {_LAST_STAGED_JOB}
ON CONFLICT (integration_id, job_id) DO UPDATE SET
    remote_id = excluded.remote_id,
    name = excluded.name,
    status = excluded.status,
    changed_at = excluded.changed_at,
    remote_created_at = excluded.remote_created_at,
    remote_updated_at = excluded.remote_updated_at,
    remote_deleted_at = excluded.remote_deleted_at,
    last_seen_at = excluded.last_seen_at,
    content_hash = excluded.content_hash,
    raw = excluded.raw
"""

# A job listed new or changed (its stages are in its hash) goes stale, before the upsert below
# overwrites the hash it is compared with: its stages order its funnel.
_MARK_CHANGED_JOBS = f"""
INSERT INTO funnel_stale (integration_id, job_key, marked)
SELECT :integration_id, s.job_id, :run_id
FROM staged_jobs AS s
LEFT JOIN jobs AS j ON j.integration_id = :integration_id AND j.job_id = s.job_id
WHERE s.run_id = :run_id AND {_LAST_STAGED_JOB}
    AND (j.job_id IS NULL OR j.content_hash IS NOT s.content_hash)
ON CONFLICT (integration_id, job_key) DO UPDATE SET marked = excluded.marked
"""

_APPLY_JOB_STAGES = f"""
INSERT INTO job_stages (
    integration_id, job_id, stage_id, remote_id, name, stage_index, position, status,
    first_seen_at, last_seen_at
)
SELECT
    :integration_id, s.job_id, json_extract(stage.value, '$.id'),
    json_extract(stage.value, '$.remote_id'), json_extract(stage.value, '$.name'),
    json_extract(stage.value, '$.index'), stage.key, json_extract(stage.value, '$.status'),
    :observed_at, :observed_at
FROM staged_jobs AS s, json_each(s.stages) AS stage
WHERE s.run_id = :run_id AND {_LAST_STAGED_JOB}
ON CONFLICT (integration_id, job_id, stage_id) DO UPDATE SET
    remote_id = excluded.remote_id,
    name = excluded.name,
    stage_index = excluded.stage_index,
    position = excluded.position,
    status = excluded.status,
    last_seen_at = excluded.last_seen_at
"""

_DIFF_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS sw_diff (
    application_id TEXT PRIMARY KEY,
    staged_id INTEGER NOT NULL,
    job_id TEXT, stage_id TEXT, stage_name TEXT, stage_status TEXT, outcome TEXT,
    rejection_reason_name TEXT, rejected_at TEXT, remote_deleted_at TEXT,
    old_version INTEGER, old_job_id TEXT, old_stage_id TEXT, old_stage_name TEXT,
    old_stage_status TEXT, old_outcome TEXT, old_deleted_observed_at TEXT, old_deleted_reason TEXT,
    old_version_observed_at TEXT, old_first_seen_at TEXT, is_live INTEGER,
    is_first_seen INTEGER, is_restored INTEGER, is_job_changed INTEGER, is_stage_changed INTEGER,
    is_outcome_changed INTEGER, is_deleted INTEGER, is_tracked INTEGER
)
"""

# The run's listing deduplicated: each application once, with the seq of its last listing. Built
# in application_id order, so the scratch index only ever grows at its end.
_SEEN_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS sw_seen (
    application_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID
"""

_FILL_SEEN = """
INSERT INTO temp.sw_seen (application_id, seq)
SELECT application_id, max(seq) FROM staged_seen WHERE run_id = :run_id
GROUP BY application_id ORDER BY application_id
"""

_ABSENT_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS sw_absent (application_id TEXT PRIMARY KEY)
"""

# Staging keeps only records that differ from the live snapshot, and sw_seen says which staging
# of an application came last. The record itself stays in staging (joined back by staged_id) so the
# scratch table holds only what the events need. Rows go in sorted by application id, so the event
# and snapshot writes that read them by id read the table in order (docs/performance.md).
_FILL_DIFF = """
INSERT INTO temp.sw_diff
SELECT
    y.*,
    y.is_first_seen OR y.is_restored OR y.is_job_changed OR y.is_stage_changed
        OR y.is_outcome_changed OR y.is_deleted
FROM (
    SELECT
        x.*,
        x.old_version IS NULL AS is_first_seen,
        x.old_version IS NOT NULL AND x.old_deleted_observed_at IS NOT NULL
            AND x.remote_deleted_at IS NULL AS is_restored,
        x.is_live AND x.old_job_id IS NOT x.job_id AS is_job_changed,
        x.is_live AND x.old_stage_id IS NOT x.stage_id AS is_stage_changed,
        x.is_live AND x.old_outcome IS NOT x.outcome
            OR x.old_version IS NULL AND NOT :baseline
                AND upper(x.outcome) IN ('HIRED', 'DECLINED') AS is_outcome_changed,
        x.remote_deleted_at IS NOT NULL
            AND (x.old_version IS NULL OR x.old_deleted_observed_at IS NULL) AS is_deleted
    FROM (
        SELECT
            s.application_id, s.id AS staged_id, s.job_id, s.stage_id,
            coalesce(s.stage_name, (
                SELECT js.name FROM job_stages AS js
                WHERE js.integration_id = :integration_id AND js.job_id = s.job_id
                    AND js.stage_id = s.stage_id
            )) AS stage_name,
            coalesce(s.stage_status, (
                SELECT js.status FROM job_stages AS js
                WHERE js.integration_id = :integration_id AND js.job_id = s.job_id
                    AND js.stage_id = s.stage_id
            )) AS stage_status,
            s.outcome, s.rejection_reason_name, s.rejected_at, s.remote_deleted_at,
            a.version AS old_version, a.job_id AS old_job_id, a.stage_id AS old_stage_id,
            a.stage_name AS old_stage_name, a.stage_status AS old_stage_status,
            a.outcome AS old_outcome,
            a.deleted_observed_at AS old_deleted_observed_at,
            a.deleted_reason AS old_deleted_reason,
            a.version_observed_at AS old_version_observed_at,
            a.first_seen_at AS old_first_seen_at,
            a.version IS NOT NULL AND a.deleted_observed_at IS NULL AS is_live
        FROM staged_applications AS s
        JOIN temp.sw_seen AS seen ON seen.application_id = s.application_id AND seen.seq = s.seq
        LEFT JOIN applications AS a
            ON a.integration_id = :integration_id AND a.application_id = s.application_id
        WHERE s.run_id = :run_id
    ) AS x
) AS y
ORDER BY y.application_id
"""

_EVENT_COMMON = (
    "event_key",
    "integration_id",
    "application_id",
    "kind",
    "observed_at",
    "previous_observed_at",
    "job_id",
    "sync_run_id",
    "snapshot_version",
)


def _insert_events(kind: str, columns: dict[str, str], source: str, where: str) -> str:
    """One INSERT ... SELECT writing the `kind` events of every row of `source` matching `where`."""
    common = (
        f"sw_event_key(:integration_id, d.application_id, '{kind}', coalesce(d.version_left, 0))",
        ":integration_id",
        "d.application_id",
        f"'{kind}'",
        ":observed_at",
        ":previous_observed_at",
        "d.job_id",
        ":run_id",
        "coalesce(d.version_left, 0)",
    )
    names = ", ".join((*_EVENT_COMMON, *columns))
    values = ",\n    ".join((*common, *columns.values()))
    return (
        f"INSERT OR IGNORE INTO events ({names})\nSELECT\n    {values}\n"
        f"FROM {source}\nWHERE {where}\nORDER BY d.application_id"
    )


_DIFF_SOURCE = "(SELECT *, old_version AS version_left FROM temp.sw_diff) AS d"

_DIRECTION = """CASE
        WHEN d.old_job_id IS NOT d.job_id THEN 'unknown'
        WHEN f.stage_index IS NULL OR t.stage_index IS NULL OR f.stage_index = t.stage_index
            THEN 'unknown'
        WHEN t.stage_index > f.stage_index THEN 'forward'
        ELSE 'backward'
    END"""

_STAGE_SOURCE = f"""{_DIFF_SOURCE}
LEFT JOIN job_stages AS f
    ON f.integration_id = :integration_id AND f.job_id = d.job_id AND f.stage_id = d.old_stage_id
LEFT JOIN job_stages AS t
    ON t.integration_id = :integration_id AND t.job_id = d.job_id AND t.stage_id = d.stage_id"""

# Insertion order inside one observation: how a reader would tell the story.
_EVENT_INSERTS = (
    _insert_events(
        "first_seen",
        {
            "to_stage_id": "d.stage_id",
            "to_stage_name": "d.stage_name",
            "to_stage_status": "d.stage_status",
            "to_outcome": "d.outcome",
            "to_job_id": "d.job_id",
            "rejection_reason_name": "d.rejection_reason_name",
            "rejected_at": "d.rejected_at",
        },
        _DIFF_SOURCE,
        "d.is_first_seen",
    ),
    # A restore says where the application came back to; what changed while it was deleted is not
    # news (Kombo anonymises deleted records), so no other event is written for it.
    _insert_events(
        "restored",
        {
            "to_stage_id": "d.stage_id",
            "to_stage_name": "d.stage_name",
            "to_stage_status": "d.stage_status",
            "to_outcome": "d.outcome",
            "to_job_id": "d.job_id",
        },
        _DIFF_SOURCE,
        "d.is_restored",
    ),
    _insert_events(
        "job_changed",
        {"from_job_id": "d.old_job_id", "to_job_id": "d.job_id"},
        _DIFF_SOURCE,
        "d.is_job_changed",
    ),
    _insert_events(
        "stage_changed",
        {
            "from_stage_id": "d.old_stage_id",
            "from_stage_name": "d.old_stage_name",
            "to_stage_id": "d.stage_id",
            "to_stage_name": "d.stage_name",
            "from_stage_status": "coalesce(d.old_stage_status, f.status)",
            "to_stage_status": "d.stage_status",
            "direction": _DIRECTION,
        },
        _STAGE_SOURCE,
        "d.is_stage_changed",
    ),
    _insert_events(
        "outcome_changed",
        {
            "from_outcome": "d.old_outcome",
            "to_outcome": "d.outcome",
            "rejection_reason_name": "d.rejection_reason_name",
            "rejected_at": "d.rejected_at",
        },
        _DIFF_SOURCE,
        "d.is_outcome_changed",
    ),
    _insert_events(
        "deleted",
        {"deleted_at": "d.remote_deleted_at", "deleted_reason": f"'{REMOTE_DELETED}'"},
        _DIFF_SOURCE,
        "d.is_deleted",
    ),
)

# The covering index answers "live and not listed" without reading a single snapshot row.
_FILL_ABSENT = """
INSERT INTO temp.sw_absent (application_id)
SELECT a.application_id
FROM applications AS a INDEXED BY applications_content
WHERE a.integration_id = :integration_id AND a.deleted_observed_at IS NULL
    AND NOT EXISTS (SELECT 1 FROM temp.sw_seen AS s WHERE s.application_id = a.application_id)
"""

_ABSENT_EVENTS = _insert_events(
    "deleted",
    {"deleted_at": "NULL", "deleted_reason": f"'{MISSING_FROM_FULL_LISTING}'"},
    """(
    SELECT a.application_id, a.job_id, a.version AS version_left
    FROM temp.sw_absent AS x
    CROSS JOIN applications AS a
        ON a.integration_id = :integration_id AND a.application_id = x.application_id
) AS d""",
    "true",
)

_MARK_ABSENT = f"""
UPDATE applications SET
    deleted_observed_at = :observed_at,
    deleted_reason = '{MISSING_FROM_FULL_LISTING}',
    version = version + 1,
    version_observed_at = :observed_at,
    last_run_id = :run_id
WHERE integration_id = :integration_id
    AND application_id IN (SELECT application_id FROM temp.sw_absent)
"""

_UPSERT_SNAPSHOT = f"""
INSERT INTO applications (
    integration_id, application_id, remote_id, job_id, stage_id, stage_name, stage_status, outcome,
    rejection_reason_name, rejected_at, remote_deleted_at, changed_at, remote_created_at,
    remote_updated_at, deleted_observed_at, deleted_reason, first_seen_at, version_observed_at,
    last_run_id, version, content_hash, raw
)
SELECT
    :integration_id, d.application_id, s.remote_id, d.job_id, d.stage_id, d.stage_name,
    d.stage_status, d.outcome,
    d.rejection_reason_name, d.rejected_at, d.remote_deleted_at, s.changed_at,
    s.remote_created_at, s.remote_updated_at,
    CASE WHEN d.remote_deleted_at IS NULL THEN NULL
        ELSE coalesce(d.old_deleted_observed_at, :observed_at) END,
    CASE WHEN d.remote_deleted_at IS NULL THEN NULL
        ELSE coalesce(d.old_deleted_reason, '{REMOTE_DELETED}') END,
    coalesce(d.old_first_seen_at, :observed_at),
    CASE WHEN d.is_tracked THEN :observed_at ELSE d.old_version_observed_at END,
    :run_id,
    coalesce(d.old_version, 0) + CAST(d.is_tracked AS INTEGER),
    s.content_hash,
    s.raw
FROM temp.sw_diff AS d
JOIN staged_applications AS s ON s.id = d.staged_id
WHERE true
ORDER BY d.application_id
ON CONFLICT (integration_id, application_id) DO UPDATE SET
    remote_id = excluded.remote_id,
    job_id = excluded.job_id,
    stage_id = excluded.stage_id,
    stage_name = excluded.stage_name,
    stage_status = excluded.stage_status,
    outcome = excluded.outcome,
    rejection_reason_name = excluded.rejection_reason_name,
    rejected_at = excluded.rejected_at,
    remote_deleted_at = excluded.remote_deleted_at,
    changed_at = excluded.changed_at,
    remote_created_at = excluded.remote_created_at,
    remote_updated_at = excluded.remote_updated_at,
    deleted_observed_at = excluded.deleted_observed_at,
    deleted_reason = excluded.deleted_reason,
    version_observed_at = excluded.version_observed_at,
    last_run_id = excluded.last_run_id,
    version = excluded.version,
    content_hash = excluded.content_hash,
    raw = excluded.raw
"""


# -- stays: one row per application per stage stay, kept with the change log ---------------------
# Semantics are m0006's view's: a stay opens at first_seen, stage_changed or restored and closes at
# the next stage_changed or deleted; a stay entered while hired or declined ends there; else the
# first hire or decline observed before it closes ends it. Migration 0010 backfills them with one
# sorted pass over each application's events (`STAYS_SELECT`); each run then applies its own events
# to them (`_KEEP_STAYS`), reading nothing but those events, the open stays they touch and, for a
# move, the application's outcome when it moved. Durations are computed by the stage_stays view.

DECIDED_OUTCOMES = "('HIRED', 'DECLINED')"
STAY_COLUMNS = (
    "event_id, integration_id, application_id, job_id, stage_id, stage_name, entered_at, "
    "entered_after, entered_from, left_at, left_after, ended, sync_run_id, observed_entry, "
    "observed_after, observed_left, left_by"
)
_OPENERS = "('first_seen', 'stage_changed', 'restored')"
_OUTCOME_KINDS = "('first_seen', 'restored', 'outcome_changed')"

# Observed times never go back within an integration (Runs._observed), so the first deciding
# event after the opening is the only one that can come before the closing.
_MARKED = f"""(
    SELECT
        e.id, e.kind, e.integration_id, e.application_id, e.job_id, e.to_stage_id,
        e.to_stage_name, e.observed_at, e.previous_observed_at, e.sync_run_id,
        max(CASE WHEN e.kind IN {_OUTCOME_KINDS} THEN e.id END)
            OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS entry_outcome_id,
        min(CASE WHEN e.kind IN ('stage_changed', 'deleted') THEN e.id END)
            OVER (w ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS closer_id,
        min(CASE WHEN e.kind = 'outcome_changed' AND upper(e.to_outcome) IN {DECIDED_OUTCOMES}
            THEN e.id END)
            OVER (w ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS decided_id
    FROM events AS e
    WHERE e.kind <> 'job_changed'
    WINDOW w AS (PARTITION BY e.integration_id, e.application_id ORDER BY e.id)
) AS m"""

_ENTRY_DECIDED = f"upper(t.entry_outcome) IN {DECIDED_OUTCOMES}"


def _entered(created: str, entry: str, after: str) -> str:
    """entered_at, entered_after, entered_from: a first stay starts at remote_created_at
    (`created`, NULL when not given or later than the observation), else when observed."""
    return (
        f"coalesce({created}, {entry}), "
        f"CASE WHEN {created} IS NOT NULL THEN {created} ELSE {after} END, "
        f"CASE WHEN {created} IS NOT NULL THEN 'created' ELSE 'observed' END"
    )


def _created(created_at: str, kind: str, observed: str) -> str:
    return f"CASE WHEN {kind} = 'first_seen' AND {created_at} <= {observed} THEN {created_at} END"


STAYS_SELECT = f"""
SELECT
    t.event_id, t.integration_id, t.application_id, t.job_id, t.stage_id, t.stage_name,
    {_entered("t.created_at", "t.observed_entry", "t.observed_after")},
    CASE
        WHEN {_ENTRY_DECIDED} THEN t.observed_entry
        WHEN t.decided_at IS NOT NULL THEN t.decided_at
        ELSE t.observed_left
    END,
    CASE
        WHEN {_ENTRY_DECIDED} THEN t.observed_after
        WHEN t.decided_at IS NOT NULL THEN t.decided_after
        ELSE t.closer_after
    END,
    CASE
        WHEN {_ENTRY_DECIDED} THEN lower(t.entry_outcome)
        WHEN t.decided_at IS NOT NULL THEN lower(t.decided_outcome)
        WHEN t.left_by = 'deleted' THEN 'deleted'
        WHEN t.left_by = 'stage_changed'
            AND coalesce(t.closer_job_id, '') <> coalesce(t.job_id, '') THEN 'job_changed'
        WHEN t.left_by = 'stage_changed' THEN 'moved_' || coalesce(t.closer_direction, 'unknown')
        ELSE 'current'
    END,
    t.sync_run_id, t.observed_entry, t.observed_after, t.observed_left, t.left_by
FROM (
    SELECT
        m.id AS event_id, m.integration_id, m.application_id, m.job_id,
        m.to_stage_id AS stage_id, m.to_stage_name AS stage_name, m.sync_run_id,
        m.observed_at AS observed_entry, m.previous_observed_at AS observed_after,
        c.observed_at AS observed_left, c.kind AS left_by,
        c.previous_observed_at AS closer_after, c.job_id AS closer_job_id,
        c.direction AS closer_direction, eo.to_outcome AS entry_outcome,
        d.observed_at AS decided_at, d.previous_observed_at AS decided_after,
        d.to_outcome AS decided_outcome,
        {_created("a.remote_created_at", "m.kind", "m.observed_at")} AS created_at
    FROM {_MARKED}
    LEFT JOIN events AS eo ON eo.id = m.entry_outcome_id
    LEFT JOIN events AS c ON c.id = m.closer_id
    LEFT JOIN events AS d
        ON d.id = m.decided_id AND (c.id IS NULL OR d.observed_at < c.observed_at)
    LEFT JOIN applications AS a
        ON a.integration_id = m.integration_id AND a.application_id = m.application_id
    WHERE m.kind IN {_OPENERS}
) AS t
"""

# The backfill: in event id order, so the table is written at its end.
BACKFILL_STAYS = f"INSERT INTO stage_stays_kept ({STAY_COLUMNS}){STAYS_SELECT}ORDER BY t.event_id"

_CREATED_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS sw_created (application_id TEXT PRIMARY KEY)
"""

# Known applications whose remote_created_at changes: their first stay may start there. Read
# before the snapshot upsert overwrites it.
_FILL_CREATED = """
INSERT INTO temp.sw_created (application_id)
SELECT d.application_id
FROM temp.sw_diff AS d
JOIN staged_applications AS s ON s.id = d.staged_id
JOIN applications AS a
    ON a.integration_id = :integration_id AND a.application_id = d.application_id
WHERE s.remote_created_at IS NOT a.remote_created_at
"""

# What the run's events do to stays, one row per application: the closing (its move, else its
# deletion: with both, the move closes the old stay and the deletion the new one), the deletion,
# and the hire or decline. Read once from the run's events; the statements below look rows up here.
_MOVES_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS sw_moves (
    application_id TEXT PRIMARY KEY,
    closer_id INTEGER, closer_kind TEXT, closer_at TEXT, closer_after TEXT, closer_job_id TEXT,
    closer_direction TEXT, deleted_at TEXT, deleted_after TEXT,
    decided_id INTEGER, decided_at TEXT, decided_after TEXT, decided_outcome TEXT
)
"""


def _of(kind: str, column: str) -> str:
    return f"max(CASE WHEN e.kind = '{kind}' THEN e.{column} END)"


def _closer(column: str) -> str:
    return f"coalesce({_of('stage_changed', column)}, {_of('deleted', column)})"


_DECIDING = f"e.kind = 'outcome_changed' AND upper(e.to_outcome) IN {DECIDED_OUTCOMES}"

_FILL_MOVES = f"""
INSERT INTO temp.sw_moves
SELECT
    e.application_id,
    {_closer("id")}, {_closer("kind")}, {_closer("observed_at")},
    {_closer("previous_observed_at")}, {_closer("job_id")}, {_of("stage_changed", "direction")},
    {_of("deleted", "observed_at")}, {_of("deleted", "previous_observed_at")},
    max(CASE WHEN {_DECIDING} THEN e.id END), max(CASE WHEN {_DECIDING} THEN e.observed_at END),
    max(CASE WHEN {_DECIDING} THEN e.previous_observed_at END),
    max(CASE WHEN {_DECIDING} THEN e.to_outcome END)
FROM events AS e
WHERE e.sync_run_id = :run_id AND e.kind IN ('stage_changed', 'deleted', 'outcome_changed')
GROUP BY e.application_id
"""

_MOVED = "(SELECT application_id FROM temp.sw_moves WHERE {} IS NOT NULL)"
_ITS_MOVES = "FROM temp.sw_moves AS m WHERE m.application_id = stage_stays_kept.application_id"

# A move or deletion closes the open stay; one already ended by a hire or decline keeps its end.
_CLOSE_STAYS = f"""
UPDATE stage_stays_kept SET (observed_left, left_by, left_at, left_after, ended) = (
    SELECT
        m.closer_at, m.closer_kind,
        CASE WHEN stage_stays_kept.ended = 'current' THEN m.closer_at
            ELSE stage_stays_kept.left_at END,
        CASE WHEN stage_stays_kept.ended = 'current' THEN m.closer_after
            ELSE stage_stays_kept.left_after END,
        CASE
            WHEN stage_stays_kept.ended <> 'current' THEN stage_stays_kept.ended
            WHEN m.closer_kind = 'deleted' THEN 'deleted'
            WHEN coalesce(m.closer_job_id, '') <> coalesce(stage_stays_kept.job_id, '')
                THEN 'job_changed'
            ELSE 'moved_' || coalesce(m.closer_direction, 'unknown')
        END
    {_ITS_MOVES}
)
WHERE integration_id = :integration_id AND application_id IN {_MOVED.format("closer_id")}
    AND observed_left IS NULL
"""

# The run's openings. A move's entry outcome is the application's last before it; a first
# sighting or a restore carries its own. A deletion in the same run closes the new stay at once.
_OPEN_STAYS = f"""
INSERT INTO stage_stays_kept ({STAY_COLUMNS})
SELECT
    o.id, o.integration_id, o.application_id, o.job_id, o.to_stage_id, o.to_stage_name,
    {_entered("o.created_at", "o.observed_at", "o.previous_observed_at")},
    CASE WHEN upper(o.entry_outcome) IN {DECIDED_OUTCOMES} THEN o.observed_at
        ELSE m.deleted_at END,
    CASE WHEN upper(o.entry_outcome) IN {DECIDED_OUTCOMES} THEN o.previous_observed_at
        ELSE m.deleted_after END,
    CASE WHEN upper(o.entry_outcome) IN {DECIDED_OUTCOMES} THEN lower(o.entry_outcome)
        WHEN m.deleted_at IS NOT NULL THEN 'deleted' ELSE 'current' END,
    o.sync_run_id, o.observed_at, o.previous_observed_at, m.deleted_at,
    CASE WHEN m.deleted_at IS NOT NULL THEN 'deleted' END
FROM (
    SELECT
        e.id, e.integration_id, e.application_id, e.job_id, e.to_stage_id, e.to_stage_name,
        e.observed_at, e.previous_observed_at, e.sync_run_id,
        {_created("a.remote_created_at", "e.kind", "e.observed_at")} AS created_at,
        CASE WHEN e.kind = 'stage_changed' THEN p.to_outcome ELSE e.to_outcome END
            AS entry_outcome
    FROM events AS e
    LEFT JOIN applications AS a
        ON a.integration_id = e.integration_id AND a.application_id = e.application_id
    LEFT JOIN events AS p ON e.kind = 'stage_changed' AND p.id = (
        SELECT max(q.id) FROM events AS q
        WHERE q.application_id = e.application_id AND q.integration_id = e.integration_id
            AND q.kind IN {_OUTCOME_KINDS} AND q.id < e.id
    )
    WHERE e.sync_run_id = :run_id AND e.kind IN {_OPENERS}
) AS o
LEFT JOIN temp.sw_moves AS m ON m.application_id = o.application_id
ORDER BY o.id
"""

# A hire or decline ends the open, undecided stay it follows; not one the run also closed, as
# then it was observed with the closing, not before it.
_DECIDE_STAYS = f"""
UPDATE stage_stays_kept SET (left_at, left_after, ended) = (
    SELECT m.decided_at, m.decided_after, lower(m.decided_outcome) {_ITS_MOVES}
)
WHERE integration_id = :integration_id AND application_id IN {_MOVED.format("decided_id")}
    AND observed_left IS NULL AND ended = 'current'
    AND event_id < (SELECT m.decided_id {_ITS_MOVES})
"""

# A known application's remote_created_at changed: its first stay starts anew.
_RESTART_FIRST_STAYS = f"""
UPDATE stage_stays_kept SET (entered_at, entered_after, entered_from) = (
    SELECT {_entered("x.created", "stage_stays_kept.observed_entry", "stage_stays_kept.observed_after")}
    FROM (
        SELECT CASE WHEN a.remote_created_at <= stage_stays_kept.observed_entry
            THEN a.remote_created_at END AS created
        FROM applications AS a
        WHERE a.integration_id = :integration_id
            AND a.application_id = stage_stays_kept.application_id
    ) AS x
)
WHERE integration_id = :integration_id
    AND application_id IN (SELECT application_id FROM temp.sw_created)
    AND event_id = (
        SELECT min(k.event_id) FROM stage_stays_kept AS k
        WHERE k.integration_id = :integration_id
            AND k.application_id = stage_stays_kept.application_id
    )
"""

# Every job one of the run's stays is in goes stale (table funnel_stale, migration 0012): the jobs
# the run opened stays in, and every job of the applications whose stays it closed, decided or
# restarted. Marked with the run, so a refresh running meanwhile (PostgreSQL) leaves them stale.
_MARK_STALE_FUNNELS = f"""
INSERT INTO funnel_stale (integration_id, job_key, marked)
SELECT :integration_id, t.job_key, :run_id FROM (
    SELECT coalesce(e.job_id, '') AS job_key FROM events AS e
    WHERE e.sync_run_id = :run_id AND e.kind IN {_OPENERS}
    UNION
    SELECT coalesce(k.job_id, '') FROM stage_stays_kept AS k
    WHERE k.integration_id = :integration_id AND k.application_id IN (
        SELECT application_id FROM temp.sw_moves
        UNION SELECT application_id FROM temp.sw_created
    )
) AS t
WHERE true
ON CONFLICT (integration_id, job_key) DO UPDATE SET marked = excluded.marked
"""

# In this order: close before open (the new stay is not the one a move leaves), decide after both
# (a stay opened and decided in one run).
_KEEP_STAYS = (
    _CLOSE_STAYS,
    _OPEN_STAYS,
    _DECIDE_STAYS,
    _RESTART_FIRST_STAYS,
    _MARK_STALE_FUNNELS,
    "DELETE FROM temp.sw_moves",
    "DELETE FROM temp.sw_created",
)


def _keep_stays(execute, params: dict[str, Any], postgres: bool) -> None:
    """Apply the run's events to the kept stays, after the snapshot upsert (first stays start at
    the snapshot's remote_created_at)."""
    execute(_MOVES_TABLE)
    execute(_FILL_MOVES, params)
    if postgres:  # the statements below look their rows up by these tables: give the planner sizes
        execute("ANALYZE temp.sw_moves, temp.sw_created")
    for statement in _KEEP_STAYS:
        execute(statement, params)


# -- PostgreSQL: the same statements where the two agree, its own where they do not -------------

_PG_APPLY_JOB_STAGES = f"""
INSERT INTO job_stages (
    integration_id, job_id, stage_id, remote_id, name, stage_index, position, status,
    first_seen_at, last_seen_at
)
SELECT DISTINCT ON (s.job_id, stage.value->>'id')
    :integration_id, s.job_id, stage.value->>'id', stage.value->>'remote_id',
    stage.value->>'name', (stage.value->>'index')::double precision, stage.ordinality - 1,
    stage.value->>'status', :observed_at, :observed_at
FROM staged_jobs AS s, jsonb_array_elements(s.stages::jsonb) WITH ORDINALITY AS stage
WHERE s.run_id = :run_id AND {_LAST_STAGED_JOB}
-- A stage id listed twice: its last listing wins, as in SQLite's row-by-row upsert.
ORDER BY s.job_id, stage.value->>'id', stage.ordinality DESC
ON CONFLICT (integration_id, job_id, stage_id) DO UPDATE SET
    remote_id = excluded.remote_id,
    name = excluded.name,
    stage_index = excluded.stage_index,
    position = excluded.position,
    status = excluded.status,
    last_seen_at = excluded.last_seen_at
"""

_PG_OWN = {
    _APPLY_JOB_STAGES: _PG_APPLY_JOB_STAGES,
    _DIFF_TABLE: re.sub(r"(is_\w+) INTEGER", r"\1 BOOLEAN", _DIFF_TABLE),
    _SEEN_TABLE: _SEEN_TABLE.replace("WITHOUT ROWID", ""),
}


@cache
def _for_postgres(sql: str) -> str:
    """A statement of this module as PostgreSQL spells it."""
    if sql in _PG_OWN:
        return _PG_OWN[sql]
    sql = re.sub(r"\bIS NOT (?!NULL\b)", "IS DISTINCT FROM ", sql)
    sql = sql.replace("temp.", "pg_temp.").replace("INDEXED BY applications_content", "")
    sql = sql.replace("CROSS JOIN", "JOIN")
    if "INSERT OR IGNORE INTO" in sql:
        sql = sql.replace("INSERT OR IGNORE INTO", "INSERT INTO") + "\nON CONFLICT DO NOTHING"
    return sql


def _runner(conn, postgres: bool):
    if not postgres:
        return conn.execute
    return lambda sql, *params: conn.execute(_for_postgres(sql), *params)


# An application stagewatch imported (the `imports` ledger) is tagged there when first seen, so
# the change log's first sightings can tell imported from tracked ones (view `first_sightings`).
_MARK_IMPORTS_SEEN = """
UPDATE imports SET first_seen_at = :observed_at, first_seen_run_id = :run_id
WHERE integration_id = :integration_id AND application_id IS NOT NULL AND first_seen_at IS NULL
    AND EXISTS (
        SELECT 1 FROM temp.sw_diff AS d
        WHERE d.application_id = imports.application_id AND d.is_first_seen
    )
"""


def apply_jobs(
    conn: sqlite3.Connection,
    *,
    run_id: int,
    integration_id: str,
    observed_at: str,
    postgres: bool = False,
) -> None:
    """Upsert the run's staged jobs and their stages; stages no longer listed keep their last values."""
    params = {"run_id": run_id, "integration_id": integration_id, "observed_at": observed_at}
    execute = _runner(conn, postgres)
    execute(_MARK_CHANGED_JOBS, params)
    execute(_APPLY_JOBS, params)
    execute(_APPLY_JOB_STAGES, params)


@dataclass(frozen=True)
class Applied:
    """What applying a run's applications found: distinct applications listed, and (full
    listings) live ones missing from the listing, now recorded as deleted."""

    listed: int
    absent: int


def _analyze(execute, seen: int) -> None:
    """Statistics for PostgreSQL's planner: temporary tables have none unless asked, and a big
    run's staging (or a first run's snapshot) is not yet analysed by autovacuum."""
    execute("ANALYZE temp.sw_seen")
    if seen > ANALYZE_ABOVE_ROWS:
        execute("ANALYZE staged_applications, applications, job_stages")


def _apply_absent(execute, params: dict[str, Any]) -> int:
    """A full listing's absent applications recorded deleted; returns how many."""
    execute(_FILL_ABSENT, params)
    absent = execute("SELECT count(*) FROM temp.sw_absent").fetchone()[0]
    execute(_ABSENT_EVENTS, params)
    execute(_MARK_ABSENT, params)
    return absent


def apply_applications(
    conn: sqlite3.Connection,
    *,
    run_id: int,
    integration_id: str,
    observed_at: str,
    previous_observed_at: str | None,
    full: bool,
    postgres: bool = False,
) -> Applied:
    """Write the run's events and bring the application snapshot up to date.

    A full listing also marks every live application it did not contain as deleted (the caller
    has looked them up by id first). Jobs must be applied first: stage directions and fallback
    stage names come from the job snapshot. After the integration's first run, a first sighting
    already hired or declined is also an outcome change (from none), so it is news like any hire.
    """
    params = {
        "run_id": run_id,
        "integration_id": integration_id,
        "observed_at": observed_at,
        "previous_observed_at": previous_observed_at,
        # The integration's first run: what it sees existed before stagewatch looked.
        "baseline": previous_observed_at is None,
    }
    # The scratch tables are temporary and transactional: a rollback leaves them as they were.
    execute = _runner(conn, postgres)
    execute(_SEEN_TABLE)
    execute(_DIFF_TABLE)
    execute(_ABSENT_TABLE)
    execute(_FILL_SEEN, params)
    seen = execute("SELECT count(*) FROM temp.sw_seen").fetchone()[0]
    if postgres:
        _analyze(execute, seen)
    execute(_FILL_DIFF, params)
    for statement in _EVENT_INSERTS:
        execute(statement, params)
    execute(_MARK_IMPORTS_SEEN, params)
    absent = _apply_absent(execute, params) if full else 0
    execute(_CREATED_TABLE)
    execute(_FILL_CREATED, params)
    execute(_UPSERT_SNAPSHOT, params)
    _keep_stays(execute, params, postgres)
    execute("DELETE FROM temp.sw_diff")
    execute("DELETE FROM temp.sw_absent")
    execute("DELETE FROM temp.sw_seen")
    return Applied(seen, absent)
