"""Webhook to change log: how long a Kombo `data-changed` webhook takes to become recorded changes,
and what a burst of them costs, with everything real on loopback.

    .venv/bin/python -m benchmarks.webhook_latency [--webhooks 20] [--rounds 10] [--integrations 10]

A `prefect server start` of its own (not the ephemeral one), `stagewatch webhooks`, the served
deployments (`python -m deployments.serve`) and the simulator; the store in a temporary directory.
Each integration gets a full baseline sync first (in process), so triggered runs are incremental.

1. Latency: `--webhooks` times, simulated time moves an hour and one integration's webhook is posted;
   measured from just before the POST to the `finished_at` of the first sync run of that integration
   that began after it (its commit put every earlier change in the change log), with the parts:
   event and trigger (POST to flow run created), pickup (created to Running: the runner's poll and
   the flow's process start) and the sync itself.
2. Burst: `--rounds` times, time moves half an hour and every integration's webhook is posted, so
   rounds x integrations webhooks arrive within seconds. Counted: the changes the simulator made,
   the `kombo.data-changed` events the receiver emitted (one per integration for the webhooks it
   had pending), flow runs started and how they ended (Coalesced or synced), sync runs and the
   changes they recorded, and per integration whether a sync began after its last webhook and
   whether the store then equals a fresh full listing of the simulator (nothing lost).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.machine import load
from deployments.ui import start_prefect_server, start_receiver, stop, wait_until_healthy
from stagewatch import pipeline
from stagewatch.kombo.client import KomboClient
from stagewatch.pipeline import PlainSteps, SyncOptions
from stagewatch.simulator import SimulatorTransport, World, serve_in_thread
from stagewatch.simulator.ids import random_id
from stagewatch.simulator.webhooks import data_changed
from stagewatch.store import Store
from stagewatch.timeutil import format_ts, parse_ts
from stagewatch.webhooks import SIGNATURE_HEADER, sign

REPO = Path(__file__).resolve().parent.parent
KEY = "sk_bench_webhooks"
SECRET = "whsec_bench_webhooks"
DEPLOYMENT = "sync-on-change/sync-on-change"
MODELS = ["ats_applications"]
RUN_TIMEOUT = 300.0
SNAPSHOT = (
    "SELECT application_id, job_id, stage_id, outcome, remote_deleted_at FROM applications "
    "WHERE integration_id = ? ORDER BY application_id"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Bench:
    """The running pieces and what the measurements need from them."""

    def __init__(self, tmp: Path, world: World, webhook_url: str) -> None:
        self.tmp, self.world, self.webhook_url = tmp, world, webhook_url
        self.db = tmp / "stagewatch.db"
        self.ids = list(world.integrations)
        self._rng = random.Random("webhook-bench")
        self._http = httpx.Client(timeout=10)

    def post(self, integration_id: str) -> datetime:
        """Post one signed data-changed webhook; returns when it was sent."""
        integ = self.world.integration(integration_id)
        body = json.dumps(data_changed(random_id(self._rng), integ, MODELS)).encode()
        sent = datetime.now(UTC)
        answer = self._http.post(
            self.webhook_url, content=body, headers={SIGNATURE_HEADER: sign(SECRET, body)}
        )
        if answer.status_code != 200:
            raise SystemExit(f"the receiver answered {answer.status_code}: {answer.text}")
        return sent

    def sync_runs(self, integration_id: str, since: datetime) -> list[dict[str, Any]]:
        with sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT * FROM sync_runs WHERE integration_id = ? AND started_at >= ? ORDER BY id",
                (integration_id, format_ts(since)),
            )
            return [dict(row) for row in rows]

    def synced_after(self, integration_id: str, sent: datetime) -> dict[str, Any]:
        """The first sync run that began after `sent`, once it has ended."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            runs = self.sync_runs(integration_id, sent)
            if runs and runs[0]["status"] != "running":
                return runs[0]
            time.sleep(0.05)
        raise SystemExit(f"no sync of {integration_id} ended within {RUN_TIMEOUT:.0f} s")


def baseline(world: World, db: Path) -> None:
    for integration_id in world.integrations:
        with (
            KomboClient(KEY, integration_id, transport=SimulatorTransport(world)) as client,
            Store(db) as store,
        ):
            outcome = pipeline.run_integration(
                integration_id, SyncOptions(mode="full"), client=client, store=store,
                steps=PlainSteps(),
            )  # fmt: skip
        assert outcome.status == "synced", outcome


def flow_runs(since: datetime) -> list[Any]:
    """The sync-on-change flow runs created after `since` (paged: the API returns 200 at most)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        found: list[Any] = []
        while True:
            page = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
                ),
                offset=len(found),
                limit=200,
            )
            found.extend(page)
            if len(page) < 200:
                return [run for run in found if run.created >= since]


def change_events(since: datetime) -> int:
    """The `kombo.data-changed` events the receiver emitted after `since`."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    only = EventFilter(
        occurred=EventOccurredFilter(since=since),
        event=EventNameFilter(name=["kombo.data-changed"]),
    )
    with get_client(sync_client=True) as client:
        return client.read_events(filter=only, limit=1).total


