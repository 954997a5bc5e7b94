import httpx

from stagewatch.kombo import jsontext
from stagewatch.kombo.errors import AuthenticationError, error_from_response
from stagewatch.kombo.models import Application
from stagewatch.kombo.pages import parse_page


def test_half_a_surrogate_pair_becomes_the_replacement_character():
    body = rb'{"name": "Ana \ud83d", "tail": "\udc4d x", "\ud83dkey": ["\ud83d"]}'
    assert jsontext.loads(body) == {
        "name": "Ana \ufffd",
        "tail": "\ufffd x",
        "\ufffdkey": ["\ufffd"],
    }


def test_a_whole_pair_is_kept_as_the_character_it_encodes():
    assert jsontext.loads(rb'{"name": "Ana \ud83d\udc4d"}') == {"name": "Ana \U0001f44d"}


def test_a_listing_with_half_a_pair_keeps_the_record_and_can_be_encoded():
    body = (
        rb'{"status": "success", "data": {"next": null, "results": [{"id": "a1",'
        rb' "current_stage": {"id": "s1", "name": "Interview \ud83d"}}]}}'
    )
    page = parse_page(httpx.Response(200, content=body), Application, "application")
    assert page.quarantined == []
    assert [(r.id, r.stage_name) for r in page.records] == [("a1", "Interview \ufffd")]
    page.records[0].model_dump_json().encode("utf-8")


def test_an_error_message_with_half_a_pair_is_still_an_error_that_encodes():
    body = (
        rb'{"status": "error", "error": {"code": "PLATFORM.AUTHENTICATION_INVALID",'
        rb' "title": null, "message": "bad key \ud83d", "log_url": null}}'
    )
    error = error_from_response(httpx.Response(401, content=body))
    assert isinstance(error, AuthenticationError)
    assert error.message == "bad key \ufffd"
    str(error).encode("utf-8")
