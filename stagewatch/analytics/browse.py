"""`stagewatch browse`: the store in Datasette, read-only, described by the comments of its DDL.

Datasette is an optional extra (`stagewatch[browse]`); everything here but `datasette_argv` and
`run` works without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from stagewatch.errors import StagewatchError
from stagewatch.store.schema import _UNCOMMENTED, _comments

INSTALL_HINT = (
    "pip install 'stagewatch[browse]' (from a checkout: .venv/bin/pip install -e '.[browse]')"
)

CANNED_QUERIES: dict[str, dict[str, str]] = {
    "stays": {
        "title": "Stays",
        "description": "Every stay of an application in a stage, with its bounds and how it "
        "ended. Leave a field empty for all.",
        "sql": "SELECT * FROM stage_stays\n"
        "WHERE (:integration_id = '' OR integration_id = :integration_id)\n"
        "  AND (:job_id = '' OR job_id = :job_id)\n"
        "ORDER BY integration_id, application_id, event_id",
    },
    "funnel": {
        "title": "Funnel per job",
        "description": "Stage by stage in index order: reached, in now, conversion, days in stage.",
        "sql": "SELECT * FROM job_funnel\nWHERE integration_id = :integration_id\n"
        "ORDER BY job_id, stage_order",
    },
    "stuck": {
        "title": "Stuck applications",
        "description": "Undecided applications in their current stage for more than :days days "
        "(counted from the observation that saw them enter).",
        "sql": "SELECT integration_id, application_id, job_id, stage_id, stage_name, entered_at,\n"
        "  round(julianday('now') - julianday(entered_at), 3) AS days_so_far\n"
        "FROM stage_stays\n"
        "WHERE ended = 'current' AND julianday('now') - julianday(entered_at) > CAST(:days AS REAL)\n"
        "ORDER BY days_so_far DESC",
    },
}


class BrowseUnavailable(StagewatchError):
    """Datasette is not installed."""


def database_name(path: str | os.PathLike[str]) -> str:
    """The name Datasette gives a database file: its stem."""
    return Path(path).stem


def metadata(conn: sqlite3.Connection, *, database: str) -> dict[str, Any]:
    """Datasette metadata: every table and view with its description and its columns', from the
    `--` comments their DDL keeps, and the canned queries."""
    tables: dict[str, Any] = {}
    for kind, name, sql in conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ):
        head, columns = _comments(sql, is_view=kind == "view")
        tables[name] = {"description": head or _UNCOMMENTED.get(name, ""), "columns": columns}
    return {
        "title": "stagewatch",
        "description": "Stage-change history of applications from Kombo's ATS API (read-only).",
        "databases": {database: {"tables": tables, "queries": CANNED_QUERIES}},
    }


def write_metadata(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def datasette_argv(
    db: str | os.PathLike[str], data: dict[str, Any], *, host: str, port: int
) -> list[str]:
    """The command that serves `db`: reads only (Datasette opens a file it may not write with
    mode=ro, and canned queries are SELECTs)."""
    if importlib.util.find_spec("datasette") is None:
        raise BrowseUnavailable(f"stagewatch browse needs Datasette: {INSTALL_HINT}")
    handle, name = tempfile.mkstemp(prefix="stagewatch-datasette-", suffix=".json")
    os.close(handle)
    write_metadata(data, Path(name))
    return [
        "serve",
        str(db),
        "--metadata",
        name,
        "--host",
        host,
        "--port",
        str(port),
        "--setting",
        "default_page_size",
        "100",
    ]


def run(argv: list[str]) -> int:
    """Serve in this process until interrupted (so stopping it stops Datasette); the metadata
    file goes with it."""
    from datasette.cli import cli

    try:
        cli.main(argv, prog_name="datasette", standalone_mode=False)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        Path(argv[argv.index("--metadata") + 1]).unlink(missing_ok=True)
