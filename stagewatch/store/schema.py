"""The store's schema: recorded sqlite-utils migrations, and the schema read back as markdown.

Each migration is a list of DDL statements whose `--` comments document the tables and columns:
SQLite keeps the original CREATE text, so `stagewatch schema --markdown` reads the documentation back
from the live database. Never edit an applied migration; append a new one.
"""

from __future__ import annotations

import re
import sqlite3

from sqlite_utils import Database, Migrations

from stagewatch.diff import BACKFILL_STAYS

MIGRATION_SET = "stagewatch"

migrations = Migrations(MIGRATION_SET)

INITIAL = [
    """
CREATE TABLE sync_runs ( -- One row per sync run: what it fetched, how it ended, what it cost.
    id INTEGER PRIMARY KEY, -- Run id; events carry it as sync_run_id.
    integration_id TEXT NOT NULL, -- Kombo integration id.
    mode TEXT NOT NULL CHECK (mode IN ('incremental', 'full')), -- incremental (updated_after) or full listing.
    status TEXT NOT NULL, -- running, succeeded, incomplete, failed, not_ready, unsupported or abandoned.
    started_at TEXT NOT NULL, -- When the run began.
    finished_at TEXT, -- When the run ended (NULL while running).
    window_start TEXT, -- updated_after sent to Kombo; NULL for a full listing.
    observed_at TEXT, -- When the listing was observed; every event of the run carries it.
    next_watermark TEXT, -- Watermark the run set; NULL when it set none.
    pid INTEGER NOT NULL, -- Process that ran it.
    hostname TEXT NOT NULL, -- Host that ran it.
    jobs_seen INTEGER, -- Distinct jobs listed.
    applications_seen INTEGER, -- Distinct applications listed.
    quarantined INTEGER, -- Records that could not be parsed.
    events INTEGER, -- Events written, all kinds.
    first_seen INTEGER, -- first_seen events written.
    stage_changed INTEGER, -- stage_changed events written.
    outcome_changed INTEGER, -- outcome_changed events written.
    job_changed INTEGER, -- job_changed events written.
    deleted INTEGER, -- deleted events written.
    restored INTEGER, -- restored events written.
    requests INTEGER, -- HTTP requests the client made.
    retries INTEGER, -- Requests the client retried.
    waited_seconds REAL, -- Seconds the client spent backing off.
    staged_records INTEGER NOT NULL DEFAULT 0, -- Application records staged, repeats included.
    error TEXT -- Why the run did not succeed.
)
""",
    "CREATE INDEX sync_runs_integration ON sync_runs (integration_id, id)",
    """
CREATE TABLE run_locks ( -- Per-integration run lock: at most one running sync per integration.
    integration_id TEXT PRIMARY KEY, -- Locked integration.
    run_id INTEGER NOT NULL, -- Run holding the lock.
    pid INTEGER NOT NULL, -- Process holding the lock; on the same host a dead pid makes the lock stale.
    hostname TEXT NOT NULL, -- Host of that process.
    acquired_at TEXT NOT NULL -- When the lock was taken.
)
""",
    """
CREATE TABLE watermarks ( -- Where the next incremental listing of each integration starts.
    integration_id TEXT PRIMARY KEY, -- Integration.
    watermark TEXT NOT NULL, -- Next updated_after: a listing's start time minus an overlap.
    run_id INTEGER NOT NULL, -- Run that set it.
    updated_at TEXT NOT NULL -- When it was set.
)
""",
    """
CREATE TABLE jobs ( -- Current snapshot of each job, as last listed.
    integration_id TEXT NOT NULL, -- Integration.
    job_id TEXT NOT NULL, -- Kombo job id.
    remote_id TEXT, -- Id in the ATS.
    name TEXT, -- Job title.
    status TEXT, -- OPEN, CLOSED, DRAFT, ARCHIVED or the ATS's own value.
    changed_at TEXT, -- Kombo's changed_at.
    remote_created_at TEXT, -- Created in the ATS.
    remote_updated_at TEXT, -- Updated in the ATS.
    remote_deleted_at TEXT, -- Set by Kombo when the job was deleted in the ATS.
    first_seen_at TEXT NOT NULL, -- First listing that contained the job.
    last_seen_at TEXT NOT NULL, -- Last listing that contained the job.
    content_hash TEXT NOT NULL, -- sha1 of raw.
    raw TEXT NOT NULL, -- The record as JSON, without remote_data.
    PRIMARY KEY (integration_id, job_id)
)
""",
    """
CREATE TABLE job_stages ( -- Stages of each job's pipeline, as last listed; stage ids are job-specific.
    integration_id TEXT NOT NULL, -- Integration.
    job_id TEXT NOT NULL, -- Job.
    stage_id TEXT NOT NULL, -- Kombo stage id.
    remote_id TEXT, -- Id in the ATS.
    name TEXT, -- Stage name as last listed.
    stage_index INTEGER, -- Order in the ATS; may be NULL or shared by several stages.
    position INTEGER NOT NULL, -- Position in the job's stage list as last listed.
    status TEXT, -- ACTIVE, INACTIVE or NULL.
    first_seen_at TEXT NOT NULL, -- First listing of the job that contained the stage.
    last_seen_at TEXT NOT NULL, -- Last listing of the job that contained the stage.
    PRIMARY KEY (integration_id, job_id, stage_id)
) WITHOUT ROWID
""",
    """
CREATE TABLE applications ( -- Current snapshot of each application, as last observed.
    integration_id TEXT NOT NULL, -- Integration.
    application_id TEXT NOT NULL, -- Kombo application id.
    remote_id TEXT, -- Id in the ATS.
    job_id TEXT, -- Job applied to.
    stage_id TEXT, -- Current stage id.
    stage_name TEXT, -- Current stage name (the application's own, else the job's).
    outcome TEXT, -- PENDING, HIRED, DECLINED, NULL or the ATS's own value.
    rejection_reason_name TEXT, -- Why it was declined.
    rejected_at TEXT, -- When it was declined.
    remote_deleted_at TEXT, -- Set by Kombo when the application was deleted in the ATS.
    changed_at TEXT, -- Kombo's changed_at.
    remote_created_at TEXT, -- Created in the ATS.
    remote_updated_at TEXT, -- Updated in the ATS.
    deleted_observed_at TEXT, -- When stagewatch recorded the deletion; NULL while the application lives.
    deleted_reason TEXT, -- remote_deleted or missing_from_full_listing.
    first_seen_at TEXT NOT NULL, -- Observation that first contained the application.
    version_observed_at TEXT NOT NULL, -- Observation that set the current version.
    last_run_id INTEGER NOT NULL, -- Run that last wrote the row.
    version INTEGER NOT NULL, -- Tracked changes so far; an event's key holds the version it leaves.
    content_hash TEXT NOT NULL, -- sha1 of raw: an unchanged record is skipped at staging.
    raw TEXT NOT NULL, -- The record as JSON, without remote_data or candidate contact data.
    PRIMARY KEY (integration_id, application_id)
)
""",
    """
CREATE INDEX applications_content
    ON applications (integration_id, application_id, content_hash, deleted_observed_at)
""",
    """
CREATE TABLE events ( -- The change log: append-only, one row per aspect of one application that changed.
    id INTEGER PRIMARY KEY, -- Insertion order.
    event_key TEXT NOT NULL, -- sha256 of integration, application, kind and snapshot_version (unique with them).
    integration_id TEXT NOT NULL, -- Integration.
    application_id TEXT NOT NULL, -- Application.
    kind TEXT NOT NULL CHECK (kind IN ('first_seen', 'stage_changed', 'outcome_changed', 'job_changed', 'deleted', 'restored')), -- What changed.
    observed_at TEXT NOT NULL, -- When the run saw the new state.
    previous_observed_at TEXT, -- When the integration's previous complete run confirmed the old state.
    job_id TEXT, -- The application's job after the change.
    sync_run_id INTEGER NOT NULL, -- Run that saw it.
    snapshot_version INTEGER NOT NULL, -- The application's snapshot version the change leaves (0: none yet).
    from_stage_id TEXT, -- stage_changed: stage left.
    from_stage_name TEXT, -- stage_changed: its name.
    to_stage_id TEXT, -- stage_changed, first_seen: stage entered.
    to_stage_name TEXT, -- stage_changed, first_seen: its name.
    direction TEXT CHECK (direction IN ('forward', 'backward', 'unknown')), -- stage_changed: by the job's stage order.
    from_outcome TEXT, -- outcome_changed: outcome left.
    to_outcome TEXT, -- outcome_changed, first_seen: outcome now.
    from_job_id TEXT, -- job_changed: job left.
    to_job_id TEXT, -- job_changed, first_seen: job now.
    rejection_reason_name TEXT, -- outcome_changed, first_seen: rejection reason now.
    rejected_at TEXT, -- outcome_changed, first_seen: rejection time now.
    deleted_at TEXT, -- deleted: Kombo's remote_deleted_at (NULL when missing from a full listing).
    deleted_reason TEXT -- deleted: remote_deleted or missing_from_full_listing.
)
""",
    "CREATE INDEX events_integration_observed ON events (integration_id, observed_at)",
    # The deterministic unique key: a replay or an overlapping window inserts nothing twice, while
    # A->B->A->B leaves two different versions. It also serves lookups by application.
    """
CREATE UNIQUE INDEX events_key
    ON events (application_id, integration_id, snapshot_version, kind)
""",
    "CREATE INDEX events_run ON events (sync_run_id)",
    """
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END
""",
    """
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END
""",
    """
CREATE VIEW stage_history AS -- One row per stay of an application in a stage (SCD type 2), from the events.
SELECT
    integration_id, -- Integration.
    application_id, -- Application.
    job_id, -- Job when the stage was entered.
    stage_id, -- Stage.
    stage_name, -- Stage name when entered.
    entered_at, -- Observation that first saw the application in the stage (valid_from).
    entered_after, -- The integration's previous observation: the move happened after it (NULL on its first run).
    left_at, -- Observation that saw it in another stage (valid_to); NULL for the current stay.
    round((julianday(left_at) - julianday(entered_at)) * 86400.0, 3) AS seconds_in_stage, -- left_at minus entered_at; NULL for the current stay.
    left_at IS NULL AS is_current, -- 1 for the application's current stay.
    sync_run_id, -- Run that saw it enter.
    event_id -- Event that opened the stay.
FROM (
    SELECT
        id AS event_id,
        integration_id,
        application_id,
        job_id,
        to_stage_id AS stage_id,
        to_stage_name AS stage_name,
        observed_at AS entered_at,
        previous_observed_at AS entered_after,
        lead(observed_at) OVER (
            PARTITION BY integration_id, application_id ORDER BY id
        ) AS left_at,
        sync_run_id
    FROM events
    WHERE kind IN ('first_seen', 'stage_changed')
)
""",
    """
CREATE TABLE quarantined ( -- Records that could not be parsed, kept with the reason.
    id INTEGER PRIMARY KEY, -- Row id.
    run_id INTEGER NOT NULL, -- Run that received it.
    integration_id TEXT NOT NULL, -- Integration.
    model TEXT NOT NULL, -- job or application.
    record_id TEXT, -- The record's id when it had one.
    reason TEXT NOT NULL, -- What was wrong with it.
    raw TEXT NOT NULL, -- Payload as JSON, without remote_data or candidate contact data.
    quarantined_at TEXT NOT NULL -- When it was stored.
)
""",
    "CREATE INDEX quarantined_run ON quarantined (run_id)",
    """
CREATE TABLE staged_jobs ( -- Jobs listed by a running sync; commit_run applies and clears them.
    id INTEGER PRIMARY KEY, -- Staging order: for one job the last staged wins.
    run_id INTEGER NOT NULL, -- Run.
    job_id TEXT NOT NULL, -- Job.
    remote_id TEXT, -- As in jobs.
    name TEXT, -- As in jobs.
    status TEXT, -- As in jobs.
    changed_at TEXT, -- As in jobs.
    remote_created_at TEXT, -- As in jobs.
    remote_updated_at TEXT, -- As in jobs.
    remote_deleted_at TEXT, -- As in jobs.
    stages TEXT NOT NULL, -- JSON list of the job's stages.
    content_hash TEXT NOT NULL, -- As in jobs.
    raw TEXT NOT NULL -- As in jobs.
)
""",
    "CREATE INDEX staged_jobs_run ON staged_jobs (run_id, job_id)",
    """
CREATE TABLE staged_seen ( -- Every application a running sync listed, so a full listing can tell which are missing.
    run_id INTEGER NOT NULL, -- Run.
    application_id TEXT NOT NULL, -- Application.
    seq INTEGER NOT NULL, -- Position of its last staging in the run: the last staged record wins.
    PRIMARY KEY (run_id, application_id)
) WITHOUT ROWID
""",
    """
CREATE TABLE staged_applications ( -- Listed records that differ from the live snapshot; commit_run applies and clears them.
    id INTEGER PRIMARY KEY, -- Row id.
    run_id INTEGER NOT NULL, -- Run.
    seq INTEGER NOT NULL, -- Position of this staging in the run.
    application_id TEXT NOT NULL, -- As in applications.
    content_hash TEXT NOT NULL, -- As in applications.
    raw TEXT NOT NULL, -- As in applications.
    remote_id TEXT, -- As in applications.
    job_id TEXT, -- As in applications.
    stage_id TEXT, -- As in applications.
    stage_name TEXT, -- The application's own stage name.
    outcome TEXT, -- As in applications.
    rejection_reason_name TEXT, -- As in applications.
    rejected_at TEXT, -- As in applications.
    remote_deleted_at TEXT, -- As in applications.
    changed_at TEXT, -- As in applications.
    remote_created_at TEXT, -- As in applications.
    remote_updated_at TEXT -- As in applications.
)
""",
    "CREATE INDEX staged_applications_run ON staged_applications (run_id)",
]


