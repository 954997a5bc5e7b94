"""`stagewatch changes | history | status | schema` through typer's CliRunner, with exact output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagewatch.cli import app
from stagewatch.store import Store
from stagewatch.store.location import is_postgres
from tests.builders import (
    CONTRACT_FIELDS,
    FINISHED,
    INTEGRATION,
    OTHER_INTEGRATION,
    Runner,
    application,
    at,
    db_rows,
    job,
)
from tests.conftest import postgres_schema

README = Path(__file__).resolve().parents[2] / "README.md"
H0 = "2026-01-05T09:00:00.000Z"
H30 = "2026-01-06T15:00:00.000Z"


def key(integration_id: str, application_id: str, kind: str, version: int) -> str:
    """The event key as the README documents it."""
    payload = json.dumps([integration_id, application_id, kind, version])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db(request, tmp_path_factory):
    """The store the commands read: a SQLite file, then a PostgreSQL schema."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            target = tmp_path_factory.mktemp("cli") / "sw.db"
        else:
            target = stack.enter_context(postgres_schema())
        _fill(target)
        yield target


def _fill(target) -> None:
    with Store(target, clock=lambda: FINISHED) as store:
        runner = Runner(store)
        runner.run(
            [application("app-1"), application("app-2", ("st-screen", "Phone screen"))],
            hours=0,
            jobs=[job()],
            watermark=at(-1),
        )
        runner.run(
            [
                application("app-1", ("st-onsite", "Onsite")),
                application(
                    "app-2",
                    ("st-screen", "Phone screen"),
                    outcome="DECLINED",
                    rejection_reason_name="Not a fit, sadly",
                ),
            ],
            hours=30,
            watermark=at(29),
        )
        Runner(store, OTHER_INTEGRATION).run([application("app-9")], hours=1, jobs=[job()])


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def first_seen(app_id, stage_id, stage_name, integration=INTEGRATION, observed=H0, run=1):
    return {
        "event_key": key(integration, app_id, "first_seen", 0),
        "integration_id": integration,
        "application_id": app_id,
        "kind": "first_seen",
        "observed_at": observed,
        "previous_observed_at": None,
        "job_id": "job-1",
        "sync_run_id": run,
        "from_stage_id": None,
        "from_stage_name": None,
        "to_stage_id": stage_id,
        "to_stage_name": stage_name,
        "direction": None,
        "from_outcome": None,
        "to_outcome": "PENDING",
        "from_job_id": None,
        "to_job_id": "job-1",
        "rejection_reason_name": None,
        "rejected_at": None,
        "deleted_at": None,
        "deleted_reason": None,
        "from_stage_status": None,
        "to_stage_status": None,
    }


STAGE_MOVE = {
    **dict.fromkeys(CONTRACT_FIELDS),
    "event_key": key(INTEGRATION, "app-1", "stage_changed", 1),
    "integration_id": INTEGRATION,
    "application_id": "app-1",
    "kind": "stage_changed",
    "observed_at": H30,
    "previous_observed_at": H0,
    "job_id": "job-1",
    "sync_run_id": 2,
    "from_stage_id": "st-applied",
    "from_stage_name": "Applied",
    "to_stage_id": "st-onsite",
    "to_stage_name": "Onsite",
    "direction": "forward",
}

DECLINE = {
    **dict.fromkeys(CONTRACT_FIELDS),
    "event_key": key(INTEGRATION, "app-2", "outcome_changed", 1),
    "integration_id": INTEGRATION,
    "application_id": "app-2",
    "kind": "outcome_changed",
    "observed_at": H30,
    "previous_observed_at": H0,
    "job_id": "job-1",
    "sync_run_id": 2,
    "from_outcome": "PENDING",
    "to_outcome": "DECLINED",
    "rejection_reason_name": "Not a fit, sadly",
}


def test_changes_as_jsonl_prints_every_field_in_order(db):
    result = invoke("changes", "--db", str(db), "--format", "jsonl")
    assert result.exit_code == 0, result.output
    expected = [
        first_seen("app-1", "st-applied", "Applied"),
        first_seen("app-2", "st-screen", "Phone screen"),
        STAGE_MOVE,
        DECLINE,
        first_seen(
            "app-9", "st-applied", "Applied", OTHER_INTEGRATION, "2026-01-05T10:00:00.000Z", 3
        ),
    ]
    assert result.output == "".join(json.dumps(e) + "\n" for e in expected)
    assert [list(json.loads(line)) for line in result.output.splitlines()] == [
        list(CONTRACT_FIELDS)
    ] * 5


