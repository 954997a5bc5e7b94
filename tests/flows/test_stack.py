"""`stagewatch stack up|down` as a user runs it: Prefect's server on its own PostgreSQL database, two
process workers, the fan-out deployments and the webhook receiver, against the simulator on
loopback. One run per deployment; the runs spread over both workers; one integration without
permission fails its own batch only; `down` leaves no process and (asked to) no database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from stagewatch import report
from stagewatch.simulator import World, serve_in_thread
from tests.flows.flowkit import wait_on_flow_run_events

KEY = "sk_stack_test_key_never_printed_31"
WEBHOOK_SECRET = "whsec_stack_test_never_printed_31"
STAGEWATCH = str(Path(sys.executable).parent / "stagewatch")
POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432"
RUNS_TIMEOUT = 240.0
WORKERS = {"stack-worker-1", "stack-worker-2"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _databases() -> set[str]:
    import asyncpg

    async def names() -> set[str]:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            return {row[0] for row in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()

    return asyncio.run(names())


def _drop(name: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def _store_runs(name: str) -> dict[tuple[str, str], int]:
    """(integration, status) -> runs, from the store's own table in PostgreSQL."""
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}") as conn:
        rows = conn.execute(
            "SELECT integration_id, status, count(*) FROM stagewatch.sync_runs GROUP BY 1, 2"
        ).fetchall()
    return {(integration, status): count for integration, status, count in rows}


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a container's init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [STAGEWATCH, "stack", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def world():
    world = World(
        seed=33,
        applications=30,
        jobs=3,
        api_key=KEY,
        scenarios=("normal", "normal", "no-applications", "permission-missing"),
    )
    base_url, stop = serve_in_thread(world)
    yield world, base_url
    stop()