MIGRATION_NAMES: list[str] = []


def _migration(name: str):
    MIGRATION_NAMES.append(name)
    return migrations(name=name)


@_migration("0001_initial")
def m0001_initial(db: Database) -> None:
    for statement in INITIAL:
        db.execute(statement.strip())


# SQLite cannot comment a column added by ALTER TABLE the way `stagewatch schema --markdown` reads
# comments, so sync_runs is rebuilt with the new columns at its end (SQLite's documented recipe).
# Runs that succeeded before publishing was tracked count as published: their process published
# them or is long gone, and the change log holds their changes either way.
PUBLISHED = [
    "ALTER TABLE sync_runs RENAME TO sync_runs_0001",
    """
CREATE TABLE sync_runs ( -- One row per sync run: what it fetched, how it ended, what it cost.
    id INTEGER PRIMARY KEY, -- Run id; events carry it as sync_run_id.
    integration_id TEXT NOT NULL, -- Kombo integration id.
    mode TEXT NOT NULL CHECK (mode IN ('incremental', 'full')), -- incremental (updated_after) or full listing.
    status TEXT NOT NULL, -- running, succeeded, incomplete, failed, not_ready, unsupported or abandoned.
    started_at TEXT NOT NULL, -- When the run began (took the integration's lock).
    finished_at TEXT, -- When the run ended (NULL while running).
    window_start TEXT, -- updated_after sent to Kombo; NULL for a full listing.
    observed_at TEXT, -- When the listing was observed; every event of the run carries it.
    next_watermark TEXT, -- Watermark the run set; NULL when it set none.
    pid INTEGER NOT NULL, -- Process that ran it.
    hostname TEXT NOT NULL, -- Host that ran it.
    jobs_seen INTEGER, -- Distinct jobs listed.
    applications_seen INTEGER, -- Distinct applications listed.
    quarantined INTEGER, -- Records that could not be parsed.
    events INTEGER, -- Events written, all kinds.
    first_seen INTEGER, -- first_seen events written.
    stage_changed INTEGER, -- stage_changed events written.
    outcome_changed INTEGER, -- outcome_changed events written.
    job_changed INTEGER, -- job_changed events written.
    deleted INTEGER, -- deleted events written.
    restored INTEGER, -- restored events written.
    requests INTEGER, -- HTTP requests the client made.
    retries INTEGER, -- Requests the client retried.
    waited_seconds REAL, -- Seconds the client spent backing off.
    staged_records INTEGER NOT NULL DEFAULT 0, -- Application records staged, repeats included.
    error TEXT, -- Why the run did not succeed.
    published_at TEXT, -- When a succeeded run's changes went out to Prefect (artifacts, events) or were settled without; NULL until then.
    publish_note TEXT -- How, when not by the run itself: published late by a later run, or not published (see the text).
)
""",
    """
INSERT INTO sync_runs SELECT *,
    CASE WHEN status = 'succeeded' THEN finished_at END,
    CASE WHEN status = 'succeeded' THEN 'committed before stagewatch recorded publishing' END
FROM sync_runs_0001
""",
    "DROP TABLE sync_runs_0001",
    "CREATE INDEX sync_runs_integration ON sync_runs (integration_id, id)",
    """
CREATE INDEX sync_runs_unpublished ON sync_runs (integration_id, id)
    WHERE status = 'succeeded' AND published_at IS NULL
""",
]


