"""The three contenders as subprocess commands, and how to read what each did.

Each contender runs in its own process against the simulator on loopback, with the API key in
`KOMBO_API_KEY`. Its *work* time is what it timed itself (floor and dlt print it; for stagewatch it is
the flow run's start and end times as Prefect recorded them), so interpreter and framework start-up
can be told apart from the sync itself.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STAGEWATCH = str(Path(sys.executable).with_name("stagewatch"))


@dataclass(frozen=True)
class Job:
    """One contender run: which integrations, where its state lives, full or incremental."""

    base_url: str
    integration_ids: tuple[str, ...]
    workdir: Path  # the contender's own state (database, pipeline state), kept for incremental runs
    incremental: bool
    concurrency: int


@dataclass(frozen=True)
class Report:
    work: float
    rows: int
    phases: dict[str, float] = field(default_factory=dict)  # stagewatch: seconds per task name


def _last_json(name: str, stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{name} printed nothing on stdout")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        raise ValueError(f"{name}: last stdout line is not JSON: {lines[-1][:200]!r}") from None


class Contender:
    name: str

    def command(self, job: Job) -> list[str]:
        raise NotImplementedError

    def env(self, job: Job) -> dict[str, str]:
        return {}

    def parse(self, stdout: str, env: Mapping[str, str]) -> Report:
        """The JSON object on the last non-empty stdout line: `seconds` and `rows`."""
        data = _last_json(self.name, stdout)
        return Report(work=float(data["seconds"]), rows=int(data["rows"]))


class Floor(Contender):
    name = "floor"

    def command(self, job: Job) -> list[str]:
        cmd = [PYTHON, "-m", "benchmarks.floor", "--base-url", job.base_url]
        cmd += ["--db", str(job.workdir / "floor.db"), "--concurrency", str(job.concurrency)]
        for iid in job.integration_ids:
            cmd += ["--integration", iid]
        return cmd + (["--incremental"] if job.incremental else [])


class Pager(Floor):
    """The floor with nothing to do: it pages the same way, reads only each page's cursor and
    stores nothing. It bounds (c) from below on this machine: what the simulator's rendering and
    loopback add to the latency, which no contender can avoid."""

    name = "pager"

    def command(self, job: Job) -> list[str]:
        return [*super().command(job), "--pages-only"]


class Dlt(Contender):
    name = "dlt"

    def command(self, job: Job) -> list[str]:
        cmd = [PYTHON, "-m", "benchmarks.dlt_contender", "--base-url", job.base_url]
        cmd += ["--db", str(job.workdir / "dlt.db"), "--pipelines-dir", str(job.workdir / "dlt")]
        for iid in job.integration_ids:
            cmd += ["--integration", iid]
        return cmd  # dlt keeps its incremental state in --pipelines-dir: the same command

    def env(self, job: Job) -> dict[str, str]:
        return {"EXTRACT__WORKERS": str(job.concurrency)}


class Stagewatch(Contender):
    """`stagewatch sync` through its Prefect flow, with Prefect's ephemeral API server."""

    name = "stagewatch"

    def command(self, job: Job) -> list[str]:
        cmd = [STAGEWATCH, "sync", "--base-url", job.base_url]
        cmd += ["--db", str(job.workdir / "stagewatch.db"), "--json"]
        cmd += ["--mode", "incremental" if job.incremental else "full"]
        cmd += ["--max-concurrency", str(job.concurrency)]
        for iid in job.integration_ids:
            cmd += ["--integration", iid]
        return cmd

    def parse(self, stdout: str, env: Mapping[str, str]) -> Report:
        """Rows from the command's JSON; times from the flow run Prefect just recorded."""
        data = _last_json(self.name, stdout)
        if not data.get("ok"):
            raise ValueError(f"stagewatch sync reported a failure: {json.dumps(data)[:500]}")
        rows = sum(o["applications"] for o in data["integrations"])
        work, phases = flow_run_times(Path(env["PREFECT_HOME"]) / "prefect.db")
        return Report(work=work, rows=rows, phases=phases)


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def flow_run_times(prefect_db: Path) -> tuple[float, dict[str, float]]:
    """The latest flow run's start-to-end seconds and its task runs' seconds summed per task name,
    read from the ephemeral Prefect server's own database (the server has exited by then)."""
    uri = prefect_db.resolve().as_uri() + "?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        flow = db.execute(
            "SELECT id, state_type, start_time, end_time FROM flow_run "
            "ORDER BY created DESC LIMIT 1"
        ).fetchone()
        if flow is None or flow[1] != "COMPLETED" or not flow[2] or not flow[3]:
            raise ValueError(f"the latest flow run in {prefect_db} did not complete: {flow}")
        tasks = db.execute(
            "SELECT name, start_time, end_time FROM task_run WHERE flow_run_id = ? "
            "AND start_time IS NOT NULL AND end_time IS NOT NULL ORDER BY start_time",
            (flow[0],),
        ).fetchall()
    phases: dict[str, float] = {}  # in the order the tasks first ran: the results table's columns
    for name, start, end in tasks:
        phase = name.rsplit("-", 1)[0]  # Prefect appends a short hash to task run names
        phases[phase] = phases.get(phase, 0.0) + _seconds(start, end)
    return _seconds(flow[2], flow[3]), phases


CONTENDERS: dict[str, Contender] = {c.name: c for c in (Stagewatch(), Floor(), Dlt(), Pager())}
