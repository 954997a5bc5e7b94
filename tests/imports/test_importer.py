"""The importer over a file of rows: one result per row, partial failures, the ledger, idempotent
re-runs, and the rows whose outcome is unknown."""

from __future__ import annotations

import json

import pytest

from stagewatch.importer import Importer, InputRow, RowResult, read_rows, write_results
from stagewatch.simulator import FaultConfig, Simulator
from stagewatch.store import Store
from tests.imports.conftest import body_validator, client_for, import_requests, write

UNKNOWN_COLUMN = "unknown column(s) placement_id for greenhouse; expected ['application_id']"


def ids(remote_id: str) -> dict:
    return {"greenhouse": {"id_type": "application_id", "application_id": remote_id}}


def run(world, db, rows, simulator=None, **options):
    integration_id = world.normal_integration_id
    client, _, simulator, _ = client_for(world, integration_id, simulator)
    with client, Store(db) as store:
        importer = Importer(integration_id, "greenhouse", client, store.import_ledger(), **options)
        return importer.run(rows), simulator


def ledger(db, integration_id):
    with Store(db) as store:
        entries = store.import_ledger().entries(integration_id)
    return {
        json.loads(key)["greenhouse"]["application_id"]: (e["status"], e["attempts"])
        for key, e in entries.items()
    }


@pytest.fixture
def mixed_file(world, tmp_path):
    """Two untracked applications, one tracked already, one the ATS does not know, a row without
    ids, a row that is not JSON, and a repeat."""
    backlog = world.integration(world.normal_integration_id).backlog
    lines = [
        json.dumps({"application_id": backlog[0].remote_id}),
        json.dumps({"application_id": "100002"}),
        json.dumps({"application_id": "31337"}),
        json.dumps({"placement_id": "9"}),
        "{not json",
        "",
        json.dumps({"application_id": int(backlog[1].remote_id)}),
        json.dumps({"application_id": backlog[0].remote_id}),
    ]
    return write(tmp_path / "rows.jsonl", "\n".join(lines) + "\n"), backlog


def test_a_bad_row_never_stops_the_others(world, db_url, mixed_file):
    path, backlog = mixed_file
    results, simulator = run(world, db_url, read_rows(path))
    by_line = [(r.line, r.status, r.ids, r.message) for r in results]
    first, second = backlog[0].remote_id, backlog[1].remote_id
    assert by_line == [
        (1, "imported", ids(first), None),
        (2, "already_tracked", ids("100002"), "Kombo already tracks this application."),
        (
            3,
            "rejected",
            ids("31337"),
            "No application in the greenhouse account matches {'application_id': '31337'}.",
        ),
        (4, "invalid", None, UNKNOWN_COLUMN),
        (5, "invalid", None, "not JSON (Expecting property name enclosed in double quotes)"),
        (7, "imported", ids(second), None),
        (8, "skipped", ids(first), "the same ids as line 1"),
    ]
    assert results[3 - 1].code == "PLATFORM.INPUT_INVALID"
    assert import_requests(simulator) == 4
    assert ledger(db_url, world.normal_integration_id) == {
        first: ("imported", 1),
        second: ("imported", 1),
        "100002": ("already_tracked", 1),
        "31337": ("rejected", 1),
    }


def test_re_running_the_same_file_sends_only_what_kombo_refused(world, db_url, mixed_file):
    path, _ = mixed_file
    db = db_url
    first_run, _ = run(world, db, read_rows(path))
    before = ledger(db, world.normal_integration_id)

    results, simulator = run(world, db, read_rows(path))

    assert import_requests(simulator) == 1  # the rejected row only: refusals did nothing
    assert [(r.line, r.status) for r in results] == [
        (1, "skipped"),
        (2, "skipped"),
        (3, "rejected"),
        (4, "invalid"),
        (5, "invalid"),
        (7, "skipped"),
        (8, "skipped"),
    ]
    assert results[0].message.startswith("imported on 20")
    assert results[0].message.endswith(f"as {first_run[0].application_id}; not sent again")
    after = ledger(db, world.normal_integration_id)
    assert after == {**before, "31337": ("rejected", 2)}


def test_an_unknown_outcome_is_recorded_and_not_sent_again_unless_asked(world, tmp_path, db_url):
    backlog = world.integration(world.normal_integration_id).backlog
    path = write(tmp_path / "rows.csv", f"application_id\n{backlog[0].remote_id}\n"
                                        f"{backlog[1].remote_id}\n")  # fmt: skip
    db = db_url
    lost = Simulator(world, FaultConfig(rate=1.0, kinds=("timeout",)))
    results, simulator = run(world, db, read_rows(path), lost)
    assert [r.status for r in results] == ["unknown", "unknown"]
    assert import_requests(simulator) == 2  # one each: never re-sent blindly
    assert results[0].message.startswith(
        "ReadTimeout on POST /ats/import-tracked-application: the connection failed before Kombo "
        "answered: the request went out but no answer came back, so Kombo may have imported it"
    )

    again, simulator = run(world, db, read_rows(path))
    assert [r.status for r in again] == ["unknown", "unknown"] and import_requests(simulator) == 0
    assert "Re-run with --retry-unknown" in again[0].message

    asked, simulator = run(world, db, read_rows(path), retry_unknown=True)
    assert [r.status for r in asked] == ["already_tracked", "already_tracked"]
    assert import_requests(simulator) == 2
    assert ledger(db, world.normal_integration_id) == {
        backlog[0].remote_id: ("already_tracked", 2),
        backlog[1].remote_id: ("already_tracked", 2),
    }


