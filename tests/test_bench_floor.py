"""The benchmark harness stays honest: the floor stores exactly what the simulator serves, and the
results builder turns samples into the right medians, ratios and verdicts."""

from __future__ import annotations

import json
import sqlite3
import sys

import httpx
import pytest

from benchmarks import floor, results
from benchmarks.measure import run_measured
from stagewatch.simulator import World, render, serve_in_thread

KEY = "sk_bench_test"
COLUMNS = ("job_id", "current_stage_id", "outcome", "changed_at", "remote_deleted_at")


@pytest.fixture
def served():
    world = World(seed=7, applications=600, jobs=6, api_key=KEY, scenarios=("normal", "normal"))
    base_url, stop = serve_in_thread(world)
    try:
        yield world, base_url
    finally:
        stop()


def _served_records(world: World) -> dict[tuple[str, str], dict]:
    """Every application the simulator lists with include_deleted=true, from its own state."""
    records = {}
    for iid, scenario in world.integrations.items():
        assert scenario == "normal"
        integ = world.integration(iid)
        for row in range(integ.application_count):
            if integ.app_log.listed(row):
                record = render.application(integ, row)
                records[iid, record["id"]] = record
    return records


def _stored(db_path) -> dict[tuple[str, str], tuple]:
    with sqlite3.connect(db_path) as db:
        found = db.execute(
            f"SELECT integration_id, id, {', '.join(COLUMNS)}, raw FROM applications"
        )
        return {(iid, app_id): rest for iid, app_id, *rest in found}


def _columns(record: dict) -> list:
    return [
        record["job_id"],
        record["current_stage_id"],
        record["outcome"],
        record["changed_at"],
        record["remote_deleted_at"],
    ]


def _stats(base_url: str) -> dict:
    return httpx.get(base_url.removesuffix("/v1") + "/_sim/stats").json()


def test_floor_stores_exactly_the_served_applications(served, tmp_path):
    world, base_url = served
    ids = list(world.integrations)
    db_path = tmp_path / "floor.db"

    result = floor.sync(base_url, KEY, ids, str(db_path), concurrency=2)

    expected = _served_records(world)
    stored = _stored(db_path)
    assert len(expected) == 1_200
    assert {key: [*cols[:-1], json.loads(cols[-1])] for key, cols in stored.items()} == {
        key: [*_columns(record), record] for key, record in expected.items()
    }
    assert (result.rows, result.requests, result.integrations) == (1_200, 6, 2)
    assert _stats(base_url)["requests"] == {"GET /ats/applications": 6}

    sample = results.Sample(
        workload="a full",
        size="1k",
        contender="floor",
        wall=result.seconds,
        work=result.seconds,
        rss_main_mb=40.0,
        rss_tree_mb=40.0,
        requests=_stats(base_url)["requests_total"],
        rows=result.rows,
    )
    cells = results.markdown_table(results.summarize([sample])).splitlines()[-1].split(" | ")
    assert cells[9:11] == ["6", "1,200"]


def test_floor_incremental_brings_changed_applications_up_to_date(served, tmp_path):
    world, base_url = served
    ids = list(world.integrations)
    db_path = tmp_path / "floor.db"
    floor.sync(base_url, KEY, ids, str(db_path))
    world.advance(hours=24)

    result = floor.sync(base_url, KEY, ids, str(db_path), incremental=True)

    expected = _served_records(world)
    stored = _stored(db_path)
    changed = {
        key for key, record in expected.items() if list(stored[key][:-1]) != _columns(record)
    }
    assert result.rows > 0
    assert changed == set()
    # Applications Kombo purged (two weeks after deletion) leave the listing; the floor keeps them.
    purged = set(stored) - set(expected)
    assert all(stored[key][4] is not None for key in purged)


def test_pager_reads_every_page_to_the_end_and_stores_nothing(served, tmp_path):
    world, base_url = served
    ids = list(world.integrations)
    db_path = tmp_path / "pager.db"

    result = floor.sync(base_url, KEY, ids, str(db_path), concurrency=2, pages_only=True)

    # 600 applications per integration at 250 a page: the same 6 requests the floor makes.
    assert (result.rows, result.requests, result.integrations) == (0, 6, 2)
    assert _stats(base_url)["requests"] == {"GET /ats/applications": 6}
    assert _stored(db_path) == {}


@pytest.mark.parametrize(
    ("body", "cursor"),
    [
        (b'{"status":"success","data":{"next":null,"results":[]}}', None),
        (b'{"status":"success","data":{"next":"YWJj\\/IjE=","results":[]}}', "YWJj/IjE="),
        # "next" inside a string is no key; a record with a "next" key sends the pager to parse.
        (b'{"data":{"results":[{"note":"\\"next\\":\\"x\\""}],"next":"c2"}}', "c2"),
        (b'{"data":{"results":[{"next":"x"}],"next":null}}', None),
    ],
)
def test_pager_cursor_is_the_envelopes(body, cursor):
    response = httpx.Response(200, content=body)
    assert floor._next_cursor(response) == cursor
    assert floor._next_cursor(response) == json.loads(body)["data"]["next"]


