"""Drill 6's final sweep: after every other drill, read back everything Prefect kept (flow and task
run parameters, artifacts, logs, events, variables, blocks) through its API, and every file the drills
and the Prefect server wrote, looking for the API key."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.reliability.harness import CaseResult, SecretScanner

PAGE = 200
ENDPOINTS = ("flow_runs", "task_runs", "artifacts", "logs", "variables", "block_documents")


def _read_all(client: httpx.Client, endpoint: str, scanner: SecretScanner) -> int:
    """Every object of one Prefect collection, page by page; returns how many."""
    offset = 0
    while True:
        response = client.post(f"/{endpoint}/filter", json={"limit": PAGE, "offset": offset})
        response.raise_for_status()
        items = response.json()
        scanner.text(f"prefect api {endpoint} from {offset}", response.content)
        offset += len(items)
        if len(items) < PAGE:
            return offset


def _read_events(client: httpx.Client, since: str, scanner: SecretScanner) -> int:
    body = {"limit": 50, "filter": {"occurred": {"since": since}}}
    response = client.post("/events/filter", json=body)
    count = 0
    while True:
        response.raise_for_status()
        page = response.json()
        scanner.text(f"prefect api events from {count}", response.content)
        count += len(page["events"])
        if not page.get("next_page"):
            return count
        response = client.get(page["next_page"])


def sweep(api_url: str, since: str, paths: list[Path], scanner: SecretScanner) -> list[CaseResult]:
    """One case per place looked at; a case fails when the key is found there."""
    cases = []
    with httpx.Client(base_url=api_url, timeout=60) as client:
        places = [
            (endpoint, lambda e=endpoint: _read_all(client, e, scanner)) for endpoint in ENDPOINTS
        ]
        places.append(("events", lambda: _read_events(client, since, scanner)))
        for name, read in places:
            hits = scanner.hits
            count = read()
            case = CaseResult(f"Prefect's {name}: {count} read back", info={"objects": count})
            case.check(scanner.hits == hits, f"the key is in Prefect's {name}")
            cases.append(case)
    for path in paths:
        hits = scanner.hits
        scanner.path(path)
        files = sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 1
        case = CaseResult(f"{files} files under {path.name}/", info={"files": files})
        case.check(scanner.hits == hits, f"the key is in files under {path}")
        cases.append(case)
    return cases