def test_a_process_that_died_mid_request_leaves_the_row_unknown(world, tmp_path, db_url):
    """`begin` is committed before the request goes out: a row left `sending` may have been
    imported, so a re-run does not send it."""
    remote_id = world.integration(world.normal_integration_id).backlog[0].remote_id
    db = db_url
    with Store(db) as store:
        key = json.dumps(ids(remote_id), sort_keys=True, separators=(",", ":"))
        store.import_ledger().begin(world.normal_integration_id, key, "greenhouse", None)
    path = write(tmp_path / "rows.csv", f"application_id\n{remote_id}\n")
    results, simulator = run(world, db, read_rows(path))
    assert [r.status for r in results] == ["unknown"] and import_requests(simulator) == 0


def test_an_answer_about_the_integration_stops_the_batch(world, tmp_path):
    backlog = world.integration(world.normal_integration_id).backlog
    rows = "".join(f"{u.remote_id}\n" for u in backlog[:3])
    path = write(tmp_path / "rows.csv", "application_id\n" + rows)
    integration_id = world.normal_integration_id
    client, _, simulator, _ = client_for(world, integration_id)
    client_key_is_wrong = client.__class__(
        "sk_wrong", integration_id, base_url=str(client.base_url),
        transport=client._shared.http._transport,
    )  # fmt: skip
    with client_key_is_wrong as bad, Store(tmp_path / "sw.db") as store:
        results = Importer(integration_id, "greenhouse", bad, store.import_ledger()).run(
            read_rows(path)
        )
    assert [r.status for r in results] == ["failed", "not_sent", "not_sent"]
    assert (results[0].ids, results[0].code) == (ids(backlog[0].remote_id),
                                                 "PLATFORM.AUTHENTICATION_INVALID")  # fmt: skip
    assert results[0].message.startswith("PLATFORM.AUTHENTICATION_INVALID (HTTP 401)")
    assert results[1].message == f"not sent: {results[0].message}"
    assert import_requests(simulator) == 1
    assert "sk_wrong" not in json.dumps([r.model_dump() for r in results])


def test_a_dry_run_validates_every_row_and_sends_nothing(world, tmp_path, mixed_file):
    path, backlog = mixed_file
    results = Importer(world.normal_integration_id, "greenhouse", None, None).run(read_rows(path))
    assert [(r.line, r.status) for r in results] == [
        (1, "would_send"),
        (2, "would_send"),
        (3, "would_send"),
        (4, "invalid"),
        (5, "invalid"),
        (7, "would_send"),
        (8, "skipped"),
    ]
    assert results[0].body == {"tracked_at": None, **ids(backlog[0].remote_id)}
    assert world.integration(world.normal_integration_id).untracked() == backlog


def test_results_files_hold_one_line_per_row(tmp_path):
    results = [
        RowResult(line=2, status="imported", ids=ids("9"), application_id="A" * 24),
        RowResult(line=3, status="rejected", ids=ids("1"), code="X.Y", message='say "no", twice'),
    ]
    write_results(tmp_path / "r.jsonl", results)
    write_results(tmp_path / "r.csv", results)
    assert (tmp_path / "r.jsonl").read_text().splitlines() == [
        '{"line":2,"status":"imported","ids":{"greenhouse":{"id_type":"application_id",'
        '"application_id":"9"}},"application_id":"AAAAAAAAAAAAAAAAAAAAAAAA"}',
        '{"line":3,"status":"rejected","ids":{"greenhouse":{"id_type":"application_id",'
        '"application_id":"1"}},"code":"X.Y","message":"say \\"no\\", twice"}',
    ]
    assert (tmp_path / "r.csv").read_text().splitlines() == [
        "line,status,ids,application_id,code,message",
        '2,imported,"{""greenhouse"": {""application_id"": ""9"", ""id_type"": '
        '""application_id""}}",AAAAAAAAAAAAAAAAAAAAAAAA,,',
        '3,rejected,"{""greenhouse"": {""application_id"": ""1"", ""id_type"": '
        '""application_id""}}",,X.Y,"say ""no"", twice"',
    ]
    assert not list(tmp_path.glob("*.partial"))


def test_the_rate_limit_is_waited_out_as_for_listing_and_every_body_meets_the_spec(
    world, tmp_path
):
    """Two requests a minute: the client waits `ratelimit-reset` (on a clock its sleeps move) and
    every row is imported exactly once."""
    now = [1_000.0]
    simulator = Simulator(world, rate_limit=2, rate_window_seconds=60, clock=lambda: now[0])
    backlog = world.integration(world.normal_integration_id).backlog[:5]
    rows = [InputRow(n, {"application_id": u.remote_id}) for n, u in enumerate(backlog, 1)]
    def tick(seconds: float) -> None:
        now[0] += seconds

    client, transport, _, sleeps = client_for(
        world, world.normal_integration_id, simulator, then=tick
    )
    with client, Store(tmp_path / "sw.db") as store:
        results = Importer(
            world.normal_integration_id, "greenhouse", client, store.import_ledger()
        ).run(rows)
    assert [r.status for r in results] == ["imported"] * 5
    assert simulator.stats()["rate_limited"] == len(sleeps) == 2
    assert sleeps == [20.0, 60.0]  # to the end of each window
    bodies = [body for method, _, body in transport.sent if method == "POST"]
    assert len(bodies) == 7
    validator = body_validator()
    for body in bodies:
        validator.validate(body)
