"""`stagewatch import` against the simulator served on loopback, counted at the simulator."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from stagewatch.cli import app
from stagewatch.simulator import World, serve_in_thread
from tests.imports.conftest import KEY, write


@pytest.fixture
def served(monkeypatch):
    world = World(seed=9, applications=60, jobs=4, api_key=KEY, scenarios=("normal",))
    base_url, stop = serve_in_thread(world)
    monkeypatch.setenv("KOMBO_API_KEY", KEY)
    for name in ("KOMBO_BASE_URL", "STAGEWATCH_DB"):
        monkeypatch.delenv(name, raising=False)
    yield world, base_url
    stop()


def imports_served(base_url: str) -> int:
    stats = httpx.get(f"{base_url}/_sim/stats", timeout=10).json()
    return stats["requests"].get("POST /ats/import-tracked-application", 0)


def body(tracked_at: str | None, remote_id: str) -> str:
    ids = {"id_type": "application_id", "application_id": remote_id}
    return json.dumps({"tracked_at": tracked_at, "greenhouse": ids})


def stagewatch(*args: str):
    return CliRunner().invoke(app, ["import", *args])


def test_dry_run_prints_each_body_and_sends_nothing(served, tmp_path):
    world, base_url = served
    backlog = world.integration(world.normal_integration_id).backlog
    path = write(tmp_path / "rows.csv", f"application_id,tracked_at\n{backlog[0].remote_id},\n"
                                        f"{backlog[1].remote_id},2025-11-02T10:00:00.000Z\n,\n"
                                        "x,yesterday\n")  # fmt: skip
    db = tmp_path / "sw.db"
    result = stagewatch("-i", world.normal_integration_id, str(path), "--dry-run",
                        "--base-url", base_url, "--db", str(db))  # fmt: skip
    assert result.exit_code == 1  # one row is invalid
    assert result.stdout.splitlines()[:3] == [
        body(None, backlog[0].remote_id),
        body("2025-11-02T10:00:00.000Z", backlog[1].remote_id),
        "dry run, nothing sent: 2 would send, 1 invalid",
    ]
    assert "line 5: invalid: tracked_at must look like" in result.stderr
    assert imports_served(base_url) == 0
    assert not db.exists()
    lines = (tmp_path / "rows.csv.results.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["would_send", "would_send", "invalid"]


def test_import_then_re_run_is_idempotent(served, tmp_path):
    world, base_url = served
    backlog = world.integration(world.normal_integration_id).backlog
    rows = [{"application_id": u.remote_id} for u in backlog[:3]] + [{"application_id": "42"}]
    path = write(tmp_path / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    args = ["-i", world.normal_integration_id, str(path), "--base-url", base_url,
            "--db", str(tmp_path / "sw.db"), "--results", str(tmp_path / "out.csv")]  # fmt: skip

    first = stagewatch(*args)
    assert first.exit_code == 1
    assert first.stdout.splitlines() == [
        "3 imported, 1 rejected",
        f"results: {tmp_path / 'out.csv'}",
    ]
    assert first.stderr.splitlines() == [
        "line 4: rejected: No application in the greenhouse account matches "
        "{'application_id': '42'}."
    ]
    assert imports_served(base_url) == 4
    out = (tmp_path / "out.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in out[1:]] == ["imported"] * 3 + ["rejected"]

    again = stagewatch(*args)
    assert again.stdout.splitlines()[0] == "3 skipped, 1 rejected"
    assert imports_served(base_url) == 5  # only the refused row went out again
    for text in (first.output, again.output, (tmp_path / "sw.db").read_bytes().decode("latin-1")):
        assert KEY not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rows.txt"], "error: rows.txt: name the file .csv or .jsonl (one JSON object a line)"),
        (
            ["rows.csv", "--tracked-at", "2026-01-01T00:00:00+01:00"],
            "error: --tracked-at must look like YYYY-MM-DDTHH:MM:SS.sssZ, got "
            "'2026-01-01T00:00:00+01:00'",
        ),
    ],
)
def test_bad_arguments_get_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "rows.txt", "application_id\n1\n")
    write(tmp_path / "rows.csv", "application_id\n1\n")
    result = stagewatch("-i", "greenhouse:abc", *args, "--dry-run")
    assert (result.exit_code, result.stderr.splitlines()) == (2, [message])


def test_an_integration_id_without_a_tool_needs_tool(tmp_path):
    path = write(tmp_path / "rows.csv", "placement_id\n7\n")
    result = stagewatch("-i", "abc", str(path), "--dry-run", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == 2
    assert "cannot tell the ATS from integration id 'abc'" in result.stderr
    ok = stagewatch("-i", "abc", str(path), "--dry-run", "--tool", "recruitee",
                    "--db", str(tmp_path / "none.db"))  # fmt: skip
    assert ok.exit_code == 0 and '"placement_id": "7"' in ok.stdout


def test_the_simulator_lists_its_untracked_applications_for_an_import_file(served, tmp_path):
    world, base_url = served
    integration_id = world.normal_integration_id

    def untracked() -> list[dict]:
        answer = httpx.get(f"{base_url}/_sim/untracked", params={"integration_id": integration_id})
        return answer.json()["untracked"]

    before = untracked()
    first = world.integration(integration_id).backlog[0]
    assert before[0] == {
        "tool": "greenhouse",
        "application_id": first.remote_id,
        "application_remote_id": first.remote_id,
        "placement_id": first.remote_id,
        "candidate_remote_id": first.candidate_remote_id,
        "job_remote_id": world.integration(integration_id).jobs[first.job].remote_id,
    }
    path = write(tmp_path / "rows.csv", "application_id\n" + before[0]["application_id"] + "\n")
    result = stagewatch("-i", integration_id, str(path), "--base-url", base_url,
                        "--db", str(tmp_path / "sw.db"))  # fmt: skip
    assert result.exit_code == 0 and result.stdout.startswith("1 imported\n")
    assert untracked() == before[1:]
    missing = httpx.get(f"{base_url}/_sim/untracked", params={"integration_id": "x:y"})
    assert missing.status_code == 404


def test_a_results_file_that_cannot_be_written_is_one_line_after_the_summary(tmp_path):
    path = write(tmp_path / "rows.csv", "application_id\n7\n")
    out = tmp_path / "missing" / "out.jsonl"
    result = stagewatch("-i", "greenhouse:abc", str(path), "--dry-run", "--results", str(out),
                        "--db", str(tmp_path / "none.db"))  # fmt: skip
    assert result.exit_code == 1
    assert "dry run, nothing sent: 1 would send" in result.stdout
    assert result.stderr.splitlines() == [
        f"error: cannot write the results to {out} (No such file or directory); the store's "
        "import ledger holds what was sent"
    ]