def test_changes_as_csv_with_filters(db):
    result = invoke(
        "changes",
        "--db",
        str(db),
        "--format",
        "csv",
        "--integration",
        INTEGRATION,
        "--since",
        "2026-01-06",
        "--kind",
        "outcome_changed",
        "--kind",
        "stage_changed",
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        ",".join(CONTRACT_FIELDS)
        + "\n"
        + f"{STAGE_MOVE['event_key']},{INTEGRATION},app-1,stage_changed,{H30},{H0},job-1,2,"
        "st-applied,Applied,st-onsite,Onsite,forward,,,,,,,,,,\n"
        + f"{DECLINE['event_key']},{INTEGRATION},app-2,outcome_changed,{H30},{H0},job-1,2,"
        ',,,,,PENDING,DECLINED,,,"Not a fit, sadly",,,,,\n'
    )


def test_changes_for_one_application_as_a_table(db):
    result = invoke("changes", "--db", str(db), "--application", "app-1")
    assert result.exit_code == 0, result.output
    lines = [cells(line) for line in result.output.splitlines() if "│" in line or "┃" in line]
    assert lines == [
        ["observed (UTC)", "integration", "application", "kind", "change", "job"],
        ["2026-01-05 09:00:00", INTEGRATION, "app-1", "first_seen", "in Applied, PENDING", "job-1"],
        [
            "2026-01-06 15:00:00",
            INTEGRATION,
            "app-1",
            "stage_changed",
            "Applied -> Onsite (forward)",
            "job-1",
        ],
    ]


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"[│┃]", line)[1:-1]]


def test_history_shows_each_stay(db):
    result = invoke("history", "app-1", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert [cells(line) for line in result.output.splitlines() if "│" in line or "┃" in line] == [
        ["integration", "stage", "entered (UTC)", "left (UTC)", "time in stage", "job"],
        [INTEGRATION, "Applied", "2026-01-05 09:00:00", "2026-01-06 15:00:00", "1d 6h", "job-1"],
        [INTEGRATION, "Onsite", "2026-01-06 15:00:00", "(current)", "", "job-1"],
    ]
    as_jsonl = invoke("history", "app-1", "--db", str(db), "--format", "jsonl")
    assert [json.loads(line) for line in as_jsonl.output.splitlines()] == [
        {
            "integration_id": INTEGRATION,
            "application_id": "app-1",
            "job_id": "job-1",
            "stage_id": "st-applied",
            "stage_name": "Applied",
            "entered_at": H0,
            "entered_after": None,
            "left_at": H30,
            "left_by": "stage_changed",
            "seconds_in_stage": 108000.0,
            "is_current": 0,
            "sync_run_id": 1,
            "event_id": 1,
        },
        {
            "integration_id": INTEGRATION,
            "application_id": "app-1",
            "job_id": "job-1",
            "stage_id": "st-onsite",
            "stage_name": "Onsite",
            "entered_at": H30,
            "entered_after": H0,
            "left_at": None,
            "left_by": None,
            "seconds_in_stage": None,
            "is_current": 1,
            "sync_run_id": 2,
            "event_id": 3,
        },
    ]


def test_history_of_an_unknown_application_is_an_error(db):
    result = invoke("history", "app-404", "--db", str(db))
    assert (result.exit_code, result.output) == (
        1,
        "Error: no stage history for application 'app-404'\n",
    )


def test_status_per_integration(db):
    result = invoke("status", "--db", str(db), "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {
            "integration_id": INTEGRATION,
            "last_run_id": 2,
            "last_run_mode": "full",
            "last_run_status": "succeeded",
            "last_run_started_at": H30,
            "last_run_finished_at": "2026-02-01T12:00:00.000Z",
            "last_run_events": 2,
            "last_run_error": None,
            "last_success_at": "2026-02-01T12:00:00.000Z",
            "watermark": "2026-01-06T14:00:00.000Z",
            "locked_by_run_id": None,
            "locked_by_pid": None,
            "locked_by_hostname": None,
            "lock_renewed_at": None,
            "lock_expires_at": None,
            "jobs": 1,
            "applications": 2,
            "deleted_applications": 0,
            "events": 4,
            "last_checked_at": None,
            "last_check_result": None,
        },
        {
            "integration_id": OTHER_INTEGRATION,
            "last_run_id": 3,
            "last_run_mode": "full",
            "last_run_status": "succeeded",
            "last_run_started_at": "2026-01-05T10:00:00.000Z",
            "last_run_finished_at": "2026-02-01T12:00:00.000Z",
            "last_run_events": 1,
            "last_run_error": None,
            "last_success_at": "2026-02-01T12:00:00.000Z",
            "watermark": None,
            "locked_by_run_id": None,
            "locked_by_pid": None,
            "locked_by_hostname": None,
            "lock_renewed_at": None,
            "lock_expires_at": None,
            "jobs": 1,
            "applications": 1,
            "deleted_applications": 0,
            "events": 1,
            "last_checked_at": None,
            "last_check_result": None,
        },
    ]
    table = invoke("status", env={"STAGEWATCH_DB": str(db)})
    assert [cells(line) for line in table.output.splitlines() if "│" in line][:2] == [
        [
            INTEGRATION,
            "2 (full)",
            "succeeded",
            "2026-02-01 12:00:00",
            "2026-01-06 14:00:00",
            "2",
            "4",
        ],
        [OTHER_INTEGRATION, "3 (full)", "succeeded", "2026-02-01 12:00:00", "", "1", "1"],
    ]