@_migration("0002_sync_runs_published")
def m0002_sync_runs_published(db: Database) -> None:
    for statement in PUBLISHED:
        db.execute(statement.strip())


# staged_seen was keyed by (run_id, application_id): Kombo ids are random, so every page of a
# listing rewrote pages all over that index, and a big listing spent most of its staging time there.
# It is now append-only; commit_run dedups it once, in a sorted scratch table. Rows of a run still
# staging under the old layout are carried over, so that run can still commit.
SEEN_APPEND_ONLY = [
    "ALTER TABLE staged_seen RENAME TO staged_seen_0002",
    """
CREATE TABLE staged_seen ( -- Every application a running sync listed, in listing order, so a full listing can tell which are missing.
    id INTEGER PRIMARY KEY, -- Insertion order: the table only grows at its end while runs list.
    run_id INTEGER NOT NULL, -- Run.
    application_id TEXT NOT NULL, -- Application.
    seq INTEGER NOT NULL -- Position of this listing of it in the run; when listed twice, the highest wins.
)
""",
    """
INSERT INTO staged_seen (run_id, application_id, seq)
SELECT run_id, application_id, seq FROM staged_seen_0002 ORDER BY run_id, seq
""",
    "DROP TABLE staged_seen_0002",
    "CREATE INDEX staged_seen_run ON staged_seen (run_id)",
]


@_migration("0003_staged_seen_append_only")
def m0003_staged_seen_append_only(db: Database) -> None:
    for statement in SEEN_APPEND_ONLY:
        db.execute(statement.strip())


# The run lock becomes a lease the holder renews, so a lock left by a run killed on any host is
# taken over once it runs out. `machine` (boot id and pid namespace) tells whether a recorded pid
# can be checked from here: a host name alone cannot. Rows carried over have no machine, and a
# lease of the default length from when they were taken.
LEASES = [
    "ALTER TABLE run_locks RENAME TO run_locks_0003",
    """
CREATE TABLE run_locks ( -- Per-integration run lock, held as a lease: at most one running sync per integration.
    integration_id TEXT PRIMARY KEY, -- Locked integration.
    run_id INTEGER NOT NULL, -- Run holding the lock.
    pid INTEGER NOT NULL, -- Process holding the lock; on this machine a dead pid frees the lock at once.
    hostname TEXT NOT NULL, -- Host name of that process.
    machine TEXT, -- Boot id and pid namespace of that process; NULL when unreadable (then only the lease frees the lock).
    acquired_at TEXT NOT NULL, -- When the lock was taken.
    renewed_at TEXT NOT NULL, -- When the holder last renewed its lease.
    lease_expires_at TEXT NOT NULL -- renewed_at plus the holder's lease length: from then on any run may take the lock over.
)
""",
    """
INSERT INTO run_locks (
    integration_id, run_id, pid, hostname, machine, acquired_at, renewed_at, lease_expires_at
)
SELECT integration_id, run_id, pid, hostname, NULL, acquired_at, acquired_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', acquired_at, '+300 seconds')
FROM run_locks_0003
""",
    "DROP TABLE run_locks_0003",
    "ALTER TABLE sync_runs RENAME TO sync_runs_0003",
    """
CREATE TABLE sync_runs ( -- One row per sync run: what it fetched, how it ended, what it cost.
    id INTEGER PRIMARY KEY, -- Run id; events carry it as sync_run_id.
    integration_id TEXT NOT NULL, -- Kombo integration id.
    mode TEXT NOT NULL CHECK (mode IN ('incremental', 'full')), -- incremental (updated_after) or full listing.
    status TEXT NOT NULL, -- running, succeeded, incomplete, failed, not_ready, unsupported or abandoned.
    started_at TEXT NOT NULL, -- When the run began (took the integration's lock).
    finished_at TEXT, -- When the run ended (NULL while running).
    window_start TEXT, -- updated_after sent to Kombo; NULL for a full listing.
    observed_at TEXT, -- When the listing was observed; every event of the run carries it.
    next_watermark TEXT, -- Watermark the run set; NULL when it set none.
    pid INTEGER NOT NULL, -- Process that ran it.
    hostname TEXT NOT NULL, -- Host that ran it.
    jobs_seen INTEGER, -- Distinct jobs listed.
    applications_seen INTEGER, -- Distinct applications listed.
    quarantined INTEGER, -- Records that could not be parsed.
    events INTEGER, -- Events written, all kinds.
    first_seen INTEGER, -- first_seen events written.
    stage_changed INTEGER, -- stage_changed events written.
    outcome_changed INTEGER, -- outcome_changed events written.
    job_changed INTEGER, -- job_changed events written.
    deleted INTEGER, -- deleted events written.
    restored INTEGER, -- restored events written.
    requests INTEGER, -- HTTP requests the client made.
    retries INTEGER, -- Requests the client retried.
    waited_seconds REAL, -- Seconds the client spent backing off.
    staged_records INTEGER NOT NULL DEFAULT 0, -- Application records staged, repeats included.
    error TEXT, -- Why the run did not succeed.
    published_at TEXT, -- When a succeeded run's changes went out to Prefect (artifacts, events) or were settled without; NULL until then.
    publish_note TEXT, -- How, when not by the run itself: published late by a later run, or not published (see the text).
    machine TEXT -- Boot id and pid namespace of the process; NULL when unreadable or run before stagewatch recorded it.
)
""",
    "INSERT INTO sync_runs SELECT *, NULL FROM sync_runs_0003",
    "DROP TABLE sync_runs_0003",
    "CREATE INDEX sync_runs_integration ON sync_runs (integration_id, id)",
    """
CREATE INDEX sync_runs_unpublished ON sync_runs (integration_id, id)
    WHERE status = 'succeeded' AND published_at IS NULL
""",
]


@_migration("0004_run_leases")
def m0004_run_leases(db: Database) -> None:
    for statement in LEASES:
        db.execute(statement.strip())


# Facts a run learns while it lists, kept so `status` and a late publish can say them: what the
# ids lookup did to a full listing's missing applications, which jobs were fetched again, and
# whether the ATS offers jobs at all. Rebuilt like 0002, so the new columns keep their comments.
RUN_FACTS = [
    "ALTER TABLE sync_runs RENAME TO sync_runs_0004",
    """
CREATE TABLE sync_runs ( -- One row per sync run: what it fetched, how it ended, what it cost.
    id INTEGER PRIMARY KEY, -- Run id; events carry it as sync_run_id.
    integration_id TEXT NOT NULL, -- Kombo integration id.
    mode TEXT NOT NULL CHECK (mode IN ('incremental', 'full')), -- incremental (updated_after) or full listing.
    status TEXT NOT NULL, -- running, succeeded, incomplete, failed, not_ready, unsupported or abandoned.
    started_at TEXT NOT NULL, -- When the run began (took the integration's lock).
    finished_at TEXT, -- When the run ended (NULL while running).
    window_start TEXT, -- updated_after sent to Kombo; NULL for a full listing.
    observed_at TEXT, -- When the listing was observed; every event of the run carries it.
    next_watermark TEXT, -- Watermark the run set; NULL when it set none.
    pid INTEGER NOT NULL, -- Process that ran it.
    hostname TEXT NOT NULL, -- Host that ran it.
    jobs_seen INTEGER, -- Distinct jobs listed.
    applications_seen INTEGER, -- Distinct applications listed, unparseable ones included.
    quarantined INTEGER, -- Records that could not be parsed.
    events INTEGER, -- Events written, all kinds.
    first_seen INTEGER, -- first_seen events written.
    stage_changed INTEGER, -- stage_changed events written.
    outcome_changed INTEGER, -- outcome_changed events written.
    job_changed INTEGER, -- job_changed events written.
    deleted INTEGER, -- deleted events written.
    restored INTEGER, -- restored events written.
    requests INTEGER, -- HTTP requests the client made.
    retries INTEGER, -- Requests the client retried.
    waited_seconds REAL, -- Seconds the client spent backing off.
    staged_records INTEGER NOT NULL DEFAULT 0, -- Application records staged, repeats included.
    error TEXT, -- Why the run did not succeed.
    published_at TEXT, -- When a succeeded run's changes went out to Prefect (artifacts, events) or were settled without; NULL until then.
    publish_note TEXT, -- How, when not by the run itself: published late by a later run, or not published (see the text).
    machine TEXT, -- Boot id and pid namespace of the process; NULL when unreadable or run before stagewatch recorded it.
    absent_rescued INTEGER, -- Full listing: applications it missed that a lookup by id still found (treated as listed).
    absent_deleted INTEGER, -- Full listing: applications missing from it and from the lookup by id, recorded as deleted.
    jobs_refetched INTEGER, -- Jobs fetched again by id: an application's job or stage was not in the job snapshot.
    jobs_unavailable TEXT -- Kombo's error code when the ATS offers no jobs: applications were tracked without stage order.
)
""",
    """
INSERT INTO sync_runs SELECT *, NULL, NULL, NULL, NULL FROM sync_runs_0004
""",
    "DROP TABLE sync_runs_0004",
    "CREATE INDEX sync_runs_integration ON sync_runs (integration_id, id)",
    """
CREATE INDEX sync_runs_unpublished ON sync_runs (integration_id, id)
    WHERE status = 'succeeded' AND published_at IS NULL
""",
    "DROP VIEW stage_history",
    # A stay opens when the application is first seen, moves, or comes back from a deletion, and
    # closes at the next of those or at its deletion: a deleted application is in no stage.
    """
CREATE VIEW stage_history AS -- One row per stay of an application in a stage (SCD type 2), from the events.
SELECT
    integration_id, -- Integration.
    application_id, -- Application.
    job_id, -- Job when the stage was entered.
    stage_id, -- Stage.
    stage_name, -- Stage name when entered.
    entered_at, -- Observation that first saw the application in the stage (valid_from).
    entered_after, -- The integration's previous observation: the move happened after it (NULL on its first run).
    left_at, -- Observation that saw it in another stage or deleted (valid_to); NULL for the current stay.
    left_by, -- What ended the stay: stage_changed or deleted; NULL for the current stay.
    round((julianday(left_at) - julianday(entered_at)) * 86400.0, 3) AS seconds_in_stage, -- left_at minus entered_at; NULL for the current stay.
    left_at IS NULL AS is_current, -- 1 for the application's current stay.
    sync_run_id, -- Run that saw it enter.
    event_id -- Event that opened the stay.
FROM (
    SELECT
        id AS event_id,
        kind,
        integration_id,
        application_id,
        job_id,
        to_stage_id AS stage_id,
        to_stage_name AS stage_name,
        observed_at AS entered_at,
        previous_observed_at AS entered_after,
        lead(observed_at) OVER stays AS left_at,
        lead(kind) OVER stays AS left_by,
        sync_run_id
    FROM events
    WHERE kind IN ('first_seen', 'stage_changed', 'restored', 'deleted')
    WINDOW stays AS (PARTITION BY integration_id, application_id ORDER BY id)
)
WHERE kind != 'deleted'
""",
]


