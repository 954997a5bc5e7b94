"""`stagewatch browse`: Datasette's metadata describes every table and view, and it really serves
the store read-only on loopback, canned queries included."""

from __future__ import annotations

import json
import selectors
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from stagewatch.analytics import browse
from stagewatch.cli import app
from stagewatch.store import Store
from tests.analytics.scenario import build
from tests.builders import FINISHED, INTEGRATION

START_TIMEOUT = 30.0


@pytest.fixture
def db(tmp_path):
    """Datasette reads SQLite files: the scenario's store as one."""
    with Store(tmp_path / "sw.db", clock=lambda: FINISHED) as store:
        build(store)
        return store.path


def test_browse_says_a_postgresql_store_is_for_other_tools():
    result = CliRunner().invoke(app, ["browse", "--db", "postgresql://u:hunter2@127.0.0.1:1/x"])
    assert result.exit_code != 0
    assert "SQLite" in result.output and "hunter2" not in result.output


def test_metadata_describes_every_table_and_view(db, tmp_path):
    out = tmp_path / "metadata.json"
    result = CliRunner().invoke(app, ["browse", "--db", str(db), "--metadata-out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    described = data["databases"]["sw"]["tables"]
    with sqlite3.connect(db) as conn:
        names = {
            n
            for (n,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%'"
            )
        }
    assert set(described) == names
    assert all(entry["description"] for entry in described.values())
    assert described["stage_stays"]["columns"]["entered_after"].startswith("Lower bound")
    assert set(data["databases"]["sw"]["queries"]) == {"stays", "funnel", "stuck"}


def test_without_datasette_the_message_says_how_to_install_it(db, monkeypatch):
    monkeypatch.setattr(browse.importlib.util, "find_spec", lambda name: None)
    result = CliRunner().invoke(app, ["browse", "--db", str(db)])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: stagewatch browse needs Datasette: pip install 'stagewatch[browse]' "
        "(from a checkout: .venv/bin/pip install -e '.[browse]')"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_line(process: subprocess.Popen, text: bytes, timeout: float) -> None:
    """Read the server's stderr until a line holds `text` (uvicorn says it listens), without
    polling: the selector wakes on each line, the deadline bounds the wait."""
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if selector.select(left):
                line = process.stderr.readline()
                if not line:  # the process ended before it listened
                    break
                seen.append(line)
                if text in line:
                    return
    raise RuntimeError(b"".join(seen).decode() or "the server said nothing")


@pytest.fixture
def served(db):
    pytest.importorskip("datasette", reason=f"the browse extra is missing: {browse.INSTALL_HINT}")
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from stagewatch.cli import app; app()",
            "browse",
            "--db",
            str(db),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: a line read ahead into a buffer would hide from the selector
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_line(process, b"Uvicorn running on", START_TIMEOUT)
        httpx.get(f"{base}/-/versions.json", timeout=2).raise_for_status()
        yield base
    finally:
        process.terminate()
        process.wait(10)


def test_datasette_serves_the_views_and_canned_queries_read_only(served):
    stays = httpx.get(f"{served}/sw/stage_stays.json?_shape=array&application_id=app-c").json()
    assert [(s["stage_id"], s["ended"], s["days_in_stage"]) for s in stays] == [
        ("st-screen", "declined", 0.0)
    ]
    funnel = httpx.get(
        f"{served}/sw/funnel.json", params={"_shape": "array", "integration_id": INTEGRATION}
    ).json()
    assert [(r["job_id"], r["stage_id"], r["reached"]) for r in funnel[:4]] == [
        ("job-1", "st-applied", 3),
        ("job-1", "st-screen", 3),
        ("job-1", "st-onsite", 2),
        ("job-1", "st-offer", 0),
    ]
    stuck = httpx.get(f"{served}/sw/stuck.json", params={"_shape": "array", "days": "4"}).json()
    assert sorted(r["application_id"] for r in stuck) == ["app-e", "app-f", "app-g", "app-h"]
    refused = httpx.get(f"{served}/sw.json", params={"sql": "DELETE FROM stuck_announcements"})
    assert refused.status_code == 400
    assert "Statement must be a SELECT" in refused.text
