"""The weekly pipeline report: per integration a markdown artifact `pipeline-<slug>` (funnels with
charts, the week's moves, stuck applications, hires) and one `stagewatch.application.stuck` event
per stay that crossed its threshold."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.states import Completed, State
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.sync import IntegrationId
from stagewatch.pipeline import split_ids
from stagewatch.settings import Settings
from stagewatch.store import Store
from stagewatch.store.location import resolve
from stagewatch.timeutil import ensure_utc, utcnow
from tasks.pipeline_report import report_integration


class PipelineReportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    integration_ids: list[IntegrationId] | None = Field(
        default=None,
        max_length=500,
        description="Integrations to report on; none: every integration the store has synced.",
    )
    stuck_days: float = Field(
        default=14,
        ge=0,
        le=3650,
        description="0 to 3650. Days in the current stage that make an application stuck.",
    )
    stuck_stage_days: dict[str, float] = Field(
        default_factory=dict,
        description='Another threshold for some stages, by stage id or name: {"Offer": 5}.',
    )
    week_days: int = Field(
        default=7, ge=1, le=366, description="1 to 366. Days of moves and hires shown."
    )
    show_candidate_names: bool = Field(
        default=False,
        description="Candidate names in the artifact and events (contact data never).",
    )
    emit_stuck_events: bool = Field(
        default=True, description="Send stagewatch.application.stuck once per stuck stay."
    )
    db: str | None = Field(
        default=None, description="SQLite path or postgresql:// URL (default STAGEWATCH_DB)."
    )
    as_of: datetime | None = Field(
        default=None, description="Report as of this time (default now): the week ends here."
    )

    @field_validator("integration_ids", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return split_ids(value)

    @field_validator("stuck_stage_days")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [stage for stage, days in value.items() if not days >= 0]
        if bad:
            raise ValueError(f"stuck_stage_days must be zero or more days: {', '.join(bad)}")
        return value


@flow(name="pipeline-report", log_prints=False)
def pipeline_report(params: PipelineReportParams) -> State:
    """Report on each integration's pipeline and announce newly stuck applications."""
    db = resolve(params.db or Settings().stagewatch_db)
    as_of = ensure_utc(params.as_of) if params.as_of else utcnow()
    store = Store(db)
    try:
        ids = params.integration_ids or [row["integration_id"] for row in store.status()]
        results = [
            report_integration(
                store,
                integration_id,
                as_of=as_of,
                stuck_days=params.stuck_days,
                stuck_stage_days=params.stuck_stage_days,
                week_days=params.week_days,
                show_candidate_names=params.show_candidate_names,
                emit_stuck_events=params.emit_stuck_events,
            )
            for integration_id in ids
        ]
    finally:
        store.close()
    stuck = sum(r["stuck"] for r in results)
    announced = sum(r["stuck_announced"] for r in results)
    return Completed(
        message=f"{len(results)} integrations; {stuck} stuck, {announced} newly announced",
        data=results,
    )
