"""`changes`, `status` and `history` as a reviewer sees them at 80 and 120 columns (80 is what a
pipe gets): every row on one line, columns chosen by width. The expected outputs are files under
tests/data/cli/, read and checked by a person; after an intended change, rewrite them with
`python -m tests.cli.test_golden_tables` and read the diff before committing it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagewatch.cli import app
from stagewatch.store import Store
from tests.builders import FINISHED, OTHER_INTEGRATION, Runner, at, job
from tests.builders import application as record

DATA = Path(__file__).resolve().parent.parent / "data" / "cli"
WIDTHS = (80, 120)
# Kombo-shaped ids: 24 characters, as the real API hands them out.
A1, A2, A3, A4 = (
    "1NU4dnYrJtj5egkKnevuRDiK",
    "8VvJmXkqP2sWd7LhR3tYc9Fz",
    "Qz4Lm8TnW2xKp6RvB1cJd5Hs",
    "Xe7Gh2JkL9mN4pQ6rS8tU1vW",
)
J1, J2 = "JbT5vQ8wLx2mR7nK4pZ9cH3d", "Mn6Bv3Cx8Zl1Kj4Hg7Fd2Sa5"
BOGUS = "greenhouse:AAAAAAAAAAAAAAAAAAAAAAAA"
NOT_READY = "personio:gEUBxBSgv4dGeGZv4Tx8KHat"
BOGUS_ERROR = (
    "INTEGRATION.NOT_FOUND (HTTP 404): No integration with id "
    f"'{BOGUS}' [request sim_0000000041] (log: https://app.kombo.dev/logs/sim_0000000041)"
)
COMMANDS = {
    "changes": ["changes"],
    "status": ["status"],
    "history": ["history", A1],
}


def build(path: Path) -> None:
    """Three runs of one integration (moves both ways, a decline, a job change, a deletion),
    one of another, a mistyped id that failed and an integration that is not ready yet."""
    jobs = [job(J1), job(J2)]
    with Store(path, clock=lambda: FINISHED) as store:
        runner = Runner(store)
        runner.run(
            [
                record(A1, job_id=J1),
                record(A2, ("st-screen", "Phone screen"), job_id=J1),
                record(A3, job_id=J1),
            ],
            hours=0,
            jobs=jobs,
            watermark=at(-1),
        )
        runner.run(
            [
                record(A1, ("st-onsite", "Onsite"), job_id=J1),
                record(
                    A2,
                    ("st-screen", "Phone screen"),
                    outcome="DECLINED",
                    job_id=J1,
                    rejection_reason_name="Not a fit, sadly",
                ),
                record(A3, job_id=J2),
                record(A4, job_id=J2),
            ],
            hours=30,
            jobs=jobs,
            watermark=at(29),
        )
        runner.run(
            [
                record(A1, ("st-screen", "Phone screen"), job_id=J1),
                record(
                    A2,
                    ("st-screen", "Phone screen"),
                    outcome="DECLINED",
                    job_id=J1,
                    rejection_reason_name="Not a fit, sadly",
                ),
                record(A4, job_id=J2),
            ],
            hours=54,
            jobs=jobs,
            watermark=at(53),
        )
        Runner(store, OTHER_INTEGRATION).run([record("app-9")], hours=1, jobs=[job()])
        failed = store.begin_run(BOGUS, mode="full", started_at=at(55))
        store.fail_run(failed.id, error=BOGUS_ERROR)
        pending = store.begin_run(NOT_READY, mode="incremental", started_at=at(55))
        store.fail_run(
            pending.id,
            status="not_ready",
            error="INTEGRATION.SETUP_SYNC_PENDING (HTTP 409): the first sync is still running",
        )


def render(db: Path, command: str, width: int) -> str:
    result = CliRunner().invoke(
        app, [*COMMANDS[command], "--db", str(db)], env={"COLUMNS": str(width)}
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("golden-cli") / "sw.db"
    build(path)
    return path


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_output_matches_the_checked_file(db, command, width):
    output = render(db, command, width)
    assert output == (DATA / f"{command}-{width}.txt").read_text()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_table_line_fits_the_width_and_each_row_is_one_line(db, command, width):
    lines = render(db, command, width).splitlines()
    assert max(len(line) for line in lines) <= width
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    rows = [line for line in table if line.startswith("│")]
    assert rows, "a table with rows"
    # One line per row: no row continues on a line whose first cell is empty.
    assert all(line.split("│")[1].strip() for line in rows), "\n".join(lines)


def test_status_lists_ids_that_never_synced_apart(db):
    lines = render(db, "status", 120).splitlines()
    apart = lines.index("Never synced (a mistyped id, or not set up yet):")
    above, below = "\n".join(lines[:apart]), "\n".join(lines[apart:])
    assert BOGUS not in above and NOT_READY not in above
    assert re.search(rf"│ {BOGUS} +│ 5 \(full\) +│ failed \[1\] +│", below)
    assert re.search(rf"│ {NOT_READY} +│ 6 \(incremental\) +│ not_ready \[2\] +│", below)
    assert f"[1] {BOGUS}: {BOGUS_ERROR}" in " ".join(line.strip() for line in lines)


@pytest.mark.parametrize("width", WIDTHS)
def test_status_shows_the_last_check_once_the_fan_out_checks(db, tmp_path, width):
    """An idle integration is checked, not synced: its last run grows old while its check is an
    hour old, so the check's column stays at 80 columns too (the watermark goes first)."""
    import shutil
    from datetime import timedelta

    from stagewatch.store import CheckRecord

    checked = tmp_path / "checked.db"
    shutil.copy(db, checked)
    with Store(checked) as store:
        synced = [r["integration_id"] for r in store.status() if r["last_success_at"]]
        integration_id = synced[0]  # the first row of the synced table
        store.record_checks(
            [CheckRecord(integration_id, FINISHED + timedelta(hours=5), at(-1), "idle", None, 1)]
        )
    lines = render(checked, "status", width).splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    assert "checked (UTC)" in header
    rows = [line for line in lines if line.startswith("│")]
    assert [line for line in rows if "2026-02-01 17:00 (idle)" in line] == [rows[0]]
    assert all(line.split("│")[1].strip() for line in lines if line.startswith("│"))
    assert max(len(line) for line in lines if line[:1] in "┏┃┡│└") <= width


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "sw.db"
        build(path)
        DATA.mkdir(parents=True, exist_ok=True)
        for command in COMMANDS:
            for width in WIDTHS:
                (DATA / f"{command}-{width}.txt").write_text(render(path, command, width))
    sys.stdout.write(f"wrote {len(COMMANDS) * len(WIDTHS)} files to {DATA}\n")


if __name__ == "__main__":
    main()