def _sample(
    contender: str, work: float, wall: float, rss: float = 100.0, **extra
) -> results.Sample:
    return results.Sample(
        workload=extra.pop("workload", results.FULL),
        size=extra.pop("size", "100k"),
        contender=contender,
        wall=wall,
        work=work,
        rss_main_mb=rss,
        rss_tree_mb=rss + 150,
        requests=extra.pop("requests", 400),
        rows=100_000,
        **extra,
    )


def test_results_medians_ratios_and_verdicts():
    samples = [
        _sample("floor", 10.0, 10.5),
        _sample("stagewatch", 13.0, 20.0, rss=180, cpu_main=9.0, cpu_tree=20.0),
        _sample("dlt", 40.0, 41.0),
        _sample("floor", 12.0, 12.5),
        _sample("stagewatch", 16.0, 23.0, rss=190, cpu_main=11.0, cpu_tree=24.0),
        _sample("dlt", 38.0, 39.0),
        _sample("floor", 11.0, 11.5),
        _sample("stagewatch", 14.0, 21.0, rss=170, cpu_main=10.0, cpu_tree=21.0),
        _sample("dlt", 36.0, 37.0),
        _sample(
            "stagewatch",
            4.0,
            6.0,
            workload="c 50x2k @30ms",
            size="100k",
            requests=450,
            ideal=3.375,
            max_concurrency=4,
            throttled=0,
        ),
        _sample("floor", 6.0, 6.2, workload="c 50x2k @30ms", requests=400, ideal=3.0),
        _sample("pager", 5.0, 5.1, workload="c 50x2k @30ms", requests=400, ideal=3.0),
    ]

    rows = results.summarize(samples)

    assert [(r.workload, r.contender) for r in rows] == [
        ("a full", "stagewatch"),
        ("a full", "floor"),
        ("a full", "dlt"),
        ("c 50x2k @30ms", "stagewatch"),
        ("c 50x2k @30ms", "floor"),
        ("c 50x2k @30ms", "pager"),
    ]
    stagewatch = rows[0]
    assert stagewatch.work == results.Spread(median=14.0, low=13.0, high=16.0, n=3)
    assert stagewatch.rss_main_mb == results.Spread(median=180.0, low=170.0, high=190.0, n=3)
    assert {k: round(v, 4) for k, v in stagewatch.ratios.items()} == {
        "work/floor": round(14.0 / 11.0, 4),
        "wall/floor": round(21.0 / 11.5, 4),
        "work/dlt": round(14.0 / 38.0, 4),
        "wall/dlt": round(21.0 / 39.0, 4),
    }
    assert results.ratio_table(rows).splitlines() == [
        "| workload | size | work / floor | work / dlt | wall / floor | wall / dlt | work / ideal |",
        "|---|---|---|---|---|---|---|",
        "| a full | 100k | 1.27 | 0.37 | 1.83 | 0.54 |  |",
        "| c 50x2k @30ms | 100k | 0.67 |  | 0.97 |  | 1.19 |",
    ]
    assert results.markdown_table(rows).splitlines()[2] == (
        "| a full | 100k | stagewatch | 14.00 (13.00-16.00) | 21.00 (20.00-23.00) | 180 (170-190) "
        "| 330 (320-340) | 10.0 / 21.0 | 0.0 | 400 | 100,000 |  | 0 |"
    )
    assert results.verdicts(rows, concurrency=4) == [
        "(a) 100k: stagewatch flow / floor = 1.27 (target <= 1.5): met",
        "(a) 100k: dlt / stagewatch flow = 2.71x (target >= 2.0x): met",
        "(c) 50x2k @30ms: flow / ideal = 1.19 (ideal 3.38 s, the floor's 2.00, a client that "
        "only pages 1.67; target <= 1.3): met; "
        "max concurrency 4 (limit 4), 0 429s: met",
    ]


# Burns `seconds` of its own CPU time (not wall time: a busy machine only makes it take longer).
_BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"


def test_run_measured_counts_the_cpu_of_the_process_and_of_its_children():
    child = _BURN.format(seconds=0.6)
    parent = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {child!r}], check=True)\n"
        + _BURN.format(seconds=0.3)
    )

    measured = run_measured([sys.executable, "-c", parent])

    # The parent burned 0.3 s itself (plus its start-up); the child's 0.6 s counts in the tree only.
    assert 0.3 - 0.1 <= measured.cpu_main < 0.3 + 0.5  # polled: it may miss the last 50 ms
    assert measured.cpu_tree >= measured.cpu_main + 0.6
