"""One process of the race test: wait for the start signal, then sync one integration.

    python -m tests.store.race_worker URL START_FILE WAIT_SECONDS

Prints one line: `committed <run id> <events>` or `locked <the LockedError's text>`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from stagewatch.store import LockedError, Store
from tests.test_store_fixtures import application, at, job

APPLICATIONS = 300
# How long the winner holds the lease while it "lists": the loser's attempt falls inside it.
LISTING_SECONDS = 1.0


def main(url: str, start_file: str, wait: float) -> None:
    with Store(url) as store:
        # Ready to race: under load one process may take seconds to import and connect.
        Path(f"{start_file}.ready.{os.getpid()}").touch()
        deadline = time.monotonic() + 30
        while not Path(start_file).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            run = store.begin_run("race:integration", "full", started_at=at(0), wait=wait)
        except LockedError as exc:
            print(f"locked {exc}", flush=True)
            return
        store.stage_jobs(run.id, [job()])
        time.sleep(LISTING_SECONDS)
        store.stage_applications(run.id, [application(f"app-{n}") for n in range(APPLICATIONS)])
        counts = store.commit_run(run.id, observed_at=at(0))
        print(f"committed {run.id} {sum(counts.values())}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
