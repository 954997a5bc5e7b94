"""`stagewatch demo` as a newcomer runs it: no server, no key, no network, not even a home."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stagewatch import report
from stagewatch.store import Store

STAGEWATCH = str(Path(sys.executable).parent / "stagewatch")


# An ephemeral Prefect start-up and three flow runs: about 25 s alone, several times that on a
# loaded machine, so the test's own limit is wider than the suite's.
@pytest.mark.timeout(300)
def test_demo_runs_offline_and_points_to_what_it_made(tmp_path):
    output = tmp_path / "demo"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "KOMBO_", "STAGEWATCH_"))
    }
    env["HOME"] = str(tmp_path / "no-such-home")
    result = subprocess.run(
        [STAGEWATCH, "demo", "--days", "2", "--applications", "60", "--output", str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    days = [line.split(":")[0] for line in lines if line.startswith("day ")]
    assert days == ["day 0 (2026-01-05)", "day 1 (2026-01-06)", "day 2 (2026-01-07)"]
    assert "Where to look next" in result.stdout
    db = (output / "stagewatch.db").resolve()
    assert f"stagewatch changes --db {db}" in result.stdout
    assert not (tmp_path / "no-such-home").exists()
    assert (output / ".prefect" / "prefect.db").exists()  # Prefect stayed inside the output

    with Store(db, readonly=True) as store:
        status = {row["integration_id"]: row for row in store.status()}
        normal = next(i for i in status if i.startswith("greenhouse:"))
        moves = list(store.events(integration_id=normal, kind="stage_changed"))
        last_run = status[normal]["last_run_id"]
        last_events = list(store.events(run_id=last_run))
    assert status[normal]["last_run_status"] == "succeeded"
    assert moves, "two simulated days move some applications"
    artifact = (output / f"{report.artifact_key(normal)}.md").read_text()
    assert artifact.startswith(
        f"# {report.escape_md(report.short_id(normal))}: incremental sync, {len(last_events)} change"
    )
