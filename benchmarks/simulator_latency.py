"""How the simulator holds up at scale: build time, page latency in-process and over HTTP, and the
number of requests a full `KomboClient` listing costs.

    .venv/bin/python -m benchmarks.simulator_latency [--applications 1000000] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time

import httpx

from stagewatch.kombo.client import KomboClient
from stagewatch.kombo.filters import MAX_PAGE_SIZE
from stagewatch.simulator import Simulator, SimulatorTransport, World, serve_in_thread

API_KEY = "sk_bench_simulator"


def _summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return f"median {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


def _cursor_of(body: bytes) -> str | None:
    return json.loads(body)["data"]["next"]


def in_process_pages(world: World, pages: int) -> list[float]:
    """Handler time alone: `Simulator.handle` for consecutive pages of 250."""
    simulator = Simulator(world)
    headers = {
        "authorization": f"Bearer {API_KEY}",
        "x-integration-id": world.normal_integration_id,
    }
    timings, cursor = [], None
    for _ in range(pages):
        query = [("page_size", str(MAX_PAGE_SIZE))] + ([("cursor", cursor)] if cursor else [])
        started = time.perf_counter()
        answer = simulator.handle("GET", "/v1/ats/applications", query, headers)
        timings.append(time.perf_counter() - started)
        assert answer.status == 200, answer.body[:200]
        cursor = _cursor_of(answer.body)
    return timings


def filtered_first_pages(world: World, repeats: int = 20) -> dict[str, list[float]]:
    """Handler time of a first page under filters that take other paths than the plain scan."""
    simulator = Simulator(world)
    integ = world.integration(world.normal_integration_id)
    headers = {"authorization": f"Bearer {API_KEY}", "x-integration-id": integ.id}
    since = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(world.now_ms / 1000 - 86_400))
    filters = {
        "updated_after (last day)": [("updated_after", since)],
        "job_ids (one job)": [("job_ids", integ.jobs[0].id)],
        "outcomes=HIRED": [("outcomes", "HIRED")],
        "remote_created_after + outcomes": [
            ("remote_created_after", since),
            ("outcomes", "PENDING,DECLINED"),
        ],
    }
    timings: dict[str, list[float]] = {}
    for name, query in filters.items():
        for _ in range(repeats):
            started = time.perf_counter()
            answer = simulator.handle(
                "GET", "/v1/ats/applications", [("page_size", "250"), *query], headers
            )
            timings.setdefault(name, []).append(time.perf_counter() - started)
            assert answer.status == 200, answer.body[:200]
    return timings


def http_pages(world: World, pages: int) -> list[float]:
    """Client-observed time per page over loopback HTTP (uvicorn in a thread)."""
    base_url, stop = serve_in_thread(world)
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "X-Integration-Id": world.normal_integration_id,
    }
    timings, cursor = [], None
    try:
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
            for _ in range(pages):
                params = {"page_size": MAX_PAGE_SIZE} | ({"cursor": cursor} if cursor else {})
                started = time.perf_counter()
                response = http.get("/ats/applications", params=params)
                timings.append(time.perf_counter() - started)
                response.raise_for_status()
                cursor = _cursor_of(response.content)
    finally:
        stop()
    return timings


def full_listing(world: World) -> tuple[int, int, float]:
    """(records, requests, seconds) for the real client listing every application in-process."""
    started = time.perf_counter()
    records = 0
    with KomboClient(
        API_KEY, world.normal_integration_id, transport=SimulatorTransport(world)
    ) as client:
        for page in client.iter_application_pages(include_deleted=True):
            records += len(page.records)
        requests = client.stats.requests
    return records, requests, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--applications", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2_000)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument(
        "--no-full-listing", action="store_true", help="skip the client's full listing"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    world = World(
        seed=1,
        applications=args.applications,
        jobs=args.jobs,
        api_key=API_KEY,
        scenarios=("normal",),
    )
    build = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"world: {args.applications:,} applications on {args.jobs:,} jobs")
    print(f"build: {build:.2f} s, peak RSS {rss_mb:.0f} MB")
    print(
        f"page of {MAX_PAGE_SIZE}, in-process handler: {_summary(in_process_pages(world, args.pages))}"
    )
    print(
        f"page of {MAX_PAGE_SIZE}, over HTTP (client-observed): {_summary(http_pages(world, args.pages))}"
    )
    for name, timings in filtered_first_pages(world).items():
        print(f"first page, {name}: {_summary(timings)}")
    if not args.no_full_listing:
        records, requests, seconds = full_listing(world)
        expected = math.ceil(records / MAX_PAGE_SIZE)
        print(
            f"KomboClient full listing: {records:,} records, {requests:,} requests "
            f"(ceil({records:,}/{MAX_PAGE_SIZE}) = {expected:,}), {seconds:.1f} s"
        )
    started = time.perf_counter()
    changes = world.advance(hours=24)
    print(f"advance 24 h: {changes:,} changes in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
