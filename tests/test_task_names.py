"""Task run names say which integration they belong to."""

from stagewatch.report import SyncOutcome
from tasks.names import run_name

ID = "greenhouse:DBTuKqV8wLoSUHphiWVrp28x"


def test_run_names_carry_the_short_integration_id():
    outcome = SyncOutcome(integration_id=ID, status="synced", mode="full")
    assert run_name("fetch-jobs", "integration_id")({"integration_id": ID}) == (
        "fetch-jobs[greenhouse:DBTu…]"
    )
    assert run_name("publish", "outcome")({"outcome": outcome}) == "publish[greenhouse:DBTu…]"
    runs = [{"integration_id": ID, "id": 3}]
    assert run_name("publish-late", "runs")({"runs": runs}) == "publish-late[greenhouse:DBTu…]"
