"""dlt as a Kombo-to-SQLite loader, configured the way its REST API source documents.

One resource per integration (its own `X-Integration-Id` header and incremental state), a cursor
paginator on `data.next`, `data.results` as the data selector, `updated_after` bound to
`dlt.sources.incremental` over `changed_at`, merge on `(integration_id, id)` into one `applications`
table in SQLite through the sqlalchemy destination, with `create_primary_keys=True` (off by default;
without it dlt's merge of 10k changed rows into a 1M-row table ran past 15 minutes, a correlated
EXISTS over unindexed tables), and one load worker (`LOAD__WORKERS=1`: SQLite has one writer, so
parallel load jobs only queue on its lock, and at 1M one of them failed on it). Everything else is
dlt's default (nested lists become child tables). Several integrations run as parallelized
resources, `EXTRACT__WORKERS` at a time (set per resource, `parallelized` had no effect in dlt 1.31:
the simulator saw one request at a time; set on the source, it works).

    KOMBO_API_KEY=... python -m benchmarks.dlt_contender --base-url URL --db out.db \
        --pipelines-dir DIR --integration ID [...]

The incremental state lives in `--pipelines-dir`: run again with the same one for an incremental
sync. Prints one JSON line: {"rows": ..., "integrations": ..., "seconds": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

PAGE_SIZE = 250
PIPELINE_NAME = "kombo_bench"
TABLE = "applications"
EPOCH = "1970-01-01T00:00:00.000Z"

# dlt reads these at import: no telemetry (this machine is offline) and quiet logs.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
os.environ.setdefault("LOAD__WORKERS", "1")

import dlt  # noqa: E402
from dlt.sources.rest_api import rest_api_source  # noqa: E402


def resource_name(integration_id: str) -> str:
    """A stable resource name per integration; dlt keys the incremental state by it."""
    return "applications_" + re.sub(r"\W", "_", integration_id).lower()


def _tagger(integration_id: str):
    def tag(record: dict[str, Any]) -> dict[str, Any]:
        record["integration_id"] = integration_id
        return record

    return tag


def build_source(base_url: str, api_key: str, integration_ids: Sequence[str]):
    resources = [
        {
            "name": resource_name(iid),
            "table_name": TABLE,
            "primary_key": ["integration_id", "id"],
            "write_disposition": "merge",
            "endpoint": {
                "path": "ats/applications",
                "headers": {"X-Integration-Id": iid},
                "params": {
                    "page_size": PAGE_SIZE,
                    "include_deleted": "true",
                    "updated_after": {
                        "type": "incremental",
                        "cursor_path": "changed_at",
                        "initial_value": EPOCH,
                    },
                },
                "data_selector": "data.results",
                "paginator": {
                    "type": "cursor",
                    "cursor_path": "data.next",
                    "cursor_param": "cursor",
                },
            },
            "processing_steps": [{"map": _tagger(iid)}],
        }
        for iid in integration_ids
    ]
    return rest_api_source(
        {
            "client": {
                "base_url": base_url.rstrip("/") + "/",
                "auth": {"type": "bearer", "token": api_key},
            },
            "resources": resources,
        },
        parallelized=len(integration_ids) > 1,
    )


def sync(
    base_url: str, api_key: str, integration_ids: Sequence[str], db_path: str, pipelines_dir: str
) -> dict[str, Any]:
    started = time.perf_counter()
    pipeline = dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        pipelines_dir=pipelines_dir,
        destination=dlt.destinations.sqlalchemy(
            credentials=f"sqlite:///{db_path}", create_primary_keys=True
        ),
        dataset_name="kombo",
        progress=None,
    )
    pipeline.run(build_source(base_url, api_key, integration_ids))
    counts = pipeline.last_trace.last_normalize_info.row_counts
    return {
        "rows": counts.get(TABLE, 0),
        "integrations": len(integration_ids),
        "seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dlt_contender", description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--integration", action="append", required=True, dest="integrations")
    args = parser.parse_args(argv)
    api_key = os.environ.get("KOMBO_API_KEY")
    if not api_key:
        parser.error("KOMBO_API_KEY is not set")
    result = sync(args.base_url, api_key, args.integrations, args.db, args.pipelines_dir)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
