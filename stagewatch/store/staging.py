"""Staging: a run's listed records written as they arrive, for the commit to diff.

Records stream in batches (one transaction per batch, not per page); only records that differ from
the live snapshot keep their content, the others are noted as listed. A worker thread with its own
connection looks up and writes each batch while the caller serialises the next.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from stagewatch.kombo.models import Application, Job, Quarantined
from stagewatch.runtime import listing_runtime
from stagewatch.store.connection import Database, crash_point
from stagewatch.store.errors import StoreError
from stagewatch.store.runs import Runs
from stagewatch.timeutil import format_ts

# Records an ApplicationStager holds before writing them in one transaction: per-page
# transactions spent most of a big listing committing (docs/performance.md).
STAGING_BATCH_RECORDS = 5000
# ...or after this long, so staging never lags a slow listing by more than a moment (a crash drill
# and `stagewatch status` readers see how far a listing got).
STAGING_FLUSH_SECONDS = 0.2
# A stager's worker seeks at random through the live index; a bigger cache barely helps it.
STAGER_CACHE_SIZE_KIB = 16 * 1024
_CANDIDATE_KEEP = ("id", "remote_id", "first_name", "last_name")


def _ts(value) -> str | None:
    return None if value is None else format_ts(value)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def _scrub(value: Any) -> Any:
    """Drop remote_data everywhere and candidate contact data, for payloads no model filtered."""
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            if key == "remote_data":
                continue
            if key == "candidate" and isinstance(item, dict):
                item = {k: item[k] for k in _CANDIDATE_KEEP if k in item}
            cleaned[key] = _scrub(item)
        return cleaned
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# A batch arrives as a JSON array of [id, hash] pairs. One row comes back, the JSON array of the
# positions whose hash the live snapshot does not hold: every index seek runs inside a single
# sqlite3 step, which releases the GIL, and the GIL is needed only for the few changed records.
# An unparseable record's pair has no hash: it is listed, but has nothing to stage.
_CHANGED_POSITIONS = """
SELECT json_group_array(b.key) FROM json_each(?2) AS b
WHERE json_type(b.value, '$[1]') = 'text' AND NOT EXISTS (
    SELECT 1 FROM applications AS a INDEXED BY applications_content
    WHERE a.integration_id = ?1 AND a.application_id = json_extract(b.value, '$[0]')
        AND a.content_hash = json_extract(b.value, '$[1]') AND a.deleted_observed_at IS NULL
)
"""

_RESERVE_SEQ = """
UPDATE sync_runs SET staged_records = staged_records + ? WHERE id = ? RETURNING staged_records
"""

# One statement per batch: each [id, hash] pair's seq is first + its position.
_STAGE_SEEN = """
INSERT INTO staged_seen (run_id, application_id, seq)
SELECT ?1, json_extract(value, '$[0]'), ?2 + key FROM json_each(?3)
"""


def _stamp_from_json(path: str) -> str:
    """SQL for a timestamp of the staged record `r` in `format_ts`'s form.

    pydantic writes a UTC datetime as `YYYY-MM-DDTHH:MM:SSZ`, or with six fraction digits when it
    has microseconds; `format_ts` keeps milliseconds, truncated. (The models' validator makes every
    timestamp UTC.) A test checks the two agree on random times.
    """
    value = f"json_extract(r, '{path}')"
    return (
        f"CASE length({value}) WHEN 20 THEN substr({value}, 1, 19) || '.000Z' "
        f"ELSE substr({value}, 1, 23) || 'Z' END"
    )


_INSERT_STAGED = """INSERT INTO staged_applications (
    run_id, seq, application_id, content_hash, raw, remote_id, job_id, stage_id, stage_name,
    outcome, rejection_reason_name, rejected_at, remote_deleted_at, changed_at,
    remote_created_at, remote_updated_at, stage_status
)"""

# The columns the diff reads are taken out of the stored JSON by SQLite, which parses each record
# once (its JSON cache) while the GIL is free for the thread parsing the next page; in Python this
# cost as much as serialising the record. The expressions mirror `Application.stage_id`,
# `stage_name` and `effective_job_id`. SQLite's json_extract cuts a string at an escaped NUL, so a
# record holding one takes `_STAGE_CHANGED_FROM_MODEL` instead.
# A batch's records arrive as one JSON array of [seq, id, hash, raw] in one statement: a stager's
# worker would otherwise wait for the GIL once per row (executemany steps each row) while the
# caller's thread serialises the next batch.
_STAGE_CHANGED = f"""
WITH batch AS MATERIALIZED (
    SELECT json_extract(value, '$[0]') AS seq, json_extract(value, '$[1]') AS application_id,
        json_extract(value, '$[2]') AS content_hash, json_extract(value, '$[3]') AS r
    FROM json_each(?2)
)
{_INSERT_STAGED}
SELECT ?1, seq, application_id, content_hash, r, json_extract(r, '$.remote_id'),
    coalesce(nullif(json_extract(r, '$.job_id'), ''), json_extract(r, '$.job.id')),
    coalesce(json_extract(r, '$.current_stage.id'), json_extract(r, '$.current_stage_id')),
    json_extract(r, '$.current_stage.name'), json_extract(r, '$.outcome'),
    json_extract(r, '$.rejection_reason_name'), {_stamp_from_json("$.rejected_at")},
    {_stamp_from_json("$.remote_deleted_at")}, {_stamp_from_json("$.changed_at")},
    {_stamp_from_json("$.remote_created_at")}, {_stamp_from_json("$.remote_updated_at")},
    json_extract(r, '$.current_stage.status')
