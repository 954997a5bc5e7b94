"""`stagewatch import` of the simulator's whole backlog (500 rows), then the same file again.

    python -m benchmarks.import_rows

The command runs as a user runs it (a subprocess) against the simulator on loopback; it prints the
seconds per run, the rows per second and the load average, for docs/performance.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from stagewatch.simulator import World, serve_in_thread

KEY = "sk_bench_import"


def main() -> None:
    world = World(seed=1, applications=10_000, jobs=50, api_key=KEY, scenarios=("normal",))
    base_url, stop = serve_in_thread(world)
    integration_id = world.normal_integration_id
    stagewatch = str(Path(sys.executable).parent / "stagewatch")
    env = {**os.environ, "KOMBO_API_KEY": KEY}
    try:
        answer = httpx.get(f"{base_url}/_sim/untracked", params={"integration_id": integration_id})
        rows = [row["application_id"] for row in answer.json()["untracked"]]
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "rows.csv"
            path.write_text("application_id\n" + "".join(f"{r}\n" for r in rows))
            args = [stagewatch, "import", "-i", integration_id, str(path), "--base-url", base_url,
                    "--db", str(Path(scratch) / "sw.db")]  # fmt: skip
            for label in ("first run", "re-run"):
                started = time.perf_counter()
                done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
                seconds = time.perf_counter() - started
                print(
                    f"{label}: {len(rows)} rows in {seconds:.2f} s ({len(rows) / seconds:.0f} rows/s)"
                    f"; {done.stdout.splitlines()[0]}; load average {os.getloadavg()[0]:.1f}"
                )
    finally:
        stop()


if __name__ == "__main__":
    main()