@pytest.fixture
def stack(world, tmp_path):
    """A stack on a fresh state directory and its own PostgreSQL database, stopped afterwards
    (the test stops it itself; this only cleans up after a failure)."""
    _, base_url = world
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "KOMBO_"))}
    env |= {
        "KOMBO_API_KEY": KEY,
        "KOMBO_BASE_URL": base_url,
        "KOMBO_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("STAGEWATCH_DB", None)
    suffix = uuid.uuid4().hex[:12]
    info = {
        "state_dir": tmp_path / "state",
        "db": f"stagewatch_prefect_test_{suffix}",
        "store_db": f"stagewatch_store_test_{suffix}",
        "port": _free_port(),
        "webhook_port": _free_port(),
        "env": env,
    }
    yield info
    if (info["state_dir"] / "stack.json").exists():
        _cli(["down", "--state-dir", str(info["state_dir"]), "--drop-database"], env)
    _drop(info["store_db"])


def _flow_runs(api_url: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return [run for run in client.read_flow_runs(limit=200) if run.deployment_id]


def _wait_for(api_url: str, started: set) -> list:
    """Every run the deployments produced (the started ones and their batches), once final."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def ours() -> list:
        runs = [r for r in _flow_runs(api_url) if r.state and r.state.name != "Scheduled"]
        return [r for r in runs if r.id in started or r.parent_task_run_id]

    def final(runs: list) -> bool:
        return started <= {r.id for r in runs} and all(r.state.is_final() for r in runs)

    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            return wait_on_flow_run_events(ours, final, RUNS_TIMEOUT)
        except TimeoutError:
            raise AssertionError(
                f"runs not final within {RUNS_TIMEOUT:.0f} s: {_flow_runs(api_url)}"
            ) from None


def _artifacts(api_url: str, keys: list[str]) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )


def _trigger(api_url: str, ids: list[str], bad: str) -> dict:
    """One run of each deployment; the manual one in batches of one, with the bad integration."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    plan = {
        # These start beside the weekly full run, so a check could come before or after its
        # syncs: the idle check has a cycle of its own below (`_idle_hour`).
        "sync-fanout/hourly-incremental": {
            "integration_ids": ids,
            "mode": "incremental",
            "check_first": False,
        },
        "sync-fanout/weekly-full": {"integration_ids": ids, "mode": "full"},
        "sync-fanout/manual": {
            "integration_ids": [ids[0], bad],
            "batch_size": 1,
            "check_first": False,
        },
        "sync-batch/batch": {"integration_ids": ids[:1]},
    }
    with temporary_settings({PREFECT_API_URL: api_url}):
        return {
            name: run_deployment(name, parameters={"params": params}, timeout=0).id
            for name, params in plan.items()
        }


@pytest.mark.timeout(420)
def test_stack_up_runs_every_deployment_on_both_workers_and_down_stops_it(world, stack):
    sim, _ = world
    bad = sim.integration_for("permission-missing")
    ids = [i for i in sim.integrations if i != bad]
    state_dir, env = stack["state_dir"], stack["env"]
    up = _cli(
        [
            "up",
            *("--state-dir", str(state_dir), "--prefect-db", stack["db"]),
            *("--store-db", stack["store_db"]),
            *("--port", str(stack["port"]), "--webhook-port", str(stack["webhook_port"])),
            *("--worker-limit", "3", "--poll-seconds", "1", "-i", ",".join(ids)),
        ],
        env,
    )
    assert up.returncode == 0, up.stderr + up.stdout
    ui = f"http://127.0.0.1:{stack['port']}"
    assert f"Prefect UI: {ui}" in up.stdout
    assert {stack["db"], stack["store_db"]} <= _databases()
    api_url = f"{ui}/api"
    health = httpx.get(f"http://127.0.0.1:{stack['webhook_port']}/healthz", timeout=5)
    assert health.status_code == 200
    deployments = httpx.post(f"{api_url}/deployments/filter", json={"limit": 50}).json()
    assert sorted(d["name"] for d in deployments) == [
        "batch", "hourly-incremental", "manual", "sync-on-change", "weekly-full",
    ]  # fmt: skip

    started = _trigger(api_url, ids, bad)
    runs = _wait_for(api_url, set(started.values()))
    by_id = {run.id: run for run in runs}
    states = {name: by_id[run_id].state.name for name, run_id in started.items()}
    messages = {name: by_id[run_id].state.message for name, run_id in started.items()}
    assert states == {
        "sync-fanout/hourly-incremental": "Completed",
        "sync-fanout/weekly-full": "Completed",
        "sync-fanout/manual": "Failed",
        "sync-batch/batch": "Completed",
    }, messages
    manual = by_id[started["sync-fanout/manual"]]
    assert manual.state.message == "1 of 2 batches did not complete: batch-2-of-2 (Failed)"
    batches = sorted((r.name, r.state.name) for r in runs if r.name.startswith("batch-"))
    assert batches == [
        ("batch-1-of-1", "Completed"),  # hourly: every integration in one batch
        ("batch-1-of-1", "Completed"),  # weekly
        ("batch-1-of-2", "Completed"),  # manual: the integration beside the bad one
        ("batch-2-of-2", "Failed"),
    ]
    # 4 runs started at once, 3 slots per worker, and a fan-out holds its slot until its batches
    # end: both workers ran some.
    assert {run.labels.get("prefect.worker.name") for run in runs} == WORKERS

    limits = httpx.post(f"{api_url}/v2/concurrency_limits/filter", json={"limit": 200}).json()
    ours = {(lim["name"], lim["limit"]) for lim in limits if lim["name"].startswith("stagewatch-")}
    assert ours == {
        ("stagewatch-kombo-account", 8),
        *((f"stagewatch-integration-{report.slug(i)}", 1) for i in [*ids, bad]),
    }

    summaries = _artifacts(api_url, ["fanout-summary"])
    assert len(summaries) == 3
    manual_summary = next(a for a in summaries if a.flow_run_id == manual.id)
    assert "| 2 | 1 | batch\\-2\\-of\\-2 |" in manual_summary.data
    assert "INTEGRATION\\.PERMISSION\\_MISSING" in manual_summary.data
    changes = _artifacts(api_url, [report.artifact_key(i) for i in ids])
    assert {a.key for a in changes} == {report.artifact_key(i) for i in ids}
    assert {a.flow_run_id for a in changes} <= {
        r.id for r in runs if r.name.startswith("batch")
    } | {started["sync-batch/batch"]}

    normal, other, unsupported = ids
    # ids[0]: hourly, weekly, manual and the batch run; the others: hourly and weekly.
    assert _store_runs(stack["store_db"]) == {
        (normal, "succeeded"): 4,
        (other, "succeeded"): 2,
        (unsupported, "unsupported"): 2,
        (bad, "failed"): 1,
    }

    _idle_hour(api_url, sim, stack["store_db"], ids)

    recorded = json.loads((state_dir / "stack.json").read_text())["processes"]
    assert [p["name"] for p in recorded] == ["server", "worker-1", "worker-2", "webhooks"]
    down = _cli(["down", "--state-dir", str(state_dir), "--drop-database"], env)
    assert down.returncode == 0, down.stderr
    # Under heavy load Prefect's workers may outlast SIGTERM's 45 s and be killed: still stopped.
    assert down.stdout.strip().split(" (killed")[0] == "stopped 4 processes"
    assert [p["name"] for p in recorded if _running(p["pid"])] == []
    assert not (state_dir / "stack.json").exists()
    assert stack["db"] not in _databases()
    assert stack["store_db"] in _databases()  # the history outlives the stack
    for log in (state_dir / "logs").iterdir():
        text = log.read_text()
        assert KEY not in text and WEBHOOK_SECRET not in text, log


def _pending_application(store_db: str, integration_id: str) -> str:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{store_db}") as conn:
        return conn.execute(
            "SELECT application_id FROM stagewatch.applications WHERE integration_id = %s "
            "AND outcome = 'PENDING' ORDER BY application_id LIMIT 1",
            (integration_id,),
        ).fetchone()[0]


def _idle_hour(api_url: str, sim: World, store_db: str, ids: list[str]) -> None:
    """The next hour: one integration changed, one idle, one whose last run was unsupported. Only
    the idle one is checked without a run; the others go on to a batch."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    normal, other, unsupported = ids
    before = _store_runs(store_db)
    sim.integration(normal).decline(_pending_application(store_db, normal))
    with temporary_settings({PREFECT_API_URL: api_url}):
        started = run_deployment(
            "sync-fanout/hourly-incremental", parameters={"params": {"integration_ids": ids}},
            timeout=0,
        ).id  # fmt: skip
    hourly = next(r for r in _wait_for(api_url, {started}) if r.id == started)
    assert (hourly.state.name, hourly.state.message) == (
        "Completed",
        "1 of 3 idle (checked, no run); 1 batch completed",
    )
    after = _store_runs(store_db)
    new_runs = {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key)}
    assert new_runs == {(normal, "succeeded"): 1, (unsupported, "unsupported"): 1}
    summary = next(a for a in _artifacts(api_url, ["fanout-summary"]) if a.flow_run_id == started)
    assert summary.data.startswith(
        "3 integrations: 1 idle (checked, nothing listed after their watermark, no run), "
        "1 changed, 0 failed the check, 1 synced without a check."
    )
    assert f"| {report.escape_md(unsupported)} | no watermark yet (not checked) |" in summary.data
    idle_line = next(line for line in summary.data.splitlines() if line.startswith("Idle,"))
    assert idle_line.endswith(f": {report.escape_md(other)}")


# -- the parts, without a stack ------------------------------------------------------------------


def test_batches_keep_order_and_cover_every_id():
    from flows.fanout import batches

    assert batches(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert batches(["a"], 100) == [["a"]]


def test_batch_parameters_pass_only_the_options_given():
    from flows.fanout import FanoutParams, batch_parameters

    params = FanoutParams(
        integration_ids="x:1, y:2", mode="full", since=None, batch_size=1, max_concurrency=3
    )
    assert batch_parameters(params, ["y:2"]) == {
        "params": {"mode": "full", "since": None, "integration_ids": ["y:2"], "max_concurrency": 3}
    }


def test_fanout_params_reject_a_bad_id_and_accept_none():
    from pydantic import ValidationError

    from flows.fanout import FanoutParams

    assert FanoutParams().integration_ids == []  # the run reads the Prefect variable
    with pytest.raises(ValidationError, match=r"integration_ids\.0"):
        FanoutParams(integration_ids=["bad id/with slash"])


def test_integration_limit_names_are_valid_prefect_names_and_distinct():
    from flows.fanout import integration_limit

    names = {integration_limit(i) for i in ["greenhouse:AbC", "greenhouse:abc", "lever:x/y"]}
    assert len(names) == 3
    assert all(not set("/%&<>") & set(name) for name in names)
    assert (
        integration_limit("greenhouse:AbC")
        == "stagewatch-integration-greenhouse-abc-"
        + (report.slug("greenhouse:AbC").rsplit("-", 1)[1])
    )


def test_fanout_state_and_markdown_name_the_batches_that_failed():
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Completed, Failed

    from flows.fanout import fanout_markdown, fanout_state

    def run(name, state, worker):
        return FlowRun(
            name=name, flow_id=uuid.uuid4(), state=state, labels={"prefect.worker.name": worker}
        )

    runs = [
        run("batch-1-of-2", Completed(message="2 synced"), "w1"),
        run("batch-2-of-2", Failed(message="1 of 1 failed: a|b"), "w2"),
    ]
    state = fanout_state(runs)
    assert (state.type.value, state.message) == (
        "FAILED",
        "1 of 2 batches did not complete: batch-2-of-2 (Failed)",
    )
    assert fanout_state(runs[:1]).message == "1 batch completed"
    assert fanout_markdown(runs, [2, 1]).splitlines()[2:] == [
        "| 1 | 2 | batch\\-1\\-of\\-2 | w1 | Completed | 2 synced |",
        "| 2 | 1 | batch\\-2\\-of\\-2 | w2 | Failed | 1 of 1 failed\\: a\\|b |",
    ]


def test_stack_config_refuses_bad_names_and_urls(tmp_path):
    from deployments.stack import StackConfig
    from stagewatch.errors import StagewatchError

    with pytest.raises(StagewatchError, match="'bad-name' must be lower-case"):
        StackConfig(state_dir=tmp_path, prefect_db="bad-name")
    with pytest.raises(StagewatchError, match="postgresql\\+asyncpg://"):
        StackConfig(state_dir=tmp_path, postgres="postgresql://postgres@127.0.0.1")
    config = StackConfig(state_dir=tmp_path, postgres="postgresql+asyncpg://u:secret@h:1/")
    assert config.database_url == "postgresql+asyncpg://u:secret@h:1/stagewatch_prefect"
    assert config.store_url == "postgresql://u:secret@h:1/stagewatch"
    assert StackConfig(state_dir=tmp_path, store="x.db").store_url == "x.db"


def test_unreachable_postgres_is_one_line_without_the_password(tmp_path):
    from deployments.stack import StackConfig, ensure_database
    from stagewatch.errors import StagewatchError

    port = _free_port()  # nothing listens there
    config = StackConfig(
        state_dir=tmp_path, postgres=f"postgresql+asyncpg://u:hunter2@127.0.0.1:{port}"
    )
    with pytest.raises(StagewatchError) as caught:
        ensure_database(config)
    message = str(caught.value)
    assert message.startswith(
        f"cannot prepare PostgreSQL database 'stagewatch_prefect' at "
        f"postgresql+asyncpg://u:***@127.0.0.1:{port}: "
    )
    assert "hunter2" not in message and "\n" not in message


def test_stop_process_ends_the_whole_group(tmp_path):
    import psutil

    from deployments.stack import _spawn, stop_process

    # The script signals once its child runs, so the test waits on that, not on a polling loop.
    script = (
        "import os, signal, subprocess, time; subprocess.Popen(['sleep', '60']); "
        f"os.kill({os.getpid()}, signal.SIGUSR1); time.sleep(60)"
    )
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        started = _spawn("sleeper", [sys.executable, "-c", script], dict(os.environ), tmp_path)
        assert signal.sigtimedwait({signal.SIGUSR1}, 10) is not None, "the child never started"
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    members = _group(started.pid)
    assert len(members) == 2  # python and its sleep child
    assert stop_process(started, timeout=5) is False  # SIGTERM was enough
    # Signals are delivered, not awaited: wait for both to be gone.
    processes = []
    for pid in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            processes.append(psutil.Process(pid))
    psutil.wait_procs(processes, timeout=5)
    assert [pid for pid in members if _running(pid)] == []


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry.name))
    return sorted(pids)