@_migration("0005_run_facts_and_stays")
def m0005_run_facts_and_stays(db: Database) -> None:
    for statement in RUN_FACTS:
        db.execute(statement.strip())


# -- 0006: stage analytics -------------------------------------------------------------------------
# The views read stage_history (m0005) and add what analytics needs: bounds on both ends, the stage's
# order in its job, and how each stay ended. They are written for a PostgreSQL twin: standard window
# functions and CASE instead of SQLite's IS NOT / max(a, b) / NULLS LAST. The one dialect bit, seconds
# between two stored timestamps, comes from `_seconds` (PostgreSQL: extract(epoch from b - a)).
# Values needing a lookup are joined by id, never repeated as scalar subqueries: SQLite copies a
# subquery into every expression that names its column when it flattens the query.
# Frozen with the migration: a later change to these views is a new migration, not an edit here.


def _seconds(later: str, earlier: str) -> str:
    """SQLite: seconds from `earlier` to `later`, two stored UTC timestamps (the dialect bit)."""
    return f"round((julianday({later}) - julianday({earlier})) * 86400.0, 3)"


# Outcomes that take an application out of the pipeline: its stay ends when one is observed.
_DECIDED = "('HIRED', 'DECLINED')"

STAGE_STAYS = f"""
CREATE VIEW stage_stays AS -- One row per stay, from stage_history: both time bounds, the stage's order in its job, and how the stay ended.
SELECT
    u.integration_id, -- Integration.
    u.application_id, -- Application.
    u.job_id, -- Job when the stage was entered.
    u.stage_id, -- Stage.
    u.stage_name, -- Stage name when entered.
    u.stage_index, -- The stage's index in that job as last listed; NULL when the ATS gives none or the stage is not among the job's.
    u.stage_position, -- The stage's position in the job's stage list as last listed; NULL when not among them.
    u.entered_at, -- Start of the stay: remote_created_at for an application's first stay when Kombo gives it, else the observation that saw it enter.
    u.entered_after, -- Lower bound of the start: the observation before (or remote_created_at); NULL when unknown (the integration's first run).
    u.entered_from, -- created (entered_at is remote_created_at) or observed.
    u.left_at, -- End of the stay: the observation that saw the move, deletion, hire or decline; NULL while current.
    u.left_after, -- Lower bound of the end: the observation before it; NULL while current or when unknown.
    u.ended, -- moved_forward, moved_backward, moved_unknown, hired, declined, deleted, job_changed or current.
    {_seconds("u.left_at", "u.entered_at")} AS seconds_in_stage, -- left_at minus entered_at; NULL while current.
    round({_seconds("u.left_at", "u.entered_at")} / 86400.0, 3) AS days_in_stage, -- seconds_in_stage in days.
    {_seconds("u.entered_at", "u.entered_after")} AS entry_window_seconds, -- entered_at minus entered_after: how early the stay may have started; NULL when unbounded.
    {_seconds("u.left_at", "u.left_after")} AS exit_window_seconds, -- left_at minus left_after: how early it may have ended; NULL while current or unbounded.
    CASE WHEN u.ended = 'current' THEN 1 ELSE 0 END AS is_current, -- 1 while the application is in the stage and undecided.
    u.sync_run_id, -- Run that saw it enter.
    u.event_id -- Event that opened the stay (stage_history.event_id).
FROM (
    SELECT
        t.integration_id, t.application_id, t.job_id, t.stage_id, t.stage_name,
        js.stage_index, js.position AS stage_position,
        coalesce(t.created_at, t.observed_entry) AS entered_at,
        CASE WHEN t.created_at IS NOT NULL THEN t.created_at ELSE t.observed_after END
            AS entered_after,
        CASE WHEN t.created_at IS NOT NULL THEN 'created' ELSE 'observed' END AS entered_from,
        CASE
            WHEN upper(eo.to_outcome) IN {_DECIDED} THEN t.observed_entry
            WHEN d.id IS NOT NULL THEN d.observed_at
            ELSE t.observed_left
        END AS left_at,
        CASE
            WHEN upper(eo.to_outcome) IN {_DECIDED} THEN t.observed_after
            WHEN d.id IS NOT NULL THEN d.previous_observed_at
            ELSE c.previous_observed_at
        END AS left_after,
        CASE
            WHEN upper(eo.to_outcome) IN {_DECIDED} THEN lower(eo.to_outcome)
            WHEN d.id IS NOT NULL THEN lower(d.to_outcome)
            WHEN t.left_by = 'deleted' THEN 'deleted'
            WHEN t.left_by = 'stage_changed' AND coalesce(c.job_id, '') <> coalesce(t.job_id, '')
                THEN 'job_changed'
            WHEN t.left_by = 'stage_changed' THEN 'moved_' || coalesce(c.direction, 'unknown')
            ELSE 'current'
        END AS ended,
        t.sync_run_id, t.event_id
    FROM (
        SELECT
            s.*,
            CASE WHEN s.opened_by = 'first_seen' AND a.remote_created_at <= s.observed_entry
                THEN a.remote_created_at END AS created_at
        FROM (
            SELECT
                h.integration_id, h.application_id, h.job_id, h.stage_id, h.stage_name,
                h.entered_at AS observed_entry, h.entered_after AS observed_after,
                h.left_at AS observed_left, h.left_by, h.sync_run_id, h.event_id,
                opener.kind AS opened_by,
                (SELECT max(o.id) FROM events AS o
                    WHERE o.application_id = h.application_id
                        AND o.integration_id = h.integration_id AND o.id <= h.event_id
                        AND o.kind IN ('first_seen', 'restored', 'outcome_changed'))
                    AS entry_outcome_id,
                (SELECT min(o.id) FROM events AS o
                    WHERE o.application_id = h.application_id
                        AND o.integration_id = h.integration_id AND o.id > h.event_id
                        AND o.kind = 'outcome_changed' AND upper(o.to_outcome) IN {_DECIDED}
                        AND (h.left_at IS NULL OR o.observed_at < h.left_at)) AS decided_id,
                (SELECT min(o.id) FROM events AS o
                    WHERE o.application_id = h.application_id
                        AND o.integration_id = h.integration_id AND o.id > h.event_id
                        AND o.kind IN ('stage_changed', 'deleted')) AS closer_id
            FROM stage_history AS h
            JOIN events AS opener ON opener.id = h.event_id
        ) AS s
        LEFT JOIN applications AS a
            ON a.integration_id = s.integration_id AND a.application_id = s.application_id
    ) AS t
    LEFT JOIN events AS eo ON eo.id = t.entry_outcome_id
    LEFT JOIN events AS d ON d.id = t.decided_id
    LEFT JOIN events AS c ON c.id = t.closer_id
    LEFT JOIN job_stages AS js
        ON js.integration_id = t.integration_id AND js.job_id = t.job_id
            AND js.stage_id = t.stage_id
) AS u
"""

