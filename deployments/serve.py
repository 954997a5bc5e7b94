"""The deployments of `prefect.yaml`, served from one process with `serve(...)`: no work pool.

    PREFECT_API_URL=http://127.0.0.1:4200/api STAGEWATCH_INTEGRATION_IDS=greenhouse:... \\
        python -m deployments.serve        # or: stagewatch serve -i greenhouse:...

Runs start in subprocesses of this one, which inherit its environment (KOMBO_API_KEY or the
`kombo-api-key` Secret block, STAGEWATCH_DB, KOMBO_BASE_URL).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.schedules import Cron, Interval

from flows.imports import import_tracked_applications
from flows.limits import ensure_limit
from flows.report import PipelineReportParams, pipeline_report
from flows.sync import (
    ON_CHANGE_LIMIT,
    ON_CHANGE_SLOTS,
    SyncIntegrationParams,
    SyncManyParams,
    sync_many,
    sync_on_change,
)

HOURLY_CRON = "0 * * * *"
WEEKLY_CRON = "30 3 * * 0"
REPORT_CRON = "0 6 * * 1"
STUCK_DAYS = 14
TIMEZONE = "UTC"
TAGS = ["stagewatch"]
# sync-on-change: the event `stagewatch webhooks` emits for a Kombo data-changed webhook, and what
# a triggered run syncs. Jobs are listed afresh, as the webhook may be about a job or its stages.
CHANGE_EVENT = "kombo.data-changed"
CHANGE_RESOURCE = "kombo.integration.*"
ON_CHANGE = {
    "integration_id": "{{ event.payload.integration_id }}",
    "mode": "incremental",
    "jobs_cache_hours": 0,
}
# How often the runner asks for runs to start: the time a triggered run waits to be picked up.
QUERY_SECONDS = 1.0


def _sync_params(integration_ids: list[str], base_url: str | None, db: str | None) -> dict:
    """The sync deployments' shared parameters, checked here rather than in the first run."""
    common: dict[str, Any] = {"integration_ids": integration_ids}
    if base_url:
        common["base_url"] = base_url
    if db:
        common["db"] = db
    SyncManyParams(**common)
    return common


def build_deployments(
    integration_ids: list[str],
    *,
    base_url: str | None = None,
    db: str | None = None,
    incremental_every: timedelta | None = None,
) -> list[RunnerDeployment]:
    """hourly-incremental, weekly-full, manual, sync-on-change and weekly-pipeline-report, as in
    `prefect.yaml`. `incremental_every` replaces the hourly cron with an interval (the UI demo runs
    it every minute)."""
    common = _sync_params(integration_ids, base_url, db)
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    hourly = (
        Interval(incremental_every, timezone=TIMEZONE)
        if incremental_every
        else Cron(HOURLY_CRON, timezone=TIMEZONE)
    )
    return [
        sync_many.to_deployment(
            name="hourly-incremental",
            description="Applications changed since the last run, every hour.",
            schedule=hourly,
            concurrency_limit=one_at_a_time,
            parameters={"params": common | {"mode": "incremental"}},
            tags=TAGS,
        ),
        sync_many.to_deployment(
            name="weekly-full",
            description="Every application, weekly, to correct drift and record deletions.",
            schedule=Cron(WEEKLY_CRON, timezone=TIMEZONE),
            concurrency_limit=one_at_a_time,
            parameters={"params": common | {"mode": "full"}},
            tags=TAGS,
        ),
        sync_many.to_deployment(
            name="manual",
            description=(
                "On demand from the UI; edit the form to pick integrations, a window or a full run."
            ),
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
            ),
            parameters={"params": common | {"mode": "incremental"}},
            tags=TAGS,
        ),
        _pipeline_report(integration_ids, db, one_at_a_time),
        on_change_deployment(base_url=base_url, db=db),
    ]


def _pipeline_report(
    integration_ids: list[str], db: str | None, limit: ConcurrencyLimitConfig
) -> RunnerDeployment:
    """weekly-pipeline-report, as in `prefect.yaml`."""
    params: dict[str, Any] = {"integration_ids": integration_ids, "stuck_days": STUCK_DAYS}
    if db:
        params["db"] = db
    PipelineReportParams(**params)
    return pipeline_report.to_deployment(
        name="weekly-pipeline-report",
        description=(
            "Funnels, the week's moves, stuck applications and hires, per integration; stuck events."
        ),
        schedule=Cron(REPORT_CRON, timezone=TIMEZONE),
        concurrency_limit=limit,
        parameters={"params": params},
        tags=TAGS,
    )


def on_change_trigger(**options: str) -> DeploymentEventTrigger:
    """A run per `kombo.data-changed` event, syncing the integration it names; `options` are
    further sync options (base_url, db) every triggered run gets."""
    SyncIntegrationParams(integration_id="checked:here", **options)
    return DeploymentEventTrigger(
        name="kombo-data-changed",
        match={"prefect.resource.id": CHANGE_RESOURCE},
        expect={CHANGE_EVENT},
        for_each={"prefect.resource.id"},
        parameters={"params": ON_CHANGE | options},
    )


def on_change_deployment(*, base_url: str | None = None, db: str | None = None) -> RunnerDeployment:
    options = {name: value for name, value in (("base_url", base_url), ("db", db)) if value}
    return sync_on_change.to_deployment(
        name="sync-on-change",
        description=(
            "The integration a Kombo data-changed webhook names, seconds after it arrives; "
            "runs of one integration coalesce (one syncs, one waits, the rest end Coalesced); "
            f"the global concurrency limit {ON_CHANGE_LIMIT} bounds how many sync at once."
        ),
        triggers=[on_change_trigger(**options)],
        # No deployment limit: it would hold runs before the flow starts, where they cannot
        # coalesce; the flow takes a slot of ON_CHANGE_LIMIT once it is the one to sync.
        tags=TAGS,
    )


def build_import_deployment() -> RunnerDeployment:
    """import-tracked-applications, as in `prefect.yaml`: manual, its rows given per run."""
    return import_tracked_applications.to_deployment(
        name="import-tracked-applications",
        description=(
            "On demand: ask Kombo to track applications it did not create (paste the rows, one "
            "object per application named by the ATS's id fields); the results go to a markdown "
            "artifact."
        ),
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        tags=[*TAGS, "import"],
    )


def ensure_on_change_limit() -> bool:
    """The global limit sync-on-change's runs take slots of, created at its default size before
    the first webhook (so it shows in the UI to be resized); True when created."""
    with get_client(sync_client=True) as client:
        return ensure_limit(client, ON_CHANGE_LIMIT, ON_CHANGE_SLOTS)


def serve_deployments(integration_ids: list[str], **options: Any) -> None:
    """Serve until interrupted; schedules stay active when it stops (another server may serve
    them next), so a restart does not leave the hourly sync paused."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "stagewatch")  # runs inherit it
    ensure_on_change_limit()
    serve(
        *build_deployments(integration_ids, **options),
        build_import_deployment(),
        pause_on_shutdown=False,
        query_seconds=QUERY_SECONDS,
    )


def main() -> None:
    ids = [i for i in os.environ.get("STAGEWATCH_INTEGRATION_IDS", "").replace(",", " ").split()]
    if not ids:
        raise SystemExit("set STAGEWATCH_INTEGRATION_IDS to the integrations to sync")
    serve_deployments(ids, base_url=os.environ.get("KOMBO_BASE_URL"))


if __name__ == "__main__":
    main()
