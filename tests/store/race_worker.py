"""One process of the race test: told when to start and when to commit, it syncs one integration.

    python -m tests.store.race_worker URL WAIT_SECONDS

It talks to the test by lines: it prints `ready` once connected and reads `go`; prints `trying`
before it asks for the lock; once it holds it, prints `holding` and reads `commit` (the test sends
it when the other process has tried), so the other's attempt falls inside the holder's lease
without either sleeping. Its last line is `committed <run id> <events>` or `locked <the
LockedError's text>`.
"""

from __future__ import annotations

import sys

from stagewatch.store import LockedError, Store
from tests.builders import application, at, job

APPLICATIONS = 300


def say(line: str) -> None:
    print(line, flush=True)


def main(url: str, wait: float) -> None:
    with Store(url) as store:
        say("ready")  # under load one process may take seconds to import and connect
        assert sys.stdin.readline().strip() == "go"
        say("trying")
        try:
            run = store.begin_run("race:integration", "full", started_at=at(0), wait=wait)
        except LockedError as exc:
            say(f"locked {exc}")
            return
        store.stage_jobs(run.id, [job()])
        say("holding")
        assert sys.stdin.readline().strip() == "commit"
        store.stage_applications(run.id, [application(f"app-{n}") for n in range(APPLICATIONS)])
        counts = store.commit_run(run.id, observed_at=at(0))
        say(f"committed {run.id} {sum(counts.values())}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