FROM batch
"""

_STAGE_CHANGED_FROM_MODEL = f"""
{_INSERT_STAGED} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_ESCAPED_NUL = b"\\u0000"


def _row_from_model(run_id: int, seq: int, app: Application, digest: str, raw: bytes) -> tuple:
    return (
        run_id,
        seq,
        app.id,
        digest,
        raw.decode(),
        app.remote_id,
        app.effective_job_id,
        app.stage_id,
        app.stage_name,
        app.outcome,
        app.rejection_reason_name,
        _ts(app.rejected_at),
        _ts(app.remote_deleted_at),
        _ts(app.changed_at),
        _ts(app.remote_created_at),
        _ts(app.remote_updated_at),
        app.stage_status,
    )


_ABSENT = """
SELECT application_id FROM applications INDEXED BY applications_content
WHERE integration_id = ?1 AND deleted_observed_at IS NULL
EXCEPT
SELECT application_id FROM staged_seen WHERE run_id = ?2
"""

_STALE_JOBS = """
WITH needed AS (
    SELECT DISTINCT job_id, stage_id FROM staged_applications
    WHERE run_id = ?2 AND job_id IS NOT NULL
)
SELECT DISTINCT n.job_id FROM needed AS n
WHERE NOT EXISTS (SELECT 1 FROM staged_jobs AS s WHERE s.run_id = ?2 AND s.job_id = n.job_id)
    AND (
        NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.integration_id = ?1 AND j.job_id = n.job_id)
        OR n.stage_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM job_stages AS js
            WHERE js.integration_id = ?1 AND js.job_id = n.job_id AND js.stage_id = n.stage_id
        )
    )
ORDER BY n.job_id
"""

