"""The three contenders as subprocess commands, and how to read what each printed.

Each contender is run in its own process against the simulator on loopback, with the API key in
`KOMBO_API_KEY`, and prints (last line of stdout, or a `STAGEWATCH_TIMING` line) how long its own work
took and how many application rows it stored, so interpreter and framework start-up can be told
apart from the sync itself.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
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


class Contender:
    name: str

    def command(self, job: Job) -> list[str]:
        raise NotImplementedError

    def env(self, job: Job) -> dict[str, str]:
        return {}

    def parse(self, stdout: str) -> Report:
        """The JSON object on the last non-empty stdout line: `seconds` and `rows`."""
        lines = [line for line in stdout.splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"{self.name} printed nothing on stdout")
        try:
            data = json.loads(lines[-1])
        except json.JSONDecodeError:
            raise ValueError(f"{self.name}: last stdout line is not JSON: {lines[-1]!r}") from None
        return Report(work=float(data["seconds"]), rows=int(data["rows"]))


class Floor(Contender):
    name = "floor"

    def command(self, job: Job) -> list[str]:
        cmd = [PYTHON, "-m", "benchmarks.floor", "--base-url", job.base_url]
        cmd += ["--db", str(job.workdir / "floor.db"), "--concurrency", str(job.concurrency)]
        for iid in job.integration_ids:
            cmd += ["--integration", iid]
        return cmd + (["--incremental"] if job.incremental else [])


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
        if len(job.integration_ids) > 1:
            cmd += ["--max-concurrency", str(job.concurrency)]
        for iid in job.integration_ids:
            cmd += ["--integration", iid]
        return cmd

    def parse(self, stdout: str) -> Report:
        raise NotImplementedError("filled in once `stagewatch sync` prints its timing")


CONTENDERS: dict[str, Contender] = {c.name: c for c in (Stagewatch(), Floor(), Dlt())}
