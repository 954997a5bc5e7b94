"""The run form's parameters: limits said in words, a bad id answered with a sentence."""

import pytest
from pydantic import ValidationError

from flows.sync import SyncIntegrationParams, SyncManyParams


def test_a_bad_integration_id_gets_a_sentence_not_a_regex():
    with pytest.raises(ValidationError) as raised:
        SyncManyParams(integration_ids=["greenhouse:HWUTwvyx2wLoSUHphiWVrp28", "green house"])
    (error,) = raised.value.errors()
    assert error["loc"] == ("integration_ids", 1)
    assert error["msg"] == (
        "Value error, 'green house' is not an integration id: an integration id looks like "
        "tool:24 characters, e.g. greenhouse:HWUTwvyx2wLoSUHphiWVrp28"
    )
    schema = SyncManyParams.model_json_schema()
    assert "pattern" not in schema["properties"]["integration_ids"]["items"]


def test_descriptions_state_the_limits():
    fields = SyncManyParams.model_json_schema()["properties"]
    assert (
        fields["page_size"]["description"]
        == "Records per Kombo request, 1 to 250 (Kombo's maximum)."
    )
    assert (fields["page_size"]["minimum"], fields["page_size"]["maximum"]) == (1, 250)
    assert "1 to 16" in fields["max_concurrency"]["description"]
    assert fields["overlap_minutes"]["description"].startswith("0 to 1440.")
    assert "1 to 500" in fields["integration_ids"]["description"]
    single = SyncIntegrationParams.model_json_schema()["properties"]["integration_id"]
    assert "a colon and 24 characters" in single["description"]


def test_ids_pasted_as_one_string_become_a_list_for_the_sync_and_the_report():
    from flows.report import PipelineReportParams

    pasted = "greenhouse:HWUTwvyx2wLoSUHphiWVrp28, lever:9Qm2fLx7RkT4vNc8ZpW3bY6d\n"
    expected = ["greenhouse:HWUTwvyx2wLoSUHphiWVrp28", "lever:9Qm2fLx7RkT4vNc8ZpW3bY6d"]
    assert SyncManyParams(integration_ids=pasted).integration_ids == expected
    assert PipelineReportParams(integration_ids=pasted).integration_ids == expected