_STAGE_JOB = """
INSERT INTO staged_jobs (
    run_id, job_id, remote_id, name, status, changed_at, remote_created_at, remote_updated_at,
    remote_deleted_at, stages, content_hash, raw
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


_STAGED_COLUMNS = (
    "run_id", "seq", "application_id", "content_hash", "raw", "remote_id", "job_id", "stage_id",
    "stage_name", "outcome", "rejection_reason_name", "rejected_at", "remote_deleted_at",
    "changed_at", "remote_created_at", "remote_updated_at", "stage_status",
)  # fmt: skip


def _no_nul(row: tuple) -> tuple:
    """PostgreSQL text holds no NUL character: a field with one keeps the rest of its text (raw
    keeps it, JSON-escaped)."""
    return tuple(v.replace("\x00", "") if isinstance(v, str) and "\x00" in v else v for v in row)


def _copy_batch(conn, run_id: int, first: int, encoded, unparsed: list[str], changed) -> None:
    """PostgreSQL staging: the batch goes in by COPY, its columns taken from the models."""
    ids = [app.id for app, _, _ in encoded] + unparsed
    conn.copy(
        "staged_seen",
        ("run_id", "application_id", "seq"),
        ((run_id, app_id, first + i) for i, app_id in enumerate(ids)),
    )
    rows = (
        _no_nul(_row_from_model(run_id, first + i, app, digest, raw))
        for i in changed
        for app, raw, digest in (encoded[i],)
    )
    conn.copy("staged_applications", _STAGED_COLUMNS, rows)


def _encode(apps: Iterable[Application]) -> list[tuple[Application, bytes, str]]:
    """Each record with its stored form and that form's hash.

    The stored form is pydantic's JSON of the parsed record (the models leave remote_data out):
    fields in model order, timestamps normalised to UTC, so one record always gives the same bytes
    and hash (sorting keys too would cost three times as much). Serialising and hashing are most of
    staging's cost, so the loop stays flat, without a helper call per record.
    """
    sha1 = hashlib.sha1
    encoded = []
    for app in apps:
        raw = app.__pydantic_serializer__.to_json(app)
        encoded.append((app, raw, sha1(raw, usedforsecurity=False).hexdigest()))
    return encoded


def _pairs(encoded: list[tuple[Application, bytes, str]], unparsed: Iterable[str] = ()) -> str:
    """The batch's [id, hash] pairs as JSON, in staging order, then [id, null] for each record
    listed but unparseable: noted as listed, so no listing mistakes it for a vanished one."""
    pairs: list[tuple[str, str | None]] = [(app.id, digest) for app, _, digest in encoded]
    pairs.extend((record_id, None) for record_id in unparsed)
    return json.dumps(pairs)


def _changed_positions(conn: sqlite3.Connection, integration_id: str, pairs: str) -> list[int]:
    """Where in `pairs` (see `_pairs`) a record differs from the live snapshot, or is new to it."""
    return json.loads(conn.execute(_CHANGED_POSITIONS, (integration_id, pairs)).fetchone()[0])


class ApplicationStager:
    """Stages pages of applications in batches, one transaction per batch instead of per page: a
    batch is handed over once it holds `batch_records` records or `flush_seconds` after the last one.

    The caller's thread serialises and hashes a batch (pydantic, holding the GIL); a worker thread
    with its own connection then looks up the stored hashes of the batch's ids and writes it,
    while the caller serialises the next one. The worker's SQLite statements run outside the GIL,
    on the other core. At most one batch is with the worker at a time. Reading outside the write
    transaction is safe: the run holds its integration's lock, so no other run can change that
    integration's snapshot, and the write checks the lock.

    `flush` hands over what is buffered and returns once everything is written; it raises what a
    write raised. Records still buffered when the listing fails are never staged: an unfinished
    listing is discarded at commit and listed again by the retry, so `flush` is for a listing that
    ended. Use it as a context manager (or call `close`) to stop the worker.
    """

    def __init__(
        self,
        staging: Staging,
        run_id: int,
        batch_records: int,
        flush_seconds: float,
        monotonic: Callable[[], float],
    ) -> None:
        if batch_records < 1:
            raise StoreError(f"batch_records must be at least 1, not {batch_records}")
        self._staging = staging
        self._run_id = run_id
        self._integration_id = staging.integration_of(run_id)
        self._batch_records = batch_records
        self._flush_seconds = flush_seconds
        self._monotonic = monotonic
        self._flushed_at = monotonic()
        # Application id -> its last record in this batch, or None when it was unparseable.
        self._pending: dict[str, Application | None] = {}
        self._worker: ThreadPoolExecutor | None = None
        self._runtime = ExitStack()
        self._written: Future[None] | None = None
        self._writer: sqlite3.Connection | None = None

    def __enter__(self) -> ApplicationStager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def buffered(self) -> int:
        """Records waiting for their batch to fill (not yet handed to the worker)."""
        return len(self._pending)

    def __call__(
        self, run_id: int, apps: Iterable[Application], unparsed_ids: Iterable[str] = ()
    ) -> None:
        """Buffer a page: its records, and the ids of its records that could not be parsed (noted
        as listed, their stored snapshot kept)."""
        if run_id != self._run_id:
            raise StoreError(f"this stager stages run {self._run_id}, not run {run_id}")
        pending = self._pending
        for app in apps:
            pending[app.id] = app
        for record_id in unparsed_ids:
            pending[record_id] = None
        if (
            len(self._pending) >= self._batch_records
            or self._monotonic() - self._flushed_at >= self._flush_seconds
        ):
            self._hand_over()

    def flush(self) -> None:
        """Write everything buffered and wait until the worker is done."""
        self._hand_over()
        self._wait()

    def _hand_over(self) -> None:
        self._flushed_at = self._monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        encoded = _encode(app for app in pending.values() if app is not None)
        unparsed = [record_id for record_id, app in pending.items() if app is None]
        if self._staging.in_memory:  # a second connection would see another database
            self._staging.stage_encoded(None, self._run_id, encoded, unparsed, None)
            return
        self._wait()
        if self._worker is None:
            self._runtime.enter_context(listing_runtime())
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="stagewatch-stager")
        self._written = self._worker.submit(self._write, encoded, unparsed)

    def _wait(self) -> None:
        written, self._written = self._written, None
        if written is not None:
            written.result()

    def _write(self, encoded: list[tuple[Application, bytes, str]], unparsed: list[str]) -> None:
        """Runs in the worker, on the connection it opens on first use. The lookup runs before the
        write transaction, so other writers are not kept waiting for it."""
        if self._writer is None:
            self._writer = self._staging.open_writer()
        changed = self._staging.changed_positions(self._writer, self._integration_id, encoded)
        self._staging.stage_encoded(self._writer, self._run_id, encoded, unparsed, changed)

    def close(self) -> None:
        """Stop the worker once its batch is written (a failure is for `flush` to raise, so it is
        dropped here); records not handed over are dropped."""
        self._pending = {}
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None
        self._written = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._runtime.close()


class Staging:
    """The staging tables of one database, written only by runs that hold their lease."""

    def __init__(self, db: Database, runs: Runs) -> None:
        self._db = db
        self._runs = runs

    @property
    def in_memory(self) -> bool:
        return self._db.in_memory

    def open_writer(self) -> sqlite3.Connection:
        conn = self._db.open_writer()
        if not self._db.postgres:
            conn.execute(f"PRAGMA cache_size = -{STAGER_CACHE_SIZE_KIB}")
        return conn

    def changed_positions(
        self, conn, integration_id: str, encoded: list[tuple[Application, bytes, str]]
    ) -> list[int]:
        """Where in `encoded` a record differs from the live snapshot, or is new to it."""
        if not self._db.postgres:
            return _changed_positions(conn, integration_id, _pairs(encoded))
        # One primary-key probe per id whatever the statistics say: a join or `= ANY(array)`
        # planned on a snapshot not yet analysed scans the whole integration per batch.
        live = dict(
            conn.execute(
                "SELECT b.id, (SELECT a.content_hash FROM applications AS a "
                "WHERE a.integration_id = ? AND a.application_id = b.id "
                "AND a.deleted_observed_at IS NULL) FROM unnest(?::text[]) AS b (id)",
                (integration_id, [app.id for app, _, _ in encoded]),
            ).fetchall()
        )
        return [i for i, (app, _, digest) in enumerate(encoded) if live.get(app.id) != digest]

    def integration_of(self, run_id: int) -> str:
        return self._runs.integration_of(run_id)

    def stage_jobs(self, run_id: int, jobs: Iterable[Job]) -> None:
        rows = []
        for job in jobs:
            record = _scrub(job.model_dump(mode="json"))
            raw = canonical_json(record)
            stages = [
                {key: stage.get(key) for key in ("id", "remote_id", "name", "index", "status")}
                for stage in record.get("stages") or []
            ]
            rows.append(
                (
                    run_id,
                    job.id,
                    job.remote_id,
                    job.name,
                    job.status,
                    _ts(job.changed_at),
                    _ts(job.remote_created_at),
                    _ts(job.remote_updated_at),
                    _ts(job.remote_deleted_at),
                    json.dumps(stages),
                    _sha1(raw.encode()),
                    raw,
                )
            )
        with self._db.transaction() as conn:
            self._runs.running(conn, run_id)
            conn.executemany(_STAGE_JOB, rows)

    def stage_applications(
        self, run_id: int, apps: Iterable[Application], unparsed_ids: Iterable[str] = ()
    ) -> None:
        """Stage one page (a repeated id keeps its last record).

        Every record is noted as seen, `unparsed_ids` too (records listed but unparseable, whose
        stored snapshot stays); only one whose hash the live snapshot does not hold is staged
        with its content. The others cannot change anything: no other run of the integration can
        commit while this one holds the lock.
        """
        latest: dict[str, Application | None] = {app.id: app for app in apps}
        latest.update(dict.fromkeys(unparsed_ids))
        if latest:
            encoded = _encode(app for app in latest.values() if app is not None)
            unparsed = [record_id for record_id, app in latest.items() if app is None]
            self.stage_encoded(self._db.conn, run_id, encoded, unparsed, None)

    def stage_encoded(
        self,
        conn: sqlite3.Connection | None,
        run_id: int,
        encoded: list[tuple[Application, bytes, str]],
        unparsed: list[str],
        changed: list[int] | None,
    ) -> None:
        """Write one batch on `conn`: every record as seen (the `encoded` ones, then the
        `unparsed` ids of unparseable ones), and the content of those at the `changed` positions
        of `encoded` (looked up here when None: see `changed_positions`)."""
        listed = len(encoded) + len(unparsed)
        conn = conn or self._db.conn
        with self._db.transaction(conn):
            integration_id = self._runs.running(conn, run_id)
            if changed is None:
                changed = self.changed_positions(conn, integration_id, encoded)
            first = conn.execute(_RESERVE_SEQ, (listed, run_id)).fetchone()[0] - listed
            if self._db.postgres:
                _copy_batch(conn, run_id, first, encoded, unparsed, changed)
                crash_point("stage:after_insert")
                return
            pairs = _pairs(encoded, unparsed)
            conn.execute(_STAGE_SEEN, (run_id, first, pairs))
            from_json, from_model = [], []
            for position in changed:
                app, raw, digest = encoded[position]
                seq = first + position
                if _ESCAPED_NUL in raw:
                    from_model.append(_row_from_model(run_id, seq, app, digest, raw))
                else:
                    from_json.append((seq, app.id, digest, raw.decode()))
            if from_json:
                conn.execute(_STAGE_CHANGED, (run_id, json.dumps(from_json)))
            if from_model:
                conn.executemany(_STAGE_CHANGED_FROM_MODEL, from_model)
        crash_point("stage:after_insert")

    def application_stager(
        self,
        run_id: int,
        *,
        batch_records: int = STAGING_BATCH_RECORDS,
        flush_seconds: float = STAGING_FLUSH_SECONDS,
    ) -> ApplicationStager:
        """A buffer that stages pages in batches (see `ApplicationStager`); flush it when the
        listing ends."""
        return ApplicationStager(self, run_id, batch_records, flush_seconds, self._db.monotonic)

    def absent_applications(self, run_id: int) -> list[str]:
        """Live applications of the run's integration that the run has not listed (yet): what a
        full listing would record as deleted."""
        integration_id = self._runs.integration_of(run_id)
        sql = (
            _ABSENT.replace("INDEXED BY applications_content", "") if self._db.postgres else _ABSENT
        )
        rows = self._db.conn.execute(sql, (integration_id, run_id))
        return [row[0] for row in rows]

    def stale_job_ids(self, run_id: int) -> list[str]:
        """Jobs of the run's staged applications that neither this run listed nor the job snapshot
        holds with the application's stage: their stage order must be fetched before the diff."""
        integration_id = self._runs.integration_of(run_id)
        rows = self._db.conn.execute(_STALE_JOBS, (integration_id, run_id))
        return [row[0] for row in rows]

    def quarantine(self, run_id: int, integration_id: str, items: Iterable[Quarantined]) -> None:
        now = format_ts(self._db.clock())
        rows = [
            (
                run_id,
                integration_id,
                item.model,
                item.record_id,
                item.reason,
                canonical_json(_scrub(item.raw)),
                now,
            )
            for item in items
        ]
        with self._db.transaction() as conn:
            owner = self._runs.running(conn, run_id)
            if owner != integration_id:
                raise StoreError(f"sync run {run_id} belongs to {owner!r}, not {integration_id!r}")
            conn.executemany(
                "INSERT INTO quarantined (run_id, integration_id, model, record_id, reason, raw, "
                "quarantined_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