def test_status_table_numbers_run_errors_and_prints_them_whole_below(tmp_path):
    db = tmp_path / "sw.db"
    message = "INTEGRATION.PERMISSION_MISSING (HTTP 403): Ask the customer to grant it | [x](y)"
    with Store(db) as store:
        run = store.begin_run(INTEGRATION, mode="full", started_at=FINISHED)
        store.fail_run(run.id, error=message)
    result = invoke("status", "--db", str(db))
    assert result.exit_code == 0, result.output
    rows = [cells(line) for line in result.output.splitlines() if "│" in line]
    assert rows[0][:3] == [INTEGRATION, "1 (full)", "failed [1]"]
    assert result.output.splitlines()[-1] == f"[1] {INTEGRATION}: {message}"


def test_a_missing_database_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "nowhere.db"
    for command in (["changes"], ["history", "app-1"], ["status"], ["schema"]):
        result = invoke(*command, "--db", str(missing))
        assert (result.exit_code, result.output) == (
            1,
            f"Error: no stagewatch database at {missing}\n",
        )
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_file_is_an_error(tmp_path):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a database at all, just some notes that are long enough\n" * 50)
    result = invoke("status", "--db", str(foreign))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {foreign} is not a SQLite database")


def test_bad_filters_are_usage_errors(db):
    since = invoke("changes", "--db", str(db), "--since", "last tuesday")
    assert since.exit_code == 2
    assert "'last tuesday' is not a date or time" in since.output
    kind = invoke("changes", "--db", str(db), "--kind", "moved")
    assert kind.exit_code == 2
    assert "'moved' is not one of 'first_seen', 'stage_changed'" in kind.output


def _contents(db) -> list:
    """The files beside a SQLite store; a PostgreSQL schema's relations and migrations."""
    if not is_postgres(str(db)):
        return sorted(p.name for p in db.parent.iterdir())
    return db_rows(
        db,
        "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace),"
        " (SELECT count(*) FROM stagewatch_migrations), (SELECT count(*) FROM sync_runs)",
    )


def test_read_only_commands_leave_no_files_behind(db):
    before = _contents(db)
    for command in (["changes"], ["history", "app-1"], ["status"], ["schema", "--markdown"]):
        assert invoke(*command, "--db", str(db)).exit_code == 0
    assert _contents(db) == before
    if not is_postgres(str(db)):
        assert before == ["sw.db"]


def test_schema_prints_sql_and_the_readme_holds_its_markdown(tmp_path):
    path = tmp_path / "fresh.db"
    Store(path).close()
    sql = invoke("schema", "--db", str(path))
    assert sql.exit_code == 0
    assert "CREATE TABLE events (" in sql.output
    assert "CREATE VIEW stage_history AS" in sql.output
    markdown = invoke("schema", "--markdown", "--db", str(path))
    assert markdown.exit_code == 0
    readme = README.read_text()
    section = readme.split("<!-- schema:start -->\n")[1].split("<!-- schema:end -->")[0]
    assert section == markdown.output, (
        "README's schema section is stale: paste in `stagewatch schema --markdown --db NEW.db` "
        "for a freshly created store"
    )


def test_the_readme_documents_every_change_log_field_in_order():
    section = README.read_text().split("## Change log format")[1].split("\n## ")[0]
    documented = []
    for line in section.splitlines():
        if line.startswith("| `"):
            documented += re.findall(r"`(\w+)`", line.split(" | ")[0])
    assert tuple(documented) == CONTRACT_FIELDS


def test_history_as_csv(db):
    result = invoke("history", "app-2", "--db", str(db), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "integration_id,application_id,job_id,stage_id,stage_name,entered_at,entered_after,"
        "left_at,left_by,seconds_in_stage,is_current,sync_run_id,event_id\n"
        f"{INTEGRATION},app-2,job-1,st-screen,Phone screen,{H0},,,,,1,1,2\n"
    )