def pending_webhooks(tmp: Path) -> int:
    """Deliveries the receiver has not sent yet (its ledger, as `start_receiver` placed it)."""
    with sqlite3.connect(f"{(tmp / 'ui-webhooks.db').as_uri()}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[
            0
        ]


def action_failures(tmp: Path) -> int:
    """Trigger firings whose run-deployment action Prefect's server gave up on (it logs them)."""
    return (tmp / "server.log").read_text(errors="replace").count("Action failed")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _run_for(runs: list[Any], integration_id: str, sent: datetime) -> Any | None:
    """The flow run a webhook started: the first of its integration created after it was sent."""
    mine = [
        run
        for run in runs
        if run.parameters["params"]["integration_id"] == integration_id and run.created >= sent
    ]
    return min(mine, key=lambda run: run.created, default=None)


def latency(bench: Bench, webhooks: int) -> dict[str, Any]:
    started = datetime.now(UTC)
    samples = []
    for i in range(webhooks):
        bench.world.advance(hours=1)
        integration_id = bench.ids[i % len(bench.ids)]
        sent = bench.post(integration_id)
        run = bench.synced_after(integration_id, sent)
        samples.append((integration_id, sent, run))
    runs = flow_runs(started)
    total, trigger, pickup, sync = [], [], [], []
    for integration_id, sent, run in samples:
        total.append((parse_ts(run["finished_at"]) - sent).total_seconds())
        flow_run = _run_for(runs, integration_id, sent)
        if flow_run is not None and flow_run.start_time is not None:
            trigger.append((flow_run.created - sent).total_seconds())
            pickup.append((flow_run.start_time - flow_run.created).total_seconds())
            sync.append((parse_ts(run["finished_at"]) - flow_run.start_time).total_seconds())
    return {
        "n": webhooks,
        "statuses": Counter(run["status"] for _, _, run in samples),
        "events": sum(run["events"] or 0 for _, _, run in samples),
        "total": total,
        "parts": {"event+trigger": trigger, "pickup": pickup, "flow to commit": sync},
    }


def burst(bench: Bench, rounds: int) -> dict[str, Any]:
    started = datetime.now(UTC)
    last: dict[str, datetime] = {}
    made = 0
    for _ in range(rounds):
        made += bench.world.advance(hours=0.5)
        for integration_id in bench.ids:
            last[integration_id] = bench.post(integration_id)
    posted = datetime.now(UTC)
    runs = _wait_for_burst(bench, started, last)
    return {
        "webhooks": rounds * len(bench.ids),
        "made": made,
        "events": change_events(started),
        "posting_seconds": (posted - started).total_seconds(),
        "flow_runs": len(runs),
        "action_failures": action_failures(bench.tmp),
        "states": Counter(run.state.name for run in runs),
        "seconds": (max(run.end_time for run in runs if run.end_time) - started).total_seconds(),
        "integrations": {i: _covered(bench, i, started, last[i]) for i in bench.ids},
    }


def _wait_for_burst(bench: Bench, started: datetime, last: dict[str, datetime]) -> list[Any]:
    """The burst's flow runs, once the receiver has sent every webhook, every event it emitted
    has a run (or a firing Prefect gave up on), all runs are final and every integration has a
    sync that began after its last webhook and ended; or at the deadline."""
    deadline = time.monotonic() + RUN_TIMEOUT * 6
    while True:
        runs = flow_runs(started)
        settled = (
            pending_webhooks(bench.tmp) == 0
            and len(runs) + action_failures(bench.tmp) >= change_events(started)
            and all(run.state.is_final() for run in runs)
            and all(_synced_since(bench, i, sent) for i, sent in last.items())
        )
        if settled or time.monotonic() > deadline:
            return runs
        time.sleep(1)


def _synced_since(bench: Bench, integration_id: str, sent: datetime) -> bool:
    return any(run["status"] != "running" for run in bench.sync_runs(integration_id, sent))


def holds_the_listing(stored: list[tuple], listed: list[tuple]) -> bool:
    """Every application a fresh full listing shows is stored as listed; the store may hold more
    only as deleted (ones Kombo purged since, which a fresh listing no longer shows)."""
    got = {row[0]: row for row in stored}
    want = {row[0]: row for row in listed}
    purged = got.keys() - want.keys()
    return all(got.get(key) == row for key, row in want.items()) and all(
        got[key][-1] is not None for key in purged
    )


def _covered(bench: Bench, integration_id: str, started: datetime, last: datetime) -> dict:
    """An integration's syncs in the burst, and whether the change log lost anything."""
    runs = bench.sync_runs(integration_id, started)
    truth = bench.tmp / f"truth-{integration_id.replace(':', '-')}.db"
    with (
        KomboClient(KEY, integration_id, transport=SimulatorTransport(bench.world)) as client,
        Store(truth) as store,
    ):
        pipeline.run_integration(
            integration_id, SyncOptions(mode="full"), client=client, store=store,
            steps=PlainSteps(),
        )  # fmt: skip
    with sqlite3.connect(bench.db) as got, sqlite3.connect(truth) as want:
        same = holds_the_listing(
            got.execute(SNAPSHOT, (integration_id,)).fetchall(),
            want.execute(SNAPSHOT, (integration_id,)).fetchall(),
        )
    return {
        "syncs": len(runs),
        "succeeded": sum(run["status"] == "succeeded" for run in runs),
        "events": sum(run["events"] or 0 for run in runs),
        "after_last_webhook": any(
            run["status"] == "succeeded" and parse_ts(run["started_at"]) >= last for run in runs
        ),
        "same_as_full_listing": same,
    }


