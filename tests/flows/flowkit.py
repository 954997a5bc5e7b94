"""What the flow tests share: routing the flows' Kombo client to a simulator, reading a run's
artifacts back from Prefect, and counting a change log's rows by hand.

The routing and event recording take a `MonkeyPatch`, so a module-scoped scenario (one set of
flow runs, several tests each checking one behaviour of it) can use them as well as a test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

import flows.sync
import tasks.steps
from stagewatch import report
from stagewatch.simulator import SimulatorTransport

KEY = "sk_flowtest_0123456789abcdef"
# How long a wait on flow-run events goes without one before it reads again.
REREAD_SECONDS = 5.0


def no_sleep(seconds):
    return None


def route_to_simulator(mp: pytest.MonkeyPatch) -> Callable[..., SimulatorTransport]:
    """Patch (through `mp`) the flows' Kombo client onto a simulator; returns `start(world,
    faults=None, wrap=None)`, which routes to that world and returns its transport."""
    for name in ("KOMBO_BASE_URL", "KOMBO_REGION", "STAGEWATCH_DB", "STAGEWATCH_MAX_ATTEMPTS"):
        mp.delenv(name, raising=False)
    mp.setenv("KOMBO_API_KEY", KEY)
    for listing in (tasks.steps.fetch_jobs_task, tasks.steps.fetch_applications_task):
        mp.setattr(listing, "retry_delay_seconds", 0)  # a task retry never waits here

    def start(world, faults=None, wrap=None):
        transport = SimulatorTransport(world, faults, sleep=no_sleep)
        mp.setattr(
            flows.sync,
            "open_client",
            partial(
                flows.sync.open_client,
                transport=wrap(transport) if wrap else transport,
                sleep=no_sleep,
            ),
        )
        return transport

    return start


def record_events(mp: pytest.MonkeyPatch) -> Callable[..., list]:
    """Prefect's recording events client (see the `recorded_events` fixture), patched through
    `mp`; returns `drain(prefix="stagewatch.")`."""
    from prefect.events.clients import AssertingPassthroughEventsClient
    from prefect.events.worker import EventsWorker

    worker = EventsWorker.instance(AssertingPassthroughEventsClient)
    mp.setattr(EventsWorker, "instance", lambda *args: worker)

    def drain(prefix: str = "stagewatch.") -> list:
        worker.drain()
        return [
            e for e in AssertingPassthroughEventsClient.last.events if e.event.startswith(prefix)
        ]

    return drain


def artifacts(state, key=None):
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])) if key else None,
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            ),
        )


def markdown_of(state, integration_id):
    found = artifacts(state, report.artifact_key(integration_id))
    assert len(found) == 1
    return found[0].data


def expected_counts(events):
    """Counts per label, computed here from the change log rows (not with report's helper)."""
    labels = Counter()
    for e in events:
        if e["kind"] == "outcome_changed":
            labels[
                {"HIRED": "hired", "DECLINED": "declined"}.get(e["to_outcome"], "outcome changed")
            ] += 1
        else:
            labels[e["kind"].replace("_", " ").replace("stage changed", "stage moved")] += 1
    return dict(labels)


def table_counts(markdown):
    lines = markdown.splitlines()
    start = lines.index("| change | count |") + 2
    counts = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        label, count = (cell.strip() for cell in line.strip("|").split("|"))
        counts[label] = int(count)
    return counts


def params(integration_id, db, **extra):
    return flows.sync.SyncIntegrationParams(
        integration_id=integration_id, db=str(db), page_size=40, **extra
    )


def wait_on_flow_run_events(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float):
    """`read()` again after each flow-run event from the Prefect server (PREFECT_API_URL) until
    `done` holds of its value, which is returned; no sleeping between reads. A final state's
    event can come before API reads show it, so a quiet spell of `REREAD_SECONDS` reads again."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter

    flow_runs = EventFilter(event=EventNameFilter(prefix=["prefect.flow-run."]))

    async def watch():
        async with get_events_subscriber(filter=flow_runs) as events:
            value = await anyio.to_thread.run_sync(read)
            while not done(value):
                with anyio.move_on_after(REREAD_SECONDS):
                    await anext(events)
                value = await anyio.to_thread.run_sync(read)
            return value

    async def bounded():
        with anyio.fail_after(timeout):
            return await watch()

    return anyio.run(bounded)
