"""`stagewatch stays | funnel | stuck | browse` on the scenario's store, through typer's CliRunner."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from stagewatch.analytics import FUNNEL_FIELDS, STAY_FIELDS, STUCK_FIELDS
from stagewatch.cli import app
from stagewatch.store import Store
from tests.analytics.scenario import A_CREATED, H0, H24
from tests.builders import INTEGRATION


@pytest.fixture
def db(scenario):
    path = str(scenario.path)
    scenario.close()
    return path


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def test_stays_jsonl_has_the_documented_fields_in_order(db):
    lines = invoke("stays", "--db", db, "--job", "job-1", "--format", "jsonl").stdout.splitlines()
    first = json.loads(lines[0])
    assert list(first) == list(STAY_FIELDS)
    assert first == {
        "integration_id": INTEGRATION,
        "application_id": "app-a",
        "job_id": "job-1",
        "stage_id": "st-applied",
        "stage_name": "Applied",
        "stage_index": 0,
        "entered_at": A_CREATED,
        "entered_after": A_CREATED,
        "entered_from": "created",
        "left_at": H24,
        "left_after": H0,
        "ended": "moved_forward",
        "days_in_stage": 3.0,
        "uncertainty_hours": 24.0,
        "event_id": 1,
    }
    assert len(lines) == 9  # job-1's stays: a 4, b 2, c, d, h's first


def test_funnel_csv(db):
    out = invoke(
        "funnel", "--db", db, "--integration", INTEGRATION, "--job", "job-2", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == list(FUNNEL_FIELDS)
    assert [(r["stage_id"], r["reached"], r["conversion"], r["order_note"]) for r in rows] == [
        ("st-x", "3", "0.3333", ""),
        ("st-y", "1", "", "index shared"),
        ("st-z", "1", "", "index shared"),
        ("st-w", "1", "", "no index"),
    ]


def test_funnel_rebuilds_the_kept_funnels_of_changed_jobs_once(db):
    """The scenario's runs left its three jobs stale: the first read rebuilds them and says so, the
    next reads the kept rows, with the same figures."""
    args = ("funnel", "--db", db, "--integration", INTEGRATION, "--format", "csv")
    first, second = invoke(*args), invoke(*args)
    assert first.stderr == "rebuilding the kept funnels of 3 job(s) changed since the last read\n"
    assert second.stderr == ""
    assert second.stdout == first.stdout
    rows = list(csv.DictReader(io.StringIO(first.stdout)))
    job_2 = [(r["stage_id"], r["reached"], r["conversion"]) for r in rows if r["job_id"] == "job-2"]
    assert job_2 == [
        ("st-x", "3", "0.3333"),
        ("st-y", "1", ""),
        ("st-z", "1", ""),
        ("st-w", "1", ""),
    ]
    assert {r["job_id"] for r in rows} == {"job-1", "job-2", "job-3"}
    with Store(db, readonly=True) as store:
        assert store.stale_funnel_jobs(INTEGRATION) == 0


def test_funnel_table_shows_each_job_with_its_totals(db):
    out = invoke("funnel", "--db", db, "--integration", INTEGRATION, "--job", "job-1").stdout
    assert "Engineer job-1 (job-1)" in out
    assert "hired 2, declined 1" in out


def _funnel_lines(db: str, job: str, columns: int) -> list[str]:
    args = ["funnel", "--db", db, "--integration", INTEGRATION, "--job", job]
    result = CliRunner().invoke(app, args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@pytest.mark.parametrize("columns", [80, 120])
def test_funnel_table_keeps_each_stage_on_one_line(db, columns):
    """job-2's tied and missing indexes need the note column: at 80 columns the short headers and
    one-word notes keep every stage on a line; wider, the full headers and notes."""
    lines = _funnel_lines(db, "job-2", columns)
    assert max(len(line) for line in lines) <= columns
    rows = [line for line in lines if line.startswith("│")]
    assert [row.split("│")[2].strip() for row in rows] == ["X", "Y", "Z", "W"]
    header = next(line for line in lines if "stage" in line)
    notes = [row.split("│")[-2].strip() for row in rows]
    if columns == 80:
        assert header.split("┃")[3:6] == [" reach ", " now ", " on "]
        assert notes == ["", "shared", "shared", "no index"]
    else:
        assert "conversion" in header and "moved on" in header
        assert notes == ["", "index shared", "index shared", "no index"]


def test_funnel_table_has_no_note_column_when_no_stage_needs_one(db):
    lines = _funnel_lines(db, "job-1", 80)
    header = next(line for line in lines if "stage" in line)
    assert "note" not in header and header.rstrip().endswith("back ┃")


def test_funnel_needs_an_integration(db):
    assert "Missing option '--integration'" in invoke("funnel", "--db", db, code=2).output


def test_stuck_with_a_stage_override(db):
    # Today is long after the scenario: every current stay is stuck but W, given 10000 days.
    out = invoke("stuck", "--days", "4", "--stage", "W=10000", "--db", db, "--format", "jsonl")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert list(rows[0]) == list(STUCK_FIELDS)
    assert sorted(r["application_id"] for r in rows) == ["app-e", "app-g", "app-h"]


def test_stuck_rejects_a_malformed_override(db):
    out = invoke("stuck", "--days", "4", "--stage", "W", "--db", db, code=2).output
    assert "'W' is not STAGE=DAYS" in out


def test_a_missing_database_is_one_line(tmp_path):
    out = invoke("stays", "--db", str(tmp_path / "none.db"), code=1).output
    assert out.strip() == f"Error: no stagewatch database at {tmp_path / 'none.db'}"


@pytest.mark.parametrize(
    ("command", "columns", "ids"),
    [
        (["stays", "--job", "job-1"], 80, False),
        (["stays", "--job", "job-1"], 200, True),
        (["stuck", "--days", "4"], 80, False),
        (["stuck", "--days", "4"], 200, True),
    ],
)
def test_stays_and_stuck_tables_keep_each_row_on_one_line(db, command, columns, ids):
    """At 80 columns short ids and times to the minute keep a stay on one line; wide enough,
    the full ids show, to be copied."""
    result = CliRunner().invoke(app, [*command, "--db", db], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith("│")]
    assert max(len(line) for line in lines) <= columns
    assert rows and all(line.startswith("│ ") and line.endswith("│") for line in rows)
    if command[0] == "stays":  # job-1's stays, oldest first per application: app-a's first
        assert rows[0].split("│")[1].strip() == "app-a"
        assert ("2026-01-" in rows[0]) is ids  # the year only where there is room
    else:  # the integration, whole or cut to its tool and first characters
        assert (INTEGRATION in result.stdout) is ids
        assert ("greenhouse:HWUT…" in result.stdout) is not ids
