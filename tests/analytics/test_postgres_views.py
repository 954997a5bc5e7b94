"""The analytics views on PostgreSQL (the 0006 twin) give the numbers SQLite gives for one timeline."""

from __future__ import annotations

from decimal import Decimal

import pytest

from stagewatch.store import Store
from tests.analytics.scenario import build
from tests.builders import FINISHED

VIEWS = {
    "stage_stays": "integration_id, application_id, event_id",
    "job_funnel": "integration_id, job_id, stage_order",
    "first_sightings": "integration_id, application_id",
}


def _rows(store: Store, view: str) -> list[tuple]:
    cursor = store._conn.execute(f"SELECT * FROM {view} ORDER BY {VIEWS[view]}")
    return [tuple(float(v) if isinstance(v, Decimal | float) else v for v in row) for row in cursor]


@pytest.mark.parametrize("view", VIEWS)
def test_postgresql_views_hold_the_sqlite_numbers(view, tmp_path, pg_url):
    with (
        Store(tmp_path / "sw.db", clock=lambda: FINISHED) as sqlite,
        Store(pg_url, clock=lambda: FINISHED) as postgres,
    ):
        build(sqlite)
        build(postgres)
        expected = _rows(sqlite, view)
        found = _rows(postgres, view)
    assert len(expected) > 3
    assert found == expected
