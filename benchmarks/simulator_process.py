"""The simulator as a separate process on loopback (`stagewatch simulator`), as a contender sees it.

The harness reads the simulator's own counters (`/_sim/stats`) around each run, so the number of
requests, the highest concurrency and the 429s are what the server saw, not what a client claims.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.contenders import STAGEWATCH

READY_TIMEOUT_SECONDS = 120.0
_INTEGRATION = re.compile(r"^integration (\S+) (\S+)$")
_SERVING = re.compile(r"serving Kombo's API at (\S+)")


class SimulatorProcess:
    """`stagewatch simulator` in a child process; a context manager that always stops it."""

    def __init__(
        self,
        *,
        api_key: str,
        applications: int,
        jobs: int,
        normal_integrations: int = 1,
        latency_ms: float = 0,
        rate_limit: int | None = None,
        seed: int = 1,
        log_path: Path,
    ) -> None:
        self.args = [
            STAGEWATCH, "simulator", "--port", "0", "--seed", str(seed),
            "--applications", str(applications), "--jobs", str(jobs),
            "--normal-integrations", str(normal_integrations), "--latency-ms", str(latency_ms),
        ]  # fmt: skip
        if rate_limit is not None:
            self.args += ["--rate-limit", str(rate_limit)]
        self.api_key = api_key
        self.log_path = log_path
        self.integrations: dict[str, str] = {}
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._control: httpx.Client | None = None

    def __enter__(self) -> SimulatorProcess:
        env = {**os.environ, "KOMBO_API_KEY": self.api_key}
        self._log = self.log_path.open("w")
        self._proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        root = self.base_url.removesuffix("/v1")
        self._control = httpx.Client(base_url=root, timeout=600.0)
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        for line in self._proc.stdout:
            self._log.write(line)
            line = line.strip()
            if match := _INTEGRATION.match(line):
                self.integrations[match.group(1)] = match.group(2)
            elif match := _SERVING.search(line):
                self.base_url = match.group(1)
                return
            if time.monotonic() > deadline:
                break
        self._log.flush()
        raise RuntimeError(
            f"the simulator did not start ({' '.join(self.args)}); see {self.log_path}"
        )

    def __exit__(self, *exc_info: object) -> None:
        if self._control is not None:
            self._control.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                rest, _ = self._proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                rest, _ = self._proc.communicate()
            self._log.write(rest or "")
        self._log.close()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def normal_integrations(self) -> list[str]:
        return [iid for iid, scenario in self.integrations.items() if scenario == "normal"]

    def _post(self, path: str, **params: object) -> dict:
        assert self._control is not None
        response = self._control.post(path, params=params)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        assert self._control is not None
        response = self._control.get("/_sim/stats")
        response.raise_for_status()
        return response.json()

    def reset_stats(self) -> None:
        self._post("/_sim/stats/reset")

    def advance(self, hours: float) -> dict:
        """Move simulated time; returns `{"now": ..., "changes": ...}`."""
        return self._post("/_sim/advance", hours=hours)

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system


def count_changed(base_url: str, api_key: str, integration_id: str, since: str) -> int:
    """How many applications the listing returns with `updated_after=since` (a harness check)."""
    headers = {"Authorization": f"Bearer {api_key}", "X-Integration-Id": integration_id}
    params: dict[str, str] = {"page_size": "250", "include_deleted": "true", "updated_after": since}
    total = 0
    with httpx.Client(base_url=base_url, headers=headers, timeout=600.0) as http:
        cursor = None
        while True:
            page_params = params if cursor is None else {**params, "cursor": cursor}
            page = http.get("/ats/applications", params=page_params)
            page.raise_for_status()
            data = page.json()["data"]
            total += len(data["results"])
            cursor = data["next"]
            if not cursor:
                return total