# The funnel over `{stays}` and `{job_stages}`: the view passes stage_stays and job_stages,
# `stagewatch funnel --since` a filtered subquery of the stays, 0012 the stale jobs' (each job's
# rows depend on its own stays and stages alone), so all give the same numbers. Stages come in
# index order; stages without an index (or not among the job's listed stages) follow in listed
# order, then by name. Medians and p90 are nearest-rank over closed stays, in integer arithmetic
# (SQLite has no percentile_cont).
# The stays are MATERIALIZED (SQLite 3.35+, PostgreSQL 12+): read four times, computed once.
FUNNEL_SELECT = f"""
WITH stays AS MATERIALIZED (
    SELECT
        x.*,
        max(x.stage_index) OVER (
            PARTITION BY x.integration_id, x.application_id, x.job_id ORDER BY x.event_id
            ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
        ) AS later_max_index,
        row_number() OVER (
            PARTITION BY x.integration_id, x.job_id, x.stage_id,
                CASE WHEN x.seconds_in_stage IS NULL THEN 1 ELSE 0 END
            ORDER BY x.seconds_in_stage
        ) AS duration_rank,
        count(x.seconds_in_stage) OVER (PARTITION BY x.integration_id, x.job_id, x.stage_id)
            AS closed_stays
    FROM {{stays}} AS x
),
stages AS MATERIALIZED (
    SELECT integration_id, job_id, stage_id, name AS stage_name, stage_index,
        position AS stage_position, 1 AS listed
    FROM {{job_stages}}
    UNION ALL
    SELECT integration_id, job_id, stage_id, max(stage_name), NULL, NULL, 0
    FROM stays
    WHERE stage_position IS NULL
    GROUP BY integration_id, job_id, stage_id
),
per_stage AS (
    SELECT
        integration_id, job_id, stage_id,
        count(DISTINCT application_id) AS reached,
        count(DISTINCT CASE WHEN ended = 'current' THEN application_id END) AS currently_in,
        count(DISTINCT CASE WHEN later_max_index > stage_index THEN application_id END)
            AS reached_later,
        sum(CASE WHEN ended = 'moved_backward' THEN 1 ELSE 0 END) AS backward_out,
        sum(CASE WHEN ended = 'hired' THEN 1 ELSE 0 END) AS hired_in,
        sum(CASE WHEN ended = 'declined' THEN 1 ELSE 0 END) AS declined_in,
        round(avg(CASE WHEN seconds_in_stage IS NOT NULL AND duration_rank
            IN ((closed_stays + 1) / 2, (closed_stays + 2) / 2) THEN seconds_in_stage END)
            / 86400.0, 3) AS median_days,
        round(max(CASE WHEN seconds_in_stage IS NOT NULL
            AND duration_rank = (9 * closed_stays + 9) / 10 THEN seconds_in_stage END)
            / 86400.0, 3) AS p90_days
    FROM stays
    GROUP BY integration_id, job_id, stage_id
),
levels AS (
    SELECT integration_id, job_id, stage_index,
        lead(stage_index) OVER (PARTITION BY integration_id, job_id ORDER BY stage_index)
            AS next_index
    FROM (SELECT DISTINCT integration_id, job_id, stage_index FROM stages
        WHERE stage_index IS NOT NULL) AS distinct_levels
),
hires AS (
    SELECT
        integration_id, job_id, seconds_to_hire,
        row_number() OVER (PARTITION BY integration_id, job_id ORDER BY seconds_to_hire) AS r,
        count(*) OVER (PARTITION BY integration_id, job_id) AS n
    FROM (
        SELECT integration_id, job_id,
            {_seconds("max(CASE WHEN ended = 'hired' THEN left_at END)", "min(entered_at)")}
                AS seconds_to_hire
        FROM stays
        GROUP BY integration_id, job_id, application_id
    ) AS per_application
    WHERE seconds_to_hire IS NOT NULL
),
hire_medians AS (
    SELECT integration_id, job_id, round(avg(seconds_to_hire) / 86400.0, 3) AS median_days
    FROM hires
    WHERE r IN ((n + 1) / 2, (n + 2) / 2)
    GROUP BY integration_id, job_id
),
per_job AS (
    SELECT
        s.integration_id, s.job_id,
        count(DISTINCT CASE WHEN s.ended = 'hired' THEN s.application_id END) AS job_hired,
        count(DISTINCT CASE WHEN s.ended = 'declined' THEN s.application_id END) AS job_declined,
        max(m.median_days) AS job_median_days_to_hire
    FROM stays AS s
    LEFT JOIN hire_medians AS m ON m.integration_id = s.integration_id AND m.job_id = s.job_id
    GROUP BY s.integration_id, s.job_id
),
ordered AS (
    SELECT
        st.*,
        row_number() OVER (
            PARTITION BY st.integration_id, st.job_id
            ORDER BY CASE WHEN st.stage_index IS NULL THEN 1 ELSE 0 END, st.stage_index,
                CASE WHEN st.stage_position IS NULL THEN 1 ELSE 0 END, st.stage_position,
                st.stage_name, st.stage_id
        ) AS stage_order,
        count(*) OVER (PARTITION BY st.integration_id, st.job_id, st.stage_index) AS sharing_index,
        lv.next_index
    FROM stages AS st
    LEFT JOIN levels AS lv
        ON lv.integration_id = st.integration_id AND lv.job_id = st.job_id
            AND lv.stage_index = st.stage_index
)
SELECT
    o.integration_id, -- Integration.
    o.job_id, -- Job.
    j.name AS job_name, -- Job title as last listed.
    o.stage_order, -- 1, 2, ...: index order, then stages without an index in listed order, then by name.
    o.stage_id, -- Stage.
    o.stage_name, -- Stage name as last listed (or as last seen on an application).
    o.stage_index, -- The ATS's index; NULL when it gives none.
    CASE
        WHEN o.listed = 0 THEN 'not among the job''s stages'
        WHEN o.stage_index IS NULL THEN 'no index'
        WHEN o.sharing_index > 1 THEN 'index shared'
    END AS order_note, -- Why the order is uncertain: no index, index shared, or not among the job's stages.
    coalesce(p.reached, 0) AS reached, -- Applications that entered the stage.
    coalesce(p.currently_in, 0) AS currently_in, -- Applications in it now, undecided.
    coalesce(p.reached_later, 0) AS reached_later, -- Of those that reached it, applications that later reached a stage with a higher index.
    CASE WHEN o.next_index IS NOT NULL AND p.reached > 0
        THEN round(1.0 * p.reached_later / p.reached, 4) END AS conversion, -- reached_later / reached; NULL for the last stage and stages without an index.
    p.median_days, -- Median days in the stage over stays that ended (nearest rank).
    p.p90_days, -- 90th percentile days in the stage over stays that ended (nearest rank).
    coalesce(p.backward_out, 0) AS backward_out, -- Stays that ended with a move back.
    coalesce(p.hired_in, 0) AS hired_in, -- Stays that ended hired.
    coalesce(p.declined_in, 0) AS declined_in, -- Stays that ended declined.
    coalesce(k.job_hired, 0) AS job_hired, -- The job's applications hired (repeated on each of its rows).
    coalesce(k.job_declined, 0) AS job_declined, -- The job's applications declined (repeated on each of its rows).
    k.job_median_days_to_hire -- Median days from an application's first stay in the job to its hire.
FROM ordered AS o
LEFT JOIN per_stage AS p
    ON p.integration_id = o.integration_id AND p.job_id = o.job_id
        AND coalesce(p.stage_id, '') = coalesce(o.stage_id, '')
LEFT JOIN per_job AS k ON k.integration_id = o.integration_id AND k.job_id = o.job_id
LEFT JOIN jobs AS j ON j.integration_id = o.integration_id AND j.job_id = o.job_id
"""

