"""Drill 4, bad input: each file in `corpus/` is what a fake Kombo answers on a second sync, after a
shared baseline (`corpus/_baseline.json`) was synced. The run must not crash, must quarantine each bad
record with a reason naming what is wrong, must store every good record of the page, and its markdown
artifact must stay inert, well-formed markdown.

A case file holds `jobs` and `applications`: pages keyed by the cursor that asks for them ("" for the
first), each `{"status": 200, "json": body}` or `{"status": 503, "text": "raw body"}`; and `expect`:

- `quarantined`: `[{"model", "page", "index", "reason": [substrings]}]`, the bad records;
- `superseded`: `[{"model", "page", "index"}]`, earlier copies of a record listed again later;
- `stored`: `{"application id": {column: value}}`, exact columns of stored rows;
- `error`: `{"status": "failed" | "not_ready", "message": [substrings]}` when the run must stop
  with an error and store nothing;
- `markdown_contains` / `markdown_absent`: strings the artifact must (not) hold;
- `show_candidate_names`: render the artifact with candidate names.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from stagewatch import report
from stagewatch.store import Store
from stagewatch.store.location import is_postgres
from stagewatch.store.transfer import copy_store
from tests.reliability.harness import (
    CaseResult,
    SecretScanner,
    captured_logs,
    compare,
    describe,
    fingerprint,
    integrity,
    leftovers,
    markdown_problems,
    sync_in_process,
)

CORPUS = Path(__file__).parent / "corpus"
BASELINE = CORPUS / "_baseline.json"
INTEGRATION = "greenhouse:CorpusDrill0000000000000000"
ROUND_DATES = ("Mon, 05 Jan 2026 00:00:00 GMT", "Tue, 06 Jan 2026 00:00:00 GMT")
PATHS = {"jobs": "/ats/jobs", "applications": "/ats/applications"}
# Candidate contact data in the corpus uses this domain; the store must never hold it.
CONTACT_DOMAIN = b"candidate-contact.example"
SNAPSHOT_TABLES = ("applications", "jobs", "job_stages", "events", "watermarks")


def case_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*.json") if not p.name.startswith("_"))


class FakeKombo:
    """Kombo as a script: each endpoint answers the page its `cursor` names, nothing else."""

    def __init__(self, key: str, pages: dict[str, dict[str, dict]], date: str) -> None:
        self.key = key
        self.pages = pages
        self.date = date
        self.requests: Counter[str] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1")
        self.requests[path] += 1
        headers = {"date": self.date, "x-request-id": f"fake_{sum(self.requests.values())}"}
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return self._error(401, "PLATFORM.AUTHENTICATION_INVALID", "bad key", headers)
        if request.headers.get("x-integration-id") != INTEGRATION:
            return self._error(404, "PLATFORM.INTEGRATION_NOT_FOUND", "no integration", headers)
        cursor = request.url.params.get("cursor", "")
        page = self.pages.get(path, {}).get(cursor)
        if page is None:
            return self._error(400, "PLATFORM.INPUT_INVALID", f"no page {cursor!r}", headers)
        if "json" in page:
            body = json.dumps(page["json"]).encode()  # ASCII with \u escapes, as JS would send
            headers["content-type"] = "application/json"
        else:
            body = page["text"].encode("utf-8", "surrogatepass")
        return httpx.Response(page.get("status", 200), headers=headers, content=body)

    @staticmethod
    def _error(status: int, code: str, message: str, headers: dict) -> httpx.Response:
        envelope = {
            "status": "error",
            "error": {"code": code, "title": None, "message": message, "log_url": None},
        }
        return httpx.Response(status, headers=headers, json=envelope)


def _page(records: list[Any], next_cursor: str | None = None) -> dict:
    return {"json": {"status": "success", "data": {"next": next_cursor, "results": records}}}


def baseline() -> dict[str, Any]:
    return json.loads(BASELINE.read_text())


def baseline_pages() -> dict[str, dict[str, dict]]:
    data = baseline()
    return {
        PATHS["jobs"]: {"": _page(data["jobs"])},
        PATHS["applications"]: {"": _page(data["applications"])},
    }


def case_pages(case: dict[str, Any]) -> dict[str, dict[str, dict]]:
    """The case's pages; a case that names no job pages gets the baseline's jobs."""
    pages = baseline_pages()
    for name, path in PATHS.items():
        if name in case:
            pages[path] = case[name]
    return pages


def _body(page: dict) -> Any:
    """A page's body as Python (a raw `text` body parsed as Python's json reads it, NaN included),
    or None when it is not JSON."""
    if "json" in page:
        return page["json"]
    try:
        return json.loads(page["text"])
    except ValueError:
        return None


def _results(body: Any) -> list[Any] | None:
    data = body.get("data") if isinstance(body, dict) else None
    results = data.get("results") if isinstance(data, dict) else None
    return results if isinstance(results, list) else None


def _records(pages: dict[str, dict[str, dict]], model: str) -> Iterator[tuple[str, int, Any]]:
    """(cursor, index, record) of every record of every page of `model` with a results list."""
    for cursor, page in pages[PATHS[f"{model}s"]].items():
        for index, record in enumerate(_results(_body(page)) or []):
            yield cursor, index, record


def clean_pages(case: dict[str, Any]) -> dict[str, dict[str, dict]]:
    """The case's pages without its bad and superseded records: what a well-behaved Kombo sends."""
    pages = copy.deepcopy(case_pages(case))
    expect = case["expect"]
    drop = {
        (item["model"], item["page"], item["index"])
        for item in expect.get("quarantined", []) + expect.get("superseded", [])
    }
    for model in ("job", "application"):
        for cursor, page in pages[PATHS[f"{model}s"]].items():
            body = _body(page)
            results = _results(body)
            if results is None:
                continue
            body["data"]["results"] = [
                r for i, r in enumerate(results) if (model, cursor, i) not in drop
            ]
            page.pop("text", None)
            page["json"] = body
    return pages


