"""`stagewatch migrate-store` carries the import ledger over, so a re-run after moving to
PostgreSQL still skips what was imported."""

from __future__ import annotations

from typer.testing import CliRunner

from stagewatch.cli import app
from stagewatch.store import Store
from tests.test_store_fixtures import db_rows

KEY = '{"greenhouse":{"application_id":"900000001","id_type":"application_id"}}'


def test_the_ledger_goes_over_with_the_store(tmp_path, pg_url):
    sqlite = tmp_path / "sw.db"
    with Store(sqlite) as store:
        ledger = store.import_ledger()
        ledger.begin("greenhouse:abc", KEY, "greenhouse", None)
        ledger.finish("greenhouse:abc", KEY, "imported", application_id="A" * 24)
    result = CliRunner().invoke(app, ["migrate-store", "--from", str(sqlite), "--to", pg_url])
    assert result.exit_code == 0, result.output
    assert "imports 1" in " ".join(result.output.split())
    query = "SELECT * FROM imports ORDER BY import_key"
    assert db_rows(pg_url, query) == db_rows(sqlite, query)
    with Store(pg_url) as store:
        (entry,) = store.import_ledger().entries("greenhouse:abc").values()
    assert (entry["status"], entry["application_id"], entry["attempts"]) == ("imported", "A" * 24, 1)