STUCK_ANNOUNCEMENTS = """
CREATE TABLE stuck_announcements ( -- Stays announced as stuck (stagewatch.application.stuck): one row each, so none is announced twice.
    event_id INTEGER PRIMARY KEY, -- The stay: the event that opened it (stage_stays.event_id).
    integration_id TEXT NOT NULL, -- Integration.
    application_id TEXT NOT NULL, -- Application.
    job_id TEXT, -- Job.
    stage_id TEXT, -- Stage it was stuck in.
    threshold_days REAL NOT NULL, -- The threshold it crossed.
    days_in_stage REAL NOT NULL, -- Days in the stage when announced (from entered_at).
    announced_at TEXT NOT NULL -- When the event was sent.
)
"""

STAGE_ANALYTICS = [
    STAGE_STAYS,
    "CREATE VIEW job_funnel AS -- Per job and stage, in stage order: applications that reached it, are in it, moved on; days in it; the job's hires and declines.\n"
    + FUNNEL_SELECT.format(stays="stage_stays", job_stages="job_stages").lstrip("\n"),
    STUCK_ANNOUNCEMENTS,
    "CREATE INDEX stuck_announcements_integration ON stuck_announcements (integration_id)",
]


@_migration("0006_stage_analytics")
def m0006_stage_analytics(db: Database) -> None:
    for statement in STAGE_ANALYTICS:
        db.execute(statement.strip())


# The import ledger (`stagewatch import`): a row is written before its request goes out and
# finished after the answer, so a crash in between leaves 'sending', which reads as "may have
# happened", never as "not sent". The diff marks an imported application's first sighting here.
IMPORTS = [
    """
CREATE TABLE imports ( -- The import ledger: each ATS application stagewatch asked Kombo to track, and what came of it.
    integration_id TEXT NOT NULL, -- Integration.
    import_key TEXT NOT NULL, -- The ATS ids as sent, canonical JSON ({"<tool>": {"id_type": ..., ids}}).
    tool TEXT NOT NULL, -- The ATS the ids belong to (greenhouse, recruitee...).
    status TEXT NOT NULL CHECK (status IN ('sending', 'imported', 'already_tracked', 'rejected', 'failed', 'unknown')), -- sending (in flight, or the process died: may have happened), imported, already_tracked, rejected (Kombo refused), failed (Kombo certainly did nothing), unknown (may have happened).
    application_id TEXT, -- Kombo's id for the application, when Kombo answered imported.
    tracked_at TEXT, -- tracked_at as Kombo answered it (else as sent; NULL: Kombo's choice).
    error_code TEXT, -- Kombo's error code when it refused.
    message TEXT, -- Kombo's message or warnings, or why the outcome is unknown.
    attempts INTEGER NOT NULL, -- Requests sent for it so far.
    first_sent_at TEXT NOT NULL, -- When stagewatch first sent it.
    updated_at TEXT NOT NULL, -- When the row last changed.
    first_seen_at TEXT, -- Observation whose listing first held the imported application (its first_seen event).
    first_seen_run_id INTEGER, -- Sync run of that observation.
    PRIMARY KEY (integration_id, import_key)
)
""",
    """
CREATE INDEX imports_unseen ON imports (integration_id, application_id)
    WHERE application_id IS NOT NULL AND first_seen_at IS NULL
""",
    """
CREATE VIEW first_sightings AS -- Every first_seen event, with how the application came to be tracked.
SELECT
    e.id AS event_id, -- The first_seen event.
    e.integration_id, -- Integration.
    e.application_id, -- Application.
    e.observed_at, -- When the run saw it first.
    e.sync_run_id, -- Run that saw it first.
    CASE WHEN i.import_key IS NULL THEN 'tracked' ELSE 'imported' END AS origin, -- imported (stagewatch import) or tracked (Kombo tracked it from its creation).
    i.tool AS import_tool, -- imported: the ATS.
    i.import_key -- imported: the ATS ids it was imported by.
FROM events AS e
LEFT JOIN imports AS i
    ON i.integration_id = e.integration_id AND i.application_id = e.application_id
        AND i.first_seen_run_id = e.sync_run_id
WHERE e.kind = 'first_seen'
""",
]


@_migration("0007_import_ledger")
def m0007_import_ledger(db: Database) -> None:
    for statement in IMPORTS:
        db.execute(statement.strip())


# Kombo's newer responses say whether a stage is ACTIVE or INACTIVE (applications can sit in an
# inactive one). ADD COLUMN, not a rebuild, as the change log may hold millions of rows; a `--`
# comment would swallow the closing parenthesis SQLite appends the column before, so `/* */` ones.
STAGE_STATUS = [
    "ALTER TABLE applications ADD COLUMN stage_status TEXT "
    "/* The current stage's status: ACTIVE, INACTIVE, NULL when not said, or the ATS's own value. */",
    "ALTER TABLE staged_applications ADD COLUMN stage_status TEXT /* As in applications. */",
    "ALTER TABLE events ADD COLUMN from_stage_status TEXT "
    "/* stage_changed: status of the stage left, when known. */",
    "ALTER TABLE events ADD COLUMN to_stage_status TEXT "
    "/* stage_changed, first_seen, restored: status of the stage entered, when known. */",
]


@_migration("0008_stage_status")
def m0008_stage_status(db: Database) -> None:
    for statement in STAGE_STATUS:
        db.execute(statement)


# Webhook-triggered syncs queue one deep per integration (stagewatch.coalesce): the run holding
# this place lists after every webhook that found it taken, so those runs need not sync at all.
WAITERS = [
    """
CREATE TABLE sync_waiters ( -- The one triggered sync per integration waiting for the running one; later triggers coalesce into it.
    integration_id TEXT PRIMARY KEY, -- Integration.
    token TEXT NOT NULL, -- Who waits: the triggered flow run's id.
    pid INTEGER NOT NULL, -- Process that waits; on this machine a dead pid frees the place at once.
    hostname TEXT NOT NULL, -- Host name of that process.
    machine TEXT, -- Boot id and pid namespace of that process; NULL when unreadable (then only the lease frees the place).
    since TEXT NOT NULL, -- When it took the place.
    renewed_at TEXT NOT NULL, -- When it last renewed its lease on the place.
    lease_expires_at TEXT NOT NULL, -- renewed_at plus the lease length: from then on another triggered sync may take the place.
    coalesced INTEGER NOT NULL DEFAULT 0 -- Triggered syncs that found the place taken and ended Coalesced.
)
""",
]


@_migration("0009_sync_waiters")
def m0009_sync_waiters(db: Database) -> None:
    for statement in WAITERS:
        db.execute(statement.strip())


# -- 0010: stays kept, not derived ------------------------------------------------------------------
# Deriving the stays from the change log on every read sorted the whole log per query (see
# benchmarks/RESULTS.md), so commit_run keeps them in a table: this migration backfills it from the
# log (`diff.BACKFILL_STAYS`), each run applies its own events (`diff._KEEP_STAYS`). The names users
# query stay, with the same columns and numbers: stage order still comes from the job's stages as
# last listed and durations from the bounds, both at read time, so a re-ordered job needs no
# rewrite of its stays. The backfill statement lives in diff.py beside the per-run ones, so the two
# read as one definition; changing what a stay means is a new migration that rebuilds the table.
STAYS_KEPT_TABLE = """
CREATE TABLE stage_stays_kept ( -- One row per stay of an application in a stage, kept by commit_run in the transaction that writes the run's events; read through stage_stays.
    event_id INTEGER PRIMARY KEY, -- Event that opened the stay (first_seen, stage_changed or restored).
    integration_id TEXT NOT NULL, -- Integration.
    application_id TEXT NOT NULL, -- Application.
    job_id TEXT, -- Job when the stage was entered.
    stage_id TEXT, -- Stage.
    stage_name TEXT, -- Stage name when entered.
    entered_at TEXT NOT NULL, -- As in stage_stays.
    entered_after TEXT, -- As in stage_stays.
    entered_from TEXT NOT NULL, -- As in stage_stays.
    left_at TEXT, -- As in stage_stays.
    left_after TEXT, -- As in stage_stays.
    ended TEXT NOT NULL, -- As in stage_stays.
    sync_run_id INTEGER NOT NULL, -- Run that saw it enter.
    observed_entry TEXT NOT NULL, -- Observation that saw it enter (stage_history.entered_at).
    observed_after TEXT, -- The observation before that (stage_history.entered_after).
    observed_left TEXT, -- Observation that saw it move or deleted (stage_history.left_at).
    left_by TEXT -- stage_changed or deleted (stage_history.left_by); NULL while not left.
)
"""

