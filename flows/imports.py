"""Prefect flow `import-tracked-applications`: `stagewatch import` as a manual deployment.

The rows come as a parameter (pasted in the run form: one object per row, keys named by the ATS's
id fields); the results go to a markdown artifact and the flow's return value, one per row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, ConfigDict, Field

from flows.sync import IntegrationId, open_client
from stagewatch.importer import (
    OK_STATUSES,
    Importer,
    InputRow,
    RowResult,
    artifact_key,
    counts,
    results_markdown,
    tool_of,
)
from stagewatch.kombo.client import BASE_URLS
from stagewatch.settings import Settings
from stagewatch.store import Store
from stagewatch.store.location import is_postgres, resolve
from tasks.secrets import kombo_api_key

MAX_ROWS = 10_000
# Statuses after which a plain re-run has work left: the batch stopped, or Kombo throttled.
RERUN_STATUSES = frozenset({"failed", "not_sent"})


class ImportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    integration_id: IntegrationId = Field(
        description="Kombo integration id, e.g. greenhouse:HWUTwvyx2wLoSUHphiWVrp28."
    )
    rows: list[dict[str, str | int | None]] = Field(
        min_length=1,
        max_length=MAX_ROWS,
        description=(
            'One object per application, keys named by the ATS\'s id fields: {"application_id": '
            '"123"} for Greenhouse, {"placement_id": ...} for Recruitee, {"candidate_remote_id": '
            '..., "job_remote_id": ...} for SmartRecruiters (see the README). Optional keys: '
            "id_type, tracked_at."
        ),
    )
    tool: str | None = Field(
        default=None, description="The ATS; default: the integration id's prefix."
    )
    tracked_at: str | None = Field(
        default=None,
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$",
        description="tracked_at for rows without one (YYYY-MM-DDTHH:MM:SS.sssZ); null: Kombo's.",
    )
    dry_run: bool = Field(default=False, description="Check every row; send nothing.")
    retry_unknown: bool = Field(
        default=False,
        description="Send again the rows whose earlier outcome is unknown (Kombo then answers "
        "already tracked if the earlier request did import them).",
    )
    base_url: str | None = Field(default=None, description="Kombo base URL (e.g. the simulator).")
    db: str | None = Field(
        default=None, description="SQLite file or postgresql:// URL (default STAGEWATCH_DB)."
    )


def run_import(params: ImportParams) -> list[RowResult]:
    """The import itself, in the flow's thread: rows go one by one, never as task results."""
    settings = Settings()
    rows = [InputRow(n, dict(cells)) for n, cells in enumerate(params.rows, start=1)]
    tool = (params.tool or tool_of(params.integration_id)).lower()
    db = resolve(params.db or settings.stagewatch_db)
    if params.dry_run:
        store = Store(db, readonly=True) if is_postgres(db) or Path(db).is_file() else None
        try:
            ledger = store.import_ledger() if store else None
            return Importer(params.integration_id, tool, None, ledger, params.tracked_at).run(rows)
        finally:
            if store:
                store.close()
    base_url = (params.base_url or settings.kombo_base_url or BASE_URLS[settings.kombo_region])
    client = open_client(kombo_api_key(), params.integration_id, base_url.rstrip("/"), settings)
    with client, Store(db, lease_seconds=settings.stagewatch_lock_lease_seconds) as store:
        importer = Importer(
            params.integration_id,
            tool,
            client,
            store.import_ledger(),
            params.tracked_at,
            params.retry_unknown,
        )
        return importer.run(rows)


def _state(results: list[RowResult]) -> State:
    """Failed when a re-run has rows left to send; Completed otherwise, named for what needs a
    look (rows Kombo refused, invalid rows, outcomes unknown): expected outcomes, not failures."""
    by_status = counts(results)
    message = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in by_status.items())
    data: list[dict[str, Any]] = [r.model_dump(mode="json", exclude_none=True) for r in results]
    if RERUN_STATUSES & set(by_status):
        return Failed(message=message, data=data)
    if set(by_status) - OK_STATUSES:
        return Completed(name="NeedsAttention", message=message, data=data)
    return Completed(message=message, data=data)


@flow(name="import-tracked-applications", log_prints=False)
def import_tracked_applications(params: ImportParams) -> State:
    """Ask Kombo to track existing ATS applications; one result per row, in an artifact too."""
    results = run_import(params)
    create_markdown_artifact(
        results_markdown(params.integration_id, results, dry_run=params.dry_run),
        key=artifact_key(params.integration_id),
        description=f"import-tracked-applications for {params.integration_id}",
    )
    get_run_logger().info("import into %s: %s", params.integration_id, counts(results))
    return _state(results)