def copy_db(source: Path, target: Path | str) -> None:
    """A consistent copy, WAL content included; into a PostgreSQL store (a URL) as
    `stagewatch migrate-store` copies."""
    if is_postgres(str(target)):
        with Store(source, readonly=True) as old, Store(target) as new:
            copy_store(old, new)
        return
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def make_baseline(db: Path, key: str) -> None:
    fake = FakeKombo(key, baseline_pages(), ROUND_DATES[0])
    synced = sync_in_process(db, httpx.MockTransport(fake), INTEGRATION, key)
    if synced.outcome.status != "synced" or synced.outcome.quarantined:
        raise RuntimeError(f"the corpus baseline does not sync cleanly: {synced.outcome}")


def as_stored(value: Any) -> Any:
    """A listed text as the store must keep it: a lone UTF-16 surrogate (half an emoji, cut by an
    ATS's length limit) cannot be stored as UTF-8 and becomes U+FFFD; everything else as given."""
    if not isinstance(value, str):
        return value
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _expected_stage(record: dict) -> Any:
    stage = record.get("current_stage")
    return stage["id"] if isinstance(stage, dict) else record.get("current_stage_id")


def _expected_job(record: dict) -> Any:
    job = record.get("job")
    return record.get("job_id") or (job["id"] if isinstance(job, dict) else None)