KEPT_STAGE_HISTORY = """
CREATE VIEW stage_history AS -- One row per stay of an application in a stage (SCD type 2), from the kept stays.
SELECT
    integration_id, -- Integration.
    application_id, -- Application.
    job_id, -- Job when the stage was entered.
    stage_id, -- Stage.
    stage_name, -- Stage name when entered.
    observed_entry AS entered_at, -- Observation that first saw the application in the stage (valid_from).
    observed_after AS entered_after, -- The integration's previous observation: the move happened after it (NULL on its first run).
    observed_left AS left_at, -- Observation that saw it in another stage or deleted (valid_to); NULL for the current stay.
    left_by, -- What ended the stay: stage_changed or deleted; NULL for the current stay.
    round((julianday(observed_left) - julianday(observed_entry)) * 86400.0, 3) AS seconds_in_stage, -- left_at minus entered_at; NULL for the current stay.
    CASE WHEN observed_left IS NULL THEN 1 ELSE 0 END AS is_current, -- 1 for the application's current stay.
    sync_run_id, -- Run that saw it enter.
    event_id -- Event that opened the stay.
FROM stage_stays_kept
"""

KEPT_STAGE_STAYS = f"""
CREATE VIEW stage_stays AS -- One row per stay: both time bounds, the stage's order in its job, and how the stay ended (kept by commit_run).
SELECT
    k.integration_id, -- Integration.
    k.application_id, -- Application.
    k.job_id, -- Job when the stage was entered.
    k.stage_id, -- Stage.
    k.stage_name, -- Stage name when entered.
    js.stage_index, -- The stage's index in that job as last listed; NULL when the ATS gives none or the stage is not among the job's.
    js.position AS stage_position, -- The stage's position in the job's stage list as last listed; NULL when not among them.
    k.entered_at, -- Start of the stay: remote_created_at for an application's first stay when Kombo gives it, else the observation that saw it enter.
    k.entered_after, -- Lower bound of the start: the observation before (or remote_created_at); NULL when unknown (the integration's first run).
    k.entered_from, -- created (entered_at is remote_created_at) or observed.
    k.left_at, -- End of the stay: the observation that saw the move, deletion, hire or decline; NULL while current.
    k.left_after, -- Lower bound of the end: the observation before it; NULL while current or when unknown.
    k.ended, -- moved_forward, moved_backward, moved_unknown, hired, declined, deleted, job_changed or current.
    {_seconds("k.left_at", "k.entered_at")} AS seconds_in_stage, -- left_at minus entered_at; NULL while current.
    round({_seconds("k.left_at", "k.entered_at")} / 86400.0, 3) AS days_in_stage, -- seconds_in_stage in days.
    {_seconds("k.entered_at", "k.entered_after")} AS entry_window_seconds, -- entered_at minus entered_after: how early the stay may have started; NULL when unbounded.
    {_seconds("k.left_at", "k.left_after")} AS exit_window_seconds, -- left_at minus left_after: how early it may have ended; NULL while current or unbounded.
    CASE WHEN k.ended = 'current' THEN 1 ELSE 0 END AS is_current, -- 1 while the application is in the stage and undecided.
    k.sync_run_id, -- Run that saw it enter.
    k.event_id -- Event that opened the stay (stage_history.event_id).
FROM stage_stays_kept AS k
LEFT JOIN job_stages AS js
    ON js.integration_id = k.integration_id AND js.job_id = k.job_id AND js.stage_id = k.stage_id
"""

# Indexes serve the reads: an integration's stays in application order (the rowid, event_id, ends
# every index) and one job's, so neither sorts; and the open stays `stuck` reads.
STAYS_KEPT_INDEXES = [
    "CREATE INDEX stage_stays_kept_application ON stage_stays_kept (integration_id, application_id)",
    "CREATE INDEX stage_stays_kept_job ON stage_stays_kept (integration_id, job_id, application_id)",
    """
CREATE INDEX stage_stays_kept_current ON stage_stays_kept (integration_id, application_id)
    WHERE ended = 'current'
""",
]

STAYS_KEPT = [
    "DROP VIEW job_funnel",
    "DROP VIEW stage_stays",
    "DROP VIEW stage_history",
    STAYS_KEPT_TABLE,
    BACKFILL_STAYS,  # indexes after it, so they are built once, from sorted keys
    *STAYS_KEPT_INDEXES,
    KEPT_STAGE_HISTORY,
    KEPT_STAGE_STAYS,
    STAGE_ANALYTICS[1],  # job_funnel, as in 0006, now over the kept stays
]


@_migration("0010_stays_kept")
def m0010_stays_kept(db: Database) -> None:
    for statement in STAYS_KEPT:
        db.execute(statement.strip())


# The hourly fan-out checks an integration with one request before syncing it (stagewatch.checks);
# an idle one records its check here instead of a run, so `status` still says when it was looked at.
CHECKS = [
    """
CREATE TABLE integration_checks ( -- The last check of each integration: one request listing what changed after its watermark.
    integration_id TEXT PRIMARY KEY, -- Integration.
    checked_at TEXT NOT NULL, -- When Kombo served the check's page (its Date header), else our clock before the request.
    window_start TEXT, -- The watermark the check listed after; the integration's watermark is left where it was.
    result TEXT NOT NULL, -- idle (nothing listed: no sync ran), changed (a sync ran) or failed (the check failed; a sync ran).
    detail TEXT, -- For failed: the error, without the request.
    requests INTEGER NOT NULL -- Requests the check sent, retries included.
)
""",
]


@_migration("0011_integration_checks")
def m0011_integration_checks(db: Database) -> None:
    for statement in CHECKS:
        db.execute(statement.strip())


# -- 0012: funnels kept per job ----------------------------------------------------------------------
# The funnel of a whole integration sorted every stay about ten times per read (minutes at 10M
# stays, benchmarks/RESULTS.md). Each job's rows depend on its own stays and stages alone, so they
# are kept per job: commit_run marks a job stale when the run touches one of its stays or lists the
# job changed (diff.py), and `refresh_funnels` rebuilds the stale jobs' rows. The view reads the
# kept rows of fresh jobs and computes the stale jobs' from their stays, so it never lags the log;
# a read costs the stays of the jobs changed since the last refresh.
FUNNEL_KEPT_TABLE = """
CREATE TABLE job_funnel_kept ( -- job_funnel's rows of each job as last rebuilt (by stagewatch funnel or the pipeline report); read through job_funnel, which computes a job's rows from its stays instead while funnel_stale lists it.
    integration_id TEXT NOT NULL, -- Integration.
    job_key TEXT NOT NULL, -- job_id, or '' for stays without a job.
    stage_order INTEGER NOT NULL, -- As in job_funnel.
    job_id TEXT, -- As in job_funnel.
    stage_id TEXT, -- As in job_funnel.
    stage_name TEXT, -- As in job_funnel.
    stage_index INTEGER, -- As in job_funnel.
    order_note TEXT, -- As in job_funnel.
    reached INTEGER NOT NULL, -- As in job_funnel.
    currently_in INTEGER NOT NULL, -- As in job_funnel.
    reached_later INTEGER NOT NULL, -- As in job_funnel.
    conversion REAL, -- As in job_funnel.
    median_days REAL, -- As in job_funnel.
    p90_days REAL, -- As in job_funnel.
    backward_out INTEGER NOT NULL, -- As in job_funnel.
    hired_in INTEGER NOT NULL, -- As in job_funnel.
    declined_in INTEGER NOT NULL, -- As in job_funnel.
    job_hired INTEGER NOT NULL, -- As in job_funnel.
    job_declined INTEGER NOT NULL, -- As in job_funnel.
    job_median_days_to_hire REAL, -- As in job_funnel.
    PRIMARY KEY (integration_id, job_key, stage_order)
) WITHOUT ROWID
"""

FUNNEL_STALE_TABLE = """
CREATE TABLE funnel_stale ( -- Jobs a run changed since their kept funnel rows were rebuilt: job_funnel computes their rows from the stays until the next rebuild.
    integration_id TEXT NOT NULL, -- Integration.
    job_key TEXT NOT NULL, -- job_id, or '' for stays without a job.
    marked INTEGER NOT NULL, -- Run that marked it last (0: the migration); a refresh clears only the marks it read.
    PRIMARY KEY (integration_id, job_key)
) WITHOUT ROWID
"""

KEPT_COLUMNS = (
    "integration_id, job_key, stage_order, job_id, stage_id, stage_name, stage_index, order_note, "
    "reached, currently_in, reached_later, conversion, median_days, p90_days, backward_out, "
    "hired_in, declined_in, job_hired, job_declined, job_median_days_to_hire"
)