def start_serving(bench: Bench, base_url: str) -> subprocess.Popen:
    """`python -m deployments.serve`, as a user serves the deployments; waits for sync-on-change
    to answer one warm-up webhook end to end."""
    from prefect.exceptions import ObjectNotFound  # Prefect reads its settings on import

    env = os.environ | {
        "STAGEWATCH_INTEGRATION_IDS": ",".join(bench.ids),
        "KOMBO_BASE_URL": base_url,
    }
    with (bench.tmp / "serve.log").open("ab") as out:
        served = subprocess.Popen(
            [sys.executable, "-m", "deployments.serve"], cwd=REPO, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        if served.poll() is not None:
            raise SystemExit(f"deployments.serve exited; see {bench.tmp / 'serve.log'}")
        try:
            flow_runs(datetime.now(UTC))  # the deployment exists
            break
        except ObjectNotFound:  # not created yet
            time.sleep(1)
    bench.world.advance(hours=1)
    bench.synced_after(bench.ids[0], bench.post(bench.ids[0]))
    return served


def _seconds(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {statistics.median(values):.2f} s, p95 {_p95(values):.2f} s"


def report(measured: dict[str, Any], burst_figures: dict[str, Any], loads: list[str]) -> str:
    total = measured["total"]
    lines = [
        f"Latency, webhook POST to its change committed, {measured['n']} webhooks one at a time:",
        f"  {_seconds(total)} (min {min(total):.2f}, max {max(total):.2f}); target p50 < 5 s: "
        f"{'met' if statistics.median(total) < 5 else 'missed'}",
        *(f"  {name}: {_seconds(values)}" for name, values in measured["parts"].items()),
        f"  sync runs: {dict(measured['statuses'])}, {measured['events']} changes recorded",
        f"Burst: {burst_figures['webhooks']} webhooks for {len(burst_figures['integrations'])} "
        f"integrations posted in {burst_figures['posting_seconds']:.1f} s; all done after "
        f"{burst_figures['seconds']:.0f} s; the simulator made {burst_figures['made']} changes",
        f"  kombo.data-changed events: {burst_figures['events']}",
        f"  flow runs: {burst_figures['flow_runs']}, ended {dict(burst_figures['states'])}; "
        f"trigger actions Prefect gave up on: {burst_figures['action_failures']}",
    ]
    per = burst_figures["integrations"].values()
    lines += [
        f"  sync runs: {sum(i['syncs'] for i in per)} ({sum(i['succeeded'] for i in per)} "
        f"succeeded), {sum(i['events'] for i in per)} changes recorded; most per integration "
        f"{max(i['syncs'] for i in per)}",
        f"  a sync began after the integration's last webhook: "
        f"{sum(i['after_last_webhook'] for i in per)}/{len(per)}; store equals a fresh full "
        f"listing: {sum(i['same_as_full_listing'] for i in per)}/{len(per)}",
        f"Load average before / after latency / after burst: {' / '.join(loads)}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.webhook_latency", description=__doc__
    )
    parser.add_argument("--webhooks", type=int, default=20, help="latency samples")
    parser.add_argument("--rounds", type=int, default=10, help="burst: webhooks per integration")
    parser.add_argument("--integrations", type=int, default=10)
    parser.add_argument("--applications", type=int, default=2_000, help="per integration")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="stagewatch-webhook-bench-"))
    port = free_port()
    os.environ.update({
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "KOMBO_API_KEY": KEY,
        "STAGEWATCH_DB": str(tmp / "stagewatch.db"),
    })  # fmt: skip
    world = World(seed=18, applications=args.applications, jobs=40, api_key=KEY,
                  scenarios=("normal",) * args.integrations)  # fmt: skip
    processes: list[subprocess.Popen] = []
    base_url, stop_simulator = serve_in_thread(world)
    try:
        processes.append(start_prefect_server(tmp, port))
        wait_until_healthy(
            f"http://127.0.0.1:{port}/api/health", processes[0], "prefect", tmp / "server.log"
        )
        webhook_url, receiver = start_receiver(tmp, free_port(), SECRET)
        processes.append(receiver)
        bench = Bench(tmp, world, webhook_url)
        baseline(world, bench.db)
        processes.append(start_serving(bench, base_url))
        loads = [load()]
        measured = latency(bench, args.webhooks)
        loads.append(load())
        print(f"latency: {_seconds(measured['total'])}, parts {measured['parts']}", flush=True)
        burst_figures = burst(bench, args.rounds)
        loads.append(load())
        print(report(measured, burst_figures, loads), flush=True)
    finally:
        for process in reversed(processes):
            stop(process)
        stop_simulator()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