def _rows(db: Path, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def _check_quarantine(result: CaseResult, db: Path, run_id: int, case: dict) -> None:
    expected = case["expect"].get("quarantined", [])
    pages = case_pages(case)
    rows = _rows(
        db, "SELECT model, record_id, reason, raw FROM quarantined WHERE run_id = ?", (run_id,)
    )
    result.check(
        len(rows) == len(expected),
        f"{len(rows)} records quarantined, expected {len(expected)}: "
        + "; ".join(f"{r['model']} {r['record_id']}: {r['reason'][:120]}" for r in rows),
    )
    unmatched = list(rows)
    for item in expected:
        record = next(
            r
            for c, i, r in _records(pages, item["model"])
            if (c, i) == (item["page"], item["index"])
        )
        record_id = record.get("id") if isinstance(record, dict) else None
        record_id = record_id if isinstance(record_id, str) and record_id else None
        match = next(
            (
                row
                for row in unmatched
                if row["model"] == item["model"]
                and row["record_id"] == record_id
                and all(part in row["reason"] for part in item["reason"])
            ),
            None,
        )
        if match is None:
            result.problems.append(
                f"no quarantined {item['model']} {record_id!r} with a reason naming {item['reason']}"
            )
        else:
            unmatched.remove(match)


def _check_stored(result: CaseResult, db: Path, case: dict) -> None:
    """Every good record of the case's pages is in the snapshot, as the page said."""
    expect = case["expect"]
    bad = {
        (item["model"], item["page"], item["index"])
        for item in expect.get("quarantined", []) + expect.get("superseded", [])
    }
    pages = case_pages(case)
    apps = {
        row["application_id"]: row
        for row in _rows(db, "SELECT * FROM applications WHERE integration_id = ?", (INTEGRATION,))
    }
    jobs = {
        row["job_id"]: row
        for row in _rows(db, "SELECT * FROM jobs WHERE integration_id = ?", (INTEGRATION,))
    }
    for cursor, index, record in _records(pages, "application"):
        if ("application", cursor, index) in bad:
            continue
        row = apps.get(record["id"])
        if row is None:
            result.problems.append(f"good application {record['id']!r} was not stored")
            continue
        stage = record.get("current_stage")
        wanted = {
            "stage_id": _expected_stage(record),
            "job_id": _expected_job(record),
            "outcome": record.get("outcome"),
            "rejection_reason_name": record.get("rejection_reason_name"),
        }
        if isinstance(stage, dict) and stage.get("name") is not None:
            wanted["stage_name"] = stage["name"]
        wanted = {column: as_stored(value) for column, value in wanted.items()}
        for column, value in wanted.items():
            result.check(
                row[column] == value,
                f"application {record['id']!r}: {column} stored {str(row[column])[:80]!r}, "
                f"listed {str(value)[:80]!r}",
            )
    for cursor, index, record in _records(pages, "job"):
        if ("job", cursor, index) in bad:
            continue
        row = jobs.get(record["id"])
        if row is None:
            result.problems.append(f"good job {record['id']!r} was not stored")
            continue
        for column in ("name", "status"):
            result.check(
                row[column] == as_stored(record.get(column)),
                f"job {record['id']!r}: {column} stored {str(row[column])[:80]!r}, "
                f"listed {str(record.get(column))[:80]!r}",
            )
    for application_id, columns in expect.get("stored", {}).items():
        row = apps.get(application_id)
        if row is None:
            result.problems.append(f"application {application_id!r} was not stored")
            continue
        for column, value in columns.items():
            result.check(
                row[column] == value,
                f"application {application_id!r}: {column} is {row[column]!r}, expected {value!r}",
            )


def run_case(
    path: Path, workdir: Path, key: str, scanner: SecretScanner, baseline_db: Path
) -> CaseResult:
    case = json.loads(path.read_text())
    result = CaseResult(path.stem)
    expect = case["expect"]
    db, reference_db = workdir / f"{path.stem}.db", workdir / f"{path.stem}.reference.db"
    copy_db(baseline_db, db)
    before = fingerprint(db)
    fake = FakeKombo(key, case_pages(case), ROUND_DATES[1])
    with captured_logs() as logs:
        try:
            synced = sync_in_process(
                db,
                httpx.MockTransport(fake),
                INTEGRATION,
                key,
                show_candidate_names=expect.get("show_candidate_names", False),
            )
        except Exception as exc:  # the drill's subject: any crash is a finding, reported whole
            scanner.text(f"{path.stem}: crash", describe(exc))
            result.problems.append(f"the run crashed: {type(exc).__name__}: {str(exc)[:300]}")
            left = leftovers(db)
            result.check(not any(left.values()), f"the crash left behind {left}")
            scanner.text(f"{path.stem}: logs", logs.text)
            scanner.path(db)
            return result
    outcome = synced.outcome
    result.info = {"status": outcome.status, "requests": dict(fake.requests)}
    scanner.text(f"{path.stem}: logs", logs.text)
    scanner.text(f"{path.stem}: outcome", outcome.model_dump_json())
    if "error" in expect:
        result.check(
            outcome.status == expect["error"]["status"],
            f"run ended {outcome.status} ({outcome.message}), expected {expect['error']['status']}",
        )
        message = outcome.message or ""
        for part in expect["error"]["message"]:
            result.check(part in message, f"error message {message[:200]!r} lacks {part!r}")
        after = fingerprint(db)
        for table in SNAPSHOT_TABLES:
            result.check(after[table] == before[table], f"the failed run changed {table}")
    else:
        result.check(outcome.status == "synced", f"run ended {outcome.status}: {outcome.message}")
        _check_quarantine(result, db, outcome.run_id, case)
        _check_stored(result, db, case)
        clean = FakeKombo(key, clean_pages(case), ROUND_DATES[1])
        copy_db(baseline_db, reference_db)
        reference = sync_in_process(reference_db, httpx.MockTransport(clean), INTEGRATION, key)
        result.check(
            reference.outcome.status == "synced",
            f"the clean reference did not sync: {reference.outcome.message}",
        )
        got, want = fingerprint(db), fingerprint(reference_db)
        got.pop("quarantined")
        want.pop("quarantined")
        result.add(compare(got, want), "against the same page without its bad records")
    result.check(integrity(db) == "ok", f"integrity_check: {integrity(db)}")
    left = leftovers(db)
    result.check(not any(left.values()), f"left behind {left}")
    result.check(CONTACT_DOMAIN not in db.read_bytes(), "candidate contact data in the database")
    _check_markdown(result, synced.publications[-1].markdown, outcome, expect, scanner, path.stem)
    scanner.path(workdir)
    return result


def _check_markdown(
    result: CaseResult,
    markdown: str,
    outcome: report.SyncOutcome,
    expect: dict[str, Any],
    scanner: SecretScanner,
    name: str,
) -> None:
    """The run's markdown artifact, as the sync published it, and the summary with it."""
    summary = report.summary_markdown([outcome])
    result.info["markdown_chars"] = len(markdown)
    for label, text in (("artifact", markdown), ("summary", summary)):
        scanner.text(f"{name}: {label}", text)
        result.problems += [f"{label} markdown: {p}" for p in markdown_problems(text)]
        result.check(
            CONTACT_DOMAIN.decode() not in text, f"{label} markdown shows candidate contact data"
        )
    for needle in expect.get("markdown_contains", []):
        result.check(needle in markdown, f"artifact lacks {needle!r}")
    for needle in expect.get("markdown_absent", []):
        result.check(needle not in markdown, f"artifact shows {needle!r}")