def stale_funnel(stale: str) -> str:
    """FUNNEL_SELECT over the jobs `stale` lists (a table or subquery with integration_id and
    job_key): their stays, the stays without a job when it lists '', and their stages."""
    # CROSS JOIN, with the stale jobs first: SQLite keeps that order, walking the stale jobs and
    # seeking their stays by job. A plain join or IN let it scan every stay of the integration in
    # application order (the first window's), 5 s at 10M stays for one stale job.
    on = "WHERE k.integration_id = s.integration_id AND"
    stays = (
        f"(SELECT k.* FROM {stale} AS s CROSS JOIN stage_stays AS k {on} k.job_id = s.job_key "
        f"UNION ALL SELECT k.* FROM {stale} AS s CROSS JOIN stage_stays AS k {on} "
        "k.job_id IS NULL AND s.job_key = '')"
    )
    stages = (  # aliased here: the template names job_stages bare
        f"(SELECT js.* FROM {stale} AS s CROSS JOIN job_stages AS js "
        "WHERE js.integration_id = s.integration_id AND js.job_id = s.job_key) AS stale_stages"
    )
    return FUNNEL_SELECT.format(stays=stays, job_stages=stages)


def kept_funnel(stale: str, where: str = "") -> str:
    """job_funnel's rows: kept ones of the jobs `stale` does not list, computed ones of those it
    does; `where` (over f, the kept rows) narrows the kept part."""
    kept_where = f"{where} AND " if where else ""
    return f"""
SELECT
    f.integration_id, -- Integration.
    f.job_id, -- Job.
    j.name AS job_name, -- Job title as last listed.
    f.stage_order, -- 1, 2, ...: index order, then stages without an index in listed order, then by name.
    f.stage_id, -- Stage.
    f.stage_name, -- Stage name as last listed (or as last seen on an application).
    f.stage_index, -- The ATS's index; NULL when it gives none.
    f.order_note, -- Why the order is uncertain: no index, index shared, or not among the job's stages.
    f.reached, -- Applications that entered the stage.
    f.currently_in, -- Applications in it now, undecided.
    f.reached_later, -- Of those that reached it, applications that later reached a stage with a higher index.
    f.conversion, -- reached_later / reached; NULL for the last stage and stages without an index.
    f.median_days, -- Median days in the stage over stays that ended (nearest rank).
    f.p90_days, -- 90th percentile days in the stage over stays that ended (nearest rank).
    f.backward_out, -- Stays that ended with a move back.
    f.hired_in, -- Stays that ended hired.
    f.declined_in, -- Stays that ended declined.
    f.job_hired, -- The job's applications hired (repeated on each of its rows).
    f.job_declined, -- The job's applications declined (repeated on each of its rows).
    f.job_median_days_to_hire -- Median days from an application's first stay in the job to its hire.
FROM job_funnel_kept AS f
LEFT JOIN jobs AS j ON j.integration_id = f.integration_id AND j.job_id = f.job_id
WHERE {kept_where}NOT EXISTS (
    SELECT 1 FROM {stale} AS s WHERE s.integration_id = f.integration_id AND s.job_key = f.job_key
)
UNION ALL
SELECT * FROM ({stale_funnel(stale)}) AS fresh
"""


# The jobs a rebuild works on (funnel_stale's rows as it read them), and their kept rows computed
# from the stays: the migration builds every job this way, `store.funnels` a few at a time.
FUNNEL_JOBS_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS sw_funnel_jobs (
    integration_id TEXT NOT NULL, job_key TEXT NOT NULL, marked INTEGER NOT NULL,
    PRIMARY KEY (integration_id, job_key)
)
"""

KEPT_ROWS = f"""
SELECT integration_id, coalesce(job_id, '') AS job_key, stage_order, job_id, stage_id, stage_name,
    stage_index, order_note, reached, currently_in, reached_later, conversion, median_days,
    p90_days, backward_out, hired_in, declined_in, job_hired, job_declined, job_median_days_to_hire
FROM ({stale_funnel("temp.sw_funnel_jobs")}) AS f
"""

FUNNELS_KEPT = [
    "DROP VIEW job_funnel",
    FUNNEL_KEPT_TABLE,
    FUNNEL_STALE_TABLE,
    FUNNEL_JOBS_TABLE,
    # Every job with stages or stays, built once here: none is left stale.
    """
INSERT INTO temp.sw_funnel_jobs (integration_id, job_key, marked)
SELECT integration_id, job_id, 0 FROM job_stages
UNION
SELECT integration_id, coalesce(job_id, ''), 0 FROM stage_stays_kept
""",
    f"INSERT INTO job_funnel_kept ({KEPT_COLUMNS})\n{KEPT_ROWS.strip()}",
    "DELETE FROM temp.sw_funnel_jobs",
    "CREATE VIEW job_funnel AS -- Per job and stage, in stage order: applications that reached it, are in it, moved on; days in it; the job's hires and declines. Kept per job (job_funnel_kept); a job's rows are computed from its stays while funnel_stale lists it.\n"
    + kept_funnel("funnel_stale").lstrip("\n"),
]


@_migration("0012_funnels_kept")
def m0012_funnels_kept(db: Database) -> None:
    for statement in FUNNELS_KEPT:
        db.execute(statement.strip())


# -- the live schema as markdown ------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A column added by ALTER TABLE sits after the last line as `, name TYPE /* comment */`.
_ADDED_COLUMN = re.compile(r",\s*([A-Za-z_][A-Za-z0-9_]*)\b[^,]*?/\*(.*?)\*/", re.S)
_UNCOMMENTED = {"_sqlite_migrations": "Migrations applied to this database (kept by sqlite-utils)."}


def _comments(sql: str, is_view: bool) -> tuple[str, dict[str, str]]:
    """The table's own comment (first line) and each column's trailing `--` comment."""
    lines = sql.splitlines()
    head = lines[0].partition("--")[2].strip()
    columns: dict[str, str] = {}
    for line in lines[1:]:
        code, sep, comment = line.partition("--")
        names = _IDENTIFIER.findall(code.strip().rstrip(","))
        if not sep or not names:
            continue
        columns.setdefault(names[-1] if is_view else names[0], comment.strip())
    for name, comment in _ADDED_COLUMN.findall(sql):
        columns.setdefault(name, comment.strip())
    return head, columns


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def schema_markdown(conn: sqlite3.Connection) -> str:
    """Every table and view of the live database, with the comments its DDL carries."""
    objects = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    indexes: dict[str, list[str]] = {}
    triggers: dict[str, list[str]] = {}
    for kind, name, table, _sql in objects:
        if kind == "index":
            columns = [row[2] for row in conn.execute(f"PRAGMA index_info({name})")]
            unique = conn.execute(
                'SELECT "unique" FROM pragma_index_list(?) WHERE name = ?', (table, name)
            ).fetchone()[0]
            partial = " (partial)" if " WHERE " in _sql.upper() else ""
            label = "unique " if unique else ""
            indexes.setdefault(table, []).append(f"`{name}` {label}({', '.join(columns)}){partial}")
        elif kind == "trigger":
            triggers.setdefault(table, []).append(f"`{name}`")
    out: list[str] = []
    for kind, name, _table, sql in objects:
        if kind not in ("table", "view"):
            continue
        head, comments = _comments(sql, is_view=kind == "view")
        head = head or _UNCOMMENTED.get(name, "")
        out.append(f"### `{name}`{' (view)' if kind == 'view' else ''}")
        out.append("")
        if head:
            out.append(head)
            out.append("")
        out.append("| column | type | description |")
        out.append("| --- | --- | --- |")
        for row in conn.execute(f"PRAGMA table_info({name})"):
            decl = [row["type"] or "any"]
            if row["notnull"]:
                decl.append("NOT NULL")
            if row["pk"]:
                decl.append("PK")
            out.append(
                f"| `{row['name']}` | {' '.join(decl)} | {_cell(comments.get(row['name'], ''))} |"
            )
        out.append("")
        if name in indexes:
            out.append("Indexes: " + "; ".join(indexes[name]) + ".")
            out.append("")
        if name in triggers:
            out.append("Triggers: " + ", ".join(triggers[name]) + ".")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


# Migrations that rewrite the change log's size in rows: an upgrade says so before it starts.
SLOW_MIGRATIONS = {
    "0010_stays_kept": "builds the kept stays from the change log",
    "0012_funnels_kept": "builds each job's funnel from the kept stays",
}


def upgrade_notice(store: str, pending: list[str]) -> str:
    """What an upgrade of an existing store is about to do, before a minutes-long migration."""
    slow = [f"{name} {SLOW_MIGRATIONS[name]}" for name in pending if name in SLOW_MIGRATIONS]
    note = f" ({'; '.join(slow)}: minutes on a store of millions of events)" if slow else ""
    return f"upgrading {store}: applying migrations {', '.join(pending)}{note}"
