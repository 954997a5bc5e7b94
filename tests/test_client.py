"""KomboClient against `httpx.MockTransport` standing in for Kombo; sleeping is recorded, never done."""

import json
import logging
import pickle
import random
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta, timezone

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from stagewatch import __version__, fetch
from stagewatch.errors import StagewatchError
from stagewatch.kombo.client import KomboClient, RetryPolicy
from stagewatch.kombo.errors import (
    AuthenticationError,
    ConnectionFailedError,
    FatalError,
    KomboError,
    NotReadyError,
    PaginationLoopError,
    RateLimitError,
    TransientError,
    UnsupportedError,
)
from stagewatch.kombo.models import Quarantined
from stagewatch.kombo.pages import early_next_cursor
from stagewatch.settings import Settings, resolve_api_key
from stagewatch.store import Store
from tasks.secrets import kombo_api_key
from tests.spec import load_spec

KEY = "sk_live_7rT2sEcReT9KomboXyZ"
INTEGRATION = "greenhouse:HWUTwvyx2wLoSUHphiWVrp28"
NO_JITTER = RetryPolicy(jitter=0)


@pytest.fixture(autouse=True)
def key_never_logged(caplog):
    """Every test runs with all loggers at DEBUG; none may ever print the key. The `stagewatch`
    logger gets its own level once `flows.sync` is imported, so it is set here too."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="stagewatch")
    yield
    assert KEY not in caplog.text
    for record in caplog.records:
        assert KEY not in record.getMessage()


def assert_key_absent(error: BaseException) -> None:
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert KEY.encode() not in pickle.dumps(error)


class FakeKombo:
    """Answers requests from a script (responses, exceptions to raise, or callables) in order."""

    def __init__(self, *script):
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.script:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item(request) if callable(item) else item

    @property
    def cursors(self) -> list[str | None]:
        return [r.url.params.get("cursor") for r in self.requests]

    @property
    def queries(self) -> list[str]:
        return [r.url.query.decode() for r in self.requests]


def ok(data) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", "data": data})


def page(ids, next_cursor=None) -> httpx.Response:
    return ok({"next": next_cursor, "results": [{"id": i} for i in ids]})


def kombo_error(status, code, message="went wrong", headers=None) -> httpx.Response:
    body = {
        "status": "error",
        "error": {"code": code, "title": None, "message": message, "log_url": None},
    }
    return httpx.Response(status, json=body, headers=headers or {})


def make_client(fake, *, integration_id=INTEGRATION, retry=NO_JITTER, rng=None, **kwargs):
    sleeps: list[float] = []
    client = KomboClient(
        KEY,
        integration_id,
        transport=httpx.MockTransport(fake),
        retry=retry,
        sleep=sleeps.append,
        rng=rng or random.Random(0),
        **kwargs,
    )
    return client, sleeps


def ids_of(pages) -> list[list[str]]:
    return [[r.id for r in p.records] for p in pages]


# -- transport: URL, headers, timeouts, lifecycle ---------------------------------------------------


def test_requests_carry_auth_integration_user_agent_and_explicit_timeouts():
    fake = FakeKombo(page(["j1"]))
    client, _ = make_client(fake)
    list(client.iter_job_pages())
    (request,) = fake.requests
    assert str(request.url) == "https://api.kombo.dev/v1/ats/jobs?page_size=250"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["X-Integration-Id"] == INTEGRATION
    assert request.headers["User-Agent"] == f"stagewatch/{__version__}"
    assert request.extensions["timeout"] == {
        "connect": 30.0,
        "read": 30.0,
        "write": 30.0,
        "pool": 30.0,
    }


def test_check_api_key_sends_no_integration_header_and_returns_data():
    data = {"environment_id": "2Uev1YUTqLFdvMPD3Jtrg2FX", "customer_id": "2Uev1YUTqLFdvMPD3Jtrg2FX"}
    fake = FakeKombo(ok(data))
    client, _ = make_client(fake, integration_id=None)
    assert client.check_api_key() == data
    (request,) = fake.requests
    assert (request.method, str(request.url)) == ("GET", "https://api.kombo.dev/v1/check-api-key")
    assert "X-Integration-Id" not in request.headers
    assert request.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("kwargs", "url"),
    [
        ({}, "https://api.kombo.dev/v1/check-api-key"),
        ({"region": "us"}, "https://api.us.kombo.dev/v1/check-api-key"),
        (
            {"region": "us", "base_url": "http://127.0.0.1:8765/v1/"},
            "http://127.0.0.1:8765/v1/check-api-key",
        ),
    ],
)
def test_base_url_from_region_or_explicit(kwargs, url):
    fake = FakeKombo(ok({"environment_id": "e"}))
    client, _ = make_client(fake, **kwargs)
    client.check_api_key()
    assert str(fake.requests[0].url) == url


def test_custom_timeout_is_used():
    fake = FakeKombo(ok({"environment_id": "e"}))
    client, _ = make_client(fake, timeout=httpx.Timeout(5.0, connect=2.0))
    client.check_api_key()
    assert fake.requests[0].extensions["timeout"] == {
        "connect": 2.0,
        "read": 5.0,
        "write": 5.0,
        "pool": 5.0,
    }


def test_invalid_region_and_keys_are_rejected_without_echoing_the_key():
    with pytest.raises(ValueError, match=r"region must be one of \['eu', 'us'\], got 'asia'"):
        KomboClient(KEY, region="asia")
    for bad in ("", f" {KEY}", f"{KEY}\n", "sk live"):
        with pytest.raises(ValueError) as info:
            KomboClient(bad)
        assert str(info.value) == "the Kombo API key is empty or contains whitespace"
        assert_key_absent(info.value)


def test_key_absent_from_repr_and_client_state():
    client, _ = make_client(FakeKombo(), integration_id=INTEGRATION)
    assert repr(client) == (
        "KomboClient(base_url='https://api.kombo.dev/v1', integration_id='greenhouse:HWUTwvyx2wLoSUHphiWVrp28')"
    )
    assert KEY not in repr(vars(client))
    assert KEY not in repr(client._shared.http.headers)
    assert KEY not in repr(client._shared.http.auth)
    assert KEY not in repr(client.with_integration("lever:x"))
    client_from_secret = KomboClient(SecretStr(KEY))
    assert KEY not in repr(vars(client_from_secret))


def test_listing_needs_an_integration_id():
    client, _ = make_client(FakeKombo(), integration_id=None)
    with pytest.raises(ValueError, match=r"^/ats/applications needs an integration_id"):
        client.iter_application_pages()
    with pytest.raises(ValueError, match="integration_id must be a non-empty string"):
        client.with_integration("  ")


def test_context_manager_closes_the_connection_pool():
    fake = FakeKombo(ok({"environment_id": "e"}))
    client, _ = make_client(fake)
    with client as entered:
        assert entered is client
        client.check_api_key()
    with pytest.raises(RuntimeError, match="client has been closed"):
        client.check_api_key()


# -- with_integration and thread-safe stats ---------------------------------------------------------


def test_with_integration_shares_pool_but_counts_and_sends_its_own_id():
    fake = FakeKombo(page(["a"]), page(["b"]), page(["c"]))
    root, _ = make_client(fake)
    with root:
        with root.with_integration("lever:OTHER") as other:
            list(other.iter_application_pages())
        list(root.iter_application_pages())  # leaving `other` did not close the shared pool
        list(other.iter_application_pages())
    assert [r.headers["X-Integration-Id"] for r in fake.requests] == [
        "lever:OTHER",
        INTEGRATION,
        "lever:OTHER",
    ]
    assert other.stats.requests == 2
    assert root.stats.requests == 1
    assert root.integration_id == INTEGRATION


def test_stats_stay_exact_when_many_integrations_list_from_threads():
    lock = threading.Lock()
    seen: dict[str, int] = {}

    def handler(request):
        integration = request.headers["X-Integration-Id"]
        with lock:
            seen[integration] = seen.get(integration, 0) + 1
            attempt = seen[integration]
        if attempt % 2 == 1:  # the first attempt of each listing fails, the retry succeeds
            return httpx.Response(503, content=b"")
        return page([f"{integration}-{attempt}"])

    root, sleeps = make_client(handler)
    pages_per_thread = 25
    clients = [root.with_integration(f"tool:{n}") for n in range(4)]

    def work(client):
        for _ in range(pages_per_thread):
            list(client.iter_application_pages())

    threads = [threading.Thread(target=work, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        assert client.stats.model_dump() == {
            "requests": 50,
            "retries": 25,
            "waited_seconds": 12.5,
            "dropped": 0,
        }
    assert sleeps == [0.5] * 100


# -- pagination --------------------------------------------------------------------------------------


def test_follows_next_until_null_resending_the_same_filters():
    fake = FakeKombo(page(["a1", "a2"], "c1"), page(["a3"], "c2"), page(["a4"], None))
    client, _ = make_client(fake)
    pages = list(client.iter_application_pages(page_size=2, include_deleted=True))
    assert ids_of(pages) == [["a1", "a2"], ["a3"], ["a4"]]
    assert [p.next_cursor for p in pages] == ["c1", "c2", None]
    assert fake.queries == [
        "page_size=2&include_deleted=true",
        "page_size=2&include_deleted=true&cursor=c1",
        "page_size=2&include_deleted=true&cursor=c2",
    ]
    assert all(r.url.path == "/v1/ats/applications" for r in fake.requests)


def test_an_empty_next_ends_the_listing():
    fake = FakeKombo(page(["j1"], "c1"), page([], ""))
    client, _ = make_client(fake)
    assert ids_of(client.iter_job_pages()) == [["j1"], []]
    assert fake.cursors == [None, "c1"]


def test_pages_are_fetched_lazily_and_at_most_one_ahead():
    fake = FakeKombo(page(["a1"], "c1"), page(["a2"], "c2"), page(["a3"], None))
    client, _ = make_client(fake)
    pages = client.iter_application_pages()
    assert fake.requests == []
    assert [r.id for r in next(pages).records] == ["a1"]
    pages.close()  # waits for the request sent ahead, then drops it
    assert fake.cursors == [None, "c1"]
    assert (client.stats.requests, client.stats.dropped) == (2, 1)


def dated_pages(first_date: str = "Mon, 05 Jan 2026 10:00:00 GMT") -> list[httpx.Response]:
    dates = (first_date, "Mon, 05 Jan 2026 10:00:07 GMT", "not a date")
    pages = (page(["a1"], "c1"), page(["a2"], "c2"), page(["a3"], None))
    for response, date_header in zip(pages, dates, strict=True):
        response.headers["Date"] = date_header
    return list(pages)


def test_each_page_carries_when_kombo_served_it():
    client, _ = make_client(FakeKombo(*dated_pages()))
    assert [p.served_at for p in client.iter_application_pages()] == [
        datetime(2026, 1, 5, 10, tzinfo=UTC),
        datetime(2026, 1, 5, 10, 0, 7, tzinfo=UTC),
        None,  # an unreadable Date is no date
    ]


@pytest.mark.parametrize(
    ("first_date", "listed_at"),
    [
        ("Mon, 05 Jan 2026 10:00:00 GMT", datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("", datetime(2030, 1, 1, tzinfo=UTC)),  # no Date: our clock, read before the listing
    ],
)
def test_a_listing_starts_when_its_first_page_was_served(tmp_path, first_date, listed_at):
    client, _ = make_client(FakeKombo(*dated_pages(first_date)))
    with Store(tmp_path / "sw.db") as store:
        run = store.begin_run(INTEGRATION, "full")
        listing = fetch.fetch_applications(
            client, store, run, None, clock=lambda: datetime(2030, 1, 1, tzinfo=UTC)
        )
    # Later pages were served (and requested ahead) before the first was staged.
    assert (listing["listed_at"], listing["applications"]) == (listed_at, 3)


def test_without_send_ahead_the_next_page_waits_for_the_caller():
    fake = FakeKombo(page(["a1"], "c1"), page(["a2"], None))
    client, _ = make_client(fake, send_ahead=False)
    pages = client.iter_application_pages()
    assert [r.id for r in next(pages).records] == ["a1"]
    assert fake.cursors == [None]
    assert ids_of(pages) == [["a2"]]
    assert fake.cursors == [None, "c1"]


@pytest.mark.parametrize(
    ("body", "cursor"),
    [
        (b'{"status":"success","data":{"next":"c1","results":[]}}', "c1"),
        (
            b'{"status":"success","data":{"results":[{"id":"a"}], "next" : "c\\u00e9\\"2"}}',
            'c\u00e9"2',
        ),
        (b'{"status":"success","data":{"next":null,"results":[]}}', None),
        (b'{"status":"success","data":{"next":"","results":[]}}', None),
        # A record with its own `next` field: two keys, so nothing is read early.
        (b'{"status":"success","data":{"next":"c1","results":[{"id":"a","next":"x"}]}}', None),
        # A `"next":` inside a string value is escaped, so it is not a key.
        (b'{"status":"success","data":{"next":"c1","results":[{"id":"\\"next\\": 1"}]}}', "c1"),
        (b'{"status":"success","data":{"next":7,"results":[]}}', None),
        (b'{"status":"success","data":{"next":"c1', None),  # cut inside the cursor
    ],
)
def test_the_next_cursor_is_read_early_only_when_the_body_is_unambiguous(body, cursor):
    assert early_next_cursor(httpx.Response(200, content=body)) == cursor


def test_an_error_response_is_never_read_early():
    body = b'{"status":"error","data":{"next":"c1"}}'
    assert early_next_cursor(httpx.Response(429, content=body)) is None


def test_a_page_that_fails_to_parse_drops_the_request_sent_after_it():
    truncated = httpx.Response(200, content=b'{"status":"success","data":{"next":"c1","results":[')
    fake = FakeKombo(truncated, page(["never used"]), page(["a1"], "c1"), page(["a2"], None))
    client, sleeps = make_client(fake)
    assert ids_of(client.iter_application_pages()) == [["a1"], ["a2"]]
    # The early request for c1 went out before page 1 failed; page 1 was retried after it came
    # back, and c1 was asked for again, ahead of the caller, once page 1 had arrived.
    assert fake.cursors == [None, "c1", None, "c1"]
    assert (client.stats.requests, client.stats.retries, client.stats.dropped) == (4, 1, 1)
    assert len(sleeps) == 1


def test_a_cursor_seen_before_in_the_listing_is_a_fatal_loop():
    fake = FakeKombo(page(["a1"], "c1"), page(["a2"], "c2"), page(["a3"], "c1"))
    client, _ = make_client(fake)
    pages = client.iter_application_pages()
    received = [next(pages), next(pages), next(pages)]
    with pytest.raises(PaginationLoopError) as info:
        next(pages)
    assert ids_of(received) == [["a1"], ["a2"], ["a3"]]
    assert fake.cursors == [None, "c1", "c2"]
    assert str(info.value) == (
        "Kombo returned a next cursor already followed in this /ats/applications listing "
        "(after 3 pages)"
    )
    assert isinstance(info.value, FatalError)


def test_a_page_pointing_at_itself_is_a_loop():
    fake = FakeKombo(page(["a1"], "c1"), page(["a2"], "c1"))
    client, _ = make_client(fake)
    with pytest.raises(PaginationLoopError):
        list(client.iter_application_pages())
    assert fake.cursors == [None, "c1"]


def test_cursors_are_remembered_per_listing_only():
    fake = FakeKombo(page(["a1"], "c1"), page(["a2"]), page(["a1"], "c1"), page(["a2"]))
    client, _ = make_client(fake)
    assert ids_of(client.iter_application_pages()) == [["a1"], ["a2"]]
    assert ids_of(client.iter_application_pages()) == [["a1"], ["a2"]]


def test_a_retry_resumes_at_the_failed_page_with_the_same_cursor():
    fake = FakeKombo(
        page(["a1"], "c1"),
        httpx.ReadTimeout("read timed out"),
        httpx.Response(503, content=b"<html>Service Unavailable</html>"),
        page(["a2"], "c2"),
        page(["a3"], None),
    )
    client, sleeps = make_client(fake)
    pages = list(client.iter_application_pages(updated_after=date(2026, 1, 5)))
    assert ids_of(pages) == [["a1"], ["a2"], ["a3"]]
    assert fake.cursors == [None, "c1", "c1", "c1", "c2"]
    assert fake.queries[2] == "page_size=250&updated_after=2026-01-05&cursor=c1"
    assert sleeps == [0.5, 1.0]
    assert client.stats.model_dump() == {
        "requests": 5,
        "retries": 2,
        "waited_seconds": 1.5,
        "dropped": 0,
    }


def test_bad_records_are_quarantined_and_their_page_mates_kept():
    body = {
        "next": None,
        "results": [
            {"id": "a1", "outcome": "PENDING"},
            {"id": None, "outcome": "HIRED"},
            "not a record",
            {"id": "a4", "current_stage": {"id": "s1", "name": "Onsite"}, "brand_new_field": [1]},
        ],
    }
    fake = FakeKombo(ok(body))
    client, _ = make_client(fake)
    (only,) = list(client.iter_application_pages())
    assert [r.id for r in only.records] == ["a1", "a4"]
    assert only.records[1].stage_name == "Onsite"
    assert only.records[1].model_dump()["brand_new_field"] == [1]
    assert only.quarantined == [
        Quarantined(
            model="application",
            record_id=None,
            reason="id: Input should be a valid string",
            raw={"id": None, "outcome": "HIRED"},
        ),
        Quarantined(
            model="application",
            record_id=None,
            reason="record is str, not an object",
            raw="not a record",
        ),
    ]


def test_a_page_of_spec_examples_parses_on_the_fast_path():
    spec = load_spec()
    example = spec["components"]["schemas"]["GetAtsJobsPositiveResponse"]["properties"]["data"][
        "examples"
    ][0]
    fake = FakeKombo(ok({**example, "next": None}))
    client, _ = make_client(fake)
    (only,) = list(client.iter_job_pages())
    assert [(j.id, j.status, [s.name for s in j.stages]) for j in only.records] == [
        ("H5daSm8e85Dmvmne3wLeCPhX", "OPEN", ["Initial Screening"])
    ]
    assert only.quarantined == []


# -- filters -----------------------------------------------------------------------------------------


def test_every_application_filter_is_encoded_the_kombo_way():
    fake = FakeKombo(page([]))
    client, _ = make_client(fake)
    list(
        client.iter_application_pages(
            page_size=100,
            updated_after=datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC),
            include_deleted=True,
            ignore_unsupported_filters=False,
            ids=["a1", "a2"],
            remote_ids=("r1",),
            outcome="HIRED",
            outcomes=["HIRED", "DECLINED"],
            job_ids=["j1", "j2", "j3"],
            job_remote_ids=["jr1"],
            current_stage_ids=["s1", "s2"],
            remote_created_after=date(2025, 12, 31),
        )
    )
    assert fake.queries == [
        "page_size=100&updated_after=2026-01-05T10%3A00%3A00.123Z&include_deleted=true"
        "&ignore_unsupported_filters=false&ids=a1%2Ca2&remote_ids=r1&outcome=HIRED"
        "&outcomes=HIRED%2CDECLINED&job_ids=j1%2Cj2%2Cj3&job_remote_ids=jr1"
        "&current_stage_ids=s1%2Cs2&remote_created_after=2025-12-31"
    ]


def test_every_job_filter_is_encoded_the_kombo_way():
    fake = FakeKombo(page([]))
    client, _ = make_client(fake)
    list(
        client.iter_job_pages(
            updated_after=date(2026, 1, 5),
            include_deleted=False,
            ignore_unsupported_filters=True,
            ids=["j1"],
            remote_ids=["r1", "r2"],
            job_codes=["BE-1", "FE-2"],
            post_url="https://jobs.example.com/post/1",
            status="OPEN",
            statuses=["OPEN", "DRAFT"],
            employment_types=["FULL_TIME"],
            visibilities=["PUBLIC", "INTERNAL"],
            remote_created_after=datetime(2025, 1, 1, tzinfo=UTC),
            name_contains="Back end",
        )
    )
    assert fake.queries == [
        "page_size=250&updated_after=2026-01-05&include_deleted=false"
        "&ignore_unsupported_filters=true&ids=j1&remote_ids=r1%2Cr2&job_codes=BE-1%2CFE-2"
        "&post_url=https%3A%2F%2Fjobs.example.com%2Fpost%2F1&status=OPEN&statuses=OPEN%2CDRAFT"
        "&employment_types=FULL_TIME&visibilities=PUBLIC%2CINTERNAL"
        "&remote_created_after=2025-01-01T00%3A00%3A00.000Z&name_contains=Back+end"
    ]


def test_timestamps_are_sent_in_utc_and_none_filters_are_left_out():
    fake = FakeKombo(page([]), page([]), page([]))
    client, _ = make_client(fake)
    berlin = timezone(timedelta(hours=2))
    list(client.iter_application_pages(updated_after=datetime(2026, 6, 1, 12, 0, tzinfo=berlin)))
    list(client.iter_application_pages(updated_after=datetime(2026, 6, 1, 12, 0)))
    list(client.iter_application_pages(updated_after=None, ids=None))
    assert fake.queries == [
        "page_size=250&updated_after=2026-06-01T10%3A00%3A00.000Z",
        "page_size=250&updated_after=2026-06-01T12%3A00%3A00.000Z",
        "page_size=250",
    ]


def test_a_set_is_sent_sorted_so_requests_are_reproducible():
    fake = FakeKombo(page([]))
    client, _ = make_client(fake)
    list(client.iter_application_pages(ids={"b", "c", "a"}))
    assert fake.queries == ["page_size=250&ids=a%2Cb%2Cc"]


@pytest.mark.parametrize(
    ("method", "filters", "message"),
    [
        ("iter_application_pages", {"updated_since": date(2026, 1, 1)}, "unknown filter 'updated_since' for /ats/applications; known: current_stage_ids, ids, ignore_unsupported_filters, include_deleted, job_ids, job_remote_ids, outcome, outcomes, remote_created_after, remote_ids, updated_after"),
        ("iter_application_pages", {"statuses": ["OPEN"]}, "unknown filter 'statuses' for /ats/applications; known: "),
        ("iter_job_pages", {"outcomes": ["HIRED"]}, "unknown filter 'outcomes' for /ats/jobs; known: "),
        ("iter_job_pages", {"cursor": "abc"}, "unknown filter 'cursor' for /ats/jobs; known: "),
        ("iter_job_pages", {"include_deleted": "true"}, "filter 'include_deleted' must be a bool, got str"),
        ("iter_job_pages", {"ids": []}, "filter 'ids' is an empty list; Kombo would read it as 'no filter' and return all"),
        ("iter_job_pages", {"ids": ["a,b"]}, "filter 'ids': value 'a,b' contains a comma, Kombo's separator"),
        ("iter_job_pages", {"ids": ["a", 3]}, "filter 'ids' must hold non-empty strings, got 3"),
        ("iter_job_pages", {"ids": 7}, "filter 'ids' must be a list of strings, got int"),
        ("iter_job_pages", {"updated_after": "2026-01-01"}, "filter 'updated_after' must be a datetime or a date, got str"),
        ("iter_job_pages", {"name_contains": ""}, "filter 'name_contains' must be a non-empty string, got ''"),
        ("iter_job_pages", {"page_size": 0}, "page_size must be from 1 to 250, got 0"),
        ("iter_job_pages", {"page_size": 251}, "page_size must be from 1 to 250, got 251"),
        ("iter_application_pages", {"page_size": True}, "page_size must be an int from 1 to 250, got True"),
        ("iter_application_pages", {"page_size": "100"}, "page_size must be an int from 1 to 250, got '100'"),
        ("iter_application_pages", {"page_size": 2.5}, "page_size must be an int from 1 to 250, got 2.5"),
    ],
)  # fmt: skip
def test_bad_filters_fail_at_the_call_with_a_message_naming_them(method, filters, message):
    fake = FakeKombo()
    client, _ = make_client(fake)
    with pytest.raises(ValueError) as info:
        getattr(client, method)(**filters)
    assert str(info.value).startswith(message)
    assert fake.requests == []


def test_page_size_bounds_are_accepted():
    fake = FakeKombo(page([]), page([]))
    client, _ = make_client(fake)
    list(client.iter_job_pages(page_size=1))
    list(client.iter_job_pages(page_size=250))
    assert fake.queries == ["page_size=1", "page_size=250"]


# -- error families through the client ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (kombo_error(401, "PLATFORM.AUTHENTICATION_INVALID"), AuthenticationError),
        (kombo_error(409, "INTEGRATION.SETUP_SYNC_PENDING"), NotReadyError),
        (kombo_error(503, "INTEGRATION.SETUP_SYNC_PENDING"), NotReadyError),
        (kombo_error(400, "INTEGRATION.MODEL_NOT_AVAILABLE"), UnsupportedError),
        (kombo_error(200, "INTEGRATION.SETUP_INCOMPLETE"), NotReadyError),
        (kombo_error(403, "INTEGRATION.INACTIVE"), FatalError),
    ],
)
def test_errors_that_retrying_cannot_fix_are_raised_at_once(response, cls):
    fake = FakeKombo(response)
    client, sleeps = make_client(fake)
    with pytest.raises(cls) as info:
        list(client.iter_application_pages())
    assert not isinstance(info.value, TransientError)
    assert (len(fake.requests), sleeps) == (1, [])
    assert client.stats.model_dump() == {
        "requests": 1,
        "retries": 0,
        "waited_seconds": 0.0,
        "dropped": 0,
    }
    assert_key_absent(info.value)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, content=b"<html><h1>500 Internal Server Error</h1></html>"),
        httpx.Response(502, content=b""),
        kombo_error(503, "REMOTE.SERVICE_UNAVAILABLE", headers={"ratelimit-reset": "57"}),
        httpx.Response(200, content=b'{"status": "success", "data": {"results": ['),
        httpx.Response(200, content=b"<html>maintenance</html>"),
        ok({"results": []}),
        ok({"next": None, "results": None}),
        ok({"next": 5, "results": []}),
        httpx.Response(200, json={"status": "pending", "data": {"next": None, "results": []}}),
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ReadTimeout("read timed out"),
        httpx.ReadError("connection reset"),
        httpx.WriteError("broken pipe"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
    ],
    ids=lambda f: type(f).__name__ if isinstance(f, Exception) else None,
)
def test_transient_failures_are_retried_after_the_backoff_delay(failure):
    fake = FakeKombo(failure, page(["a1"]))
    client, sleeps = make_client(fake)
    assert ids_of(client.iter_application_pages()) == [["a1"]]
    assert sleeps == [0.5]
    assert client.stats.model_dump() == {
        "requests": 2,
        "retries": 1,
        "waited_seconds": 0.5,
        "dropped": 0,
    }


def test_transport_errors_become_transient_without_the_request_or_its_headers():
    fake = FakeKombo(*[httpx.ReadTimeout("read timed out")] * 6)
    client, _ = make_client(fake)
    with pytest.raises(TransientError) as info:
        list(client.iter_job_pages())
    error = info.value
    assert str(error) == "ReadTimeout on GET /ats/jobs: the connection failed before Kombo answered"
    assert (error.__cause__, error.__context__, error.status_code) == (None, None, None)
    assert_key_absent(error)


def test_connect_failures_are_marked_as_never_sent():
    fake = FakeKombo(*[httpx.ConnectError("refused")] * 6)
    client, _ = make_client(fake)
    with pytest.raises(ConnectionFailedError) as info:
        client.check_api_key()
    assert str(info.value) == "ConnectError on GET /check-api-key: Kombo could not be reached"


def test_a_request_that_cannot_be_sent_at_all_is_fatal_and_not_retried():
    fake = FakeKombo(httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'"))
    client, sleeps = make_client(fake)
    with pytest.raises(FatalError) as info:
        client.check_api_key()
    assert (
        str(info.value)
        == "UnsupportedProtocol on GET /check-api-key: the request could not be sent"
    )
    assert sleeps == []


def test_backoff_doubles_up_to_the_attempt_cap_then_raises_the_last_error():
    fake = FakeKombo(*[httpx.Response(502, content=b"")] * 6)
    client, sleeps = make_client(fake)
    with pytest.raises(TransientError) as info:
        list(client.iter_application_pages())
    assert str(info.value) == "HTTP 502: the body is empty"
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert client.stats.model_dump() == {
        "requests": 6,
        "retries": 5,
        "waited_seconds": 15.5,
        "dropped": 0,
    }
    assert fake.cursors == [None] * 6


def test_each_delay_is_capped_at_max_delay():
    policy = RetryPolicy(
        max_attempts=4, initial_delay=10, max_delay=15, max_total_wait=1000, jitter=0
    )
    fake = FakeKombo(*[httpx.Response(500)] * 4)
    client, sleeps = make_client(fake, retry=policy)
    with pytest.raises(TransientError):
        client.check_api_key()
    assert sleeps == [10.0, 15.0, 15.0]


def test_total_wait_is_capped_per_request():
    policy = RetryPolicy(max_total_wait=3.0, jitter=0)
    fake = FakeKombo(*[httpx.Response(500)] * 3)
    client, sleeps = make_client(fake, retry=policy)
    with pytest.raises(TransientError):
        list(client.iter_job_pages())
    assert sleeps == [0.5, 1.0]  # a further 2.0 s would make 3.5 s, over the 3.0 s budget
    assert len(fake.requests) == 3


def test_the_wait_budget_restarts_for_each_page():
    policy = RetryPolicy(max_total_wait=1.0, jitter=0)
    fake = FakeKombo(
        httpx.Response(500), page(["a1"], "c1"), httpx.Response(500), page(["a2"], None)
    )
    client, sleeps = make_client(fake, retry=policy)
    assert ids_of(client.iter_application_pages()) == [["a1"], ["a2"]]
    assert sleeps == [0.5, 0.5]


def test_jitter_shortens_each_delay_by_up_to_its_fraction_reproducibly_with_a_seed():
    policy = RetryPolicy(jitter=0.25)

    def run(seed):
        fake = FakeKombo(*[httpx.Response(500)] * 6)
        client, sleeps = make_client(fake, retry=policy, rng=random.Random(seed))
        with pytest.raises(TransientError):
            client.check_api_key()
        return sleeps

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    draws = random.Random(7)
    expected = [base * (1 - 0.25 * draws.random()) for base in (0.5, 1.0, 2.0, 4.0, 8.0)]
    assert first == pytest.approx(expected)
    for delay, base in zip(first, (0.5, 1.0, 2.0, 4.0, 8.0), strict=True):
        assert 0.75 * base <= delay <= base


def test_429_honours_retry_after():
    fake = FakeKombo(
        kombo_error(429, "PLATFORM.RATE_LIMIT_EXCEEDED", headers={"Retry-After": "7", "ratelimit-reset": "57"}),
        page(["a1"]),
    )  # fmt: skip
    client, sleeps = make_client(fake)
    assert ids_of(client.iter_application_pages()) == [["a1"]]
    assert sleeps == [7.0]


def test_429_without_retry_after_waits_for_ratelimit_reset():
    headers = {"ratelimit-limit": "300", "ratelimit-remaining": "0", "ratelimit-reset": "57"}
    fake = FakeKombo(
        kombo_error(429, "PLATFORM.RATE_LIMIT_EXCEEDED", headers=headers), page(["a1"])
    )
    client, sleeps = make_client(fake)
    assert ids_of(client.iter_application_pages()) == [["a1"]]
    assert sleeps == [57.0]
    assert client.stats.waited_seconds == 57.0


def test_429_naming_no_wait_uses_the_backoff():
    fake = FakeKombo(httpx.Response(429, content=b"Too Many Requests"), page(["a1"]))
    client, sleeps = make_client(fake)
    list(client.iter_application_pages())
    assert sleeps == [0.5]


def test_a_retry_after_beyond_the_budget_raises_at_once_instead_of_sleeping_short():
    fake = FakeKombo(
        kombo_error(429, "PLATFORM.RATE_LIMIT_EXCEEDED", headers={"Retry-After": "600"})
    )
    client, sleeps = make_client(fake)
    with pytest.raises(RateLimitError) as info:
        list(client.iter_application_pages())
    assert (info.value.retry_after, sleeps, len(fake.requests)) == (600.0, [], 1)


def test_a_5xx_does_not_wait_for_ratelimit_reset():
    headers = {"ratelimit-reset": "57"}
    fake = FakeKombo(httpx.Response(500, content=b"oops", headers=headers), page(["a1"]))
    client, sleeps = make_client(fake)
    list(client.iter_application_pages())
    assert sleeps == [0.5]


# -- writes --------------------------------------------------------------------------------------------


def test_create_application_posts_the_body_and_returns_the_envelope():
    answer = {"status": "success", "data": {"id": "A1"}, "warnings": [{"message": "note"}]}
    fake = FakeKombo(httpx.Response(200, json=answer))
    client, _ = make_client(fake)
    body = {"candidate": {"first_name": "Frank", "last_name": "Doe"}}
    assert client.create_application("remote:42", body) == answer
    (request,) = fake.requests
    assert (request.method, str(request.url)) == (
        "POST",
        "https://api.kombo.dev/v1/ats/jobs/remote:42/applications",
    )
    assert json.loads(request.content) == body
    assert request.headers["X-Integration-Id"] == INTEGRATION


def test_set_application_stage_puts_the_stage_id():
    answer = {"status": "success", "data": {}, "warnings": []}
    fake = FakeKombo(httpx.Response(200, json=answer))
    client, _ = make_client(fake)
    assert client.set_application_stage("app/1", "S2") == answer
    (request,) = fake.requests
    assert (request.method, str(request.url), json.loads(request.content)) == (
        "PUT",
        "https://api.kombo.dev/v1/ats/applications/app%2F1/stage",
        {"stage_id": "S2"},
    )


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, content=b""),
        httpx.Response(502, content=b"<html>bad gateway</html>"),
        kombo_error(503, "REMOTE.SERVICE_UNAVAILABLE"),
        kombo_error(429, "REMOTE.RATE_LIMIT_EXCEEDED"),
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=lambda f: type(f).__name__ if isinstance(f, Exception) else None,
)
def test_writes_are_not_resent_when_kombo_may_have_acted(failure):
    for call in (
        lambda c: c.create_application("J1", {"candidate": {"first_name": "A"}}),
        lambda c: c.set_application_stage("A1", "S2"),
    ):
        fake = FakeKombo(failure)
        client, sleeps = make_client(fake)
        with pytest.raises(TransientError):
            call(client)
        assert (len(fake.requests), sleeps) == (1, [])


@pytest.mark.parametrize(
    "failure",
    [
        kombo_error(429, "PLATFORM.RATE_LIMIT_EXCEEDED", headers={"Retry-After": "2"}),
        kombo_error(429, "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED", headers={"Retry-After": "2"}),
        httpx.Response(429, content=b"slow down", headers={"Retry-After": "2"}),
        httpx.ConnectError("connection refused"),
    ],
    ids=lambda f: type(f).__name__ if isinstance(f, Exception) else None,
)
def test_writes_are_resent_when_kombo_certainly_did_nothing(failure):
    answer = {"status": "success", "data": {}, "warnings": []}
    fake = FakeKombo(failure, httpx.Response(200, json=answer))
    client, sleeps = make_client(fake)
    assert client.set_application_stage("A1", "S2") == answer
    assert len(fake.requests) == 2
    assert sleeps == ([0.5] if isinstance(failure, Exception) else [2.0])


def test_write_arguments_are_checked_before_sending():
    fake = FakeKombo()
    client, _ = make_client(fake)
    with pytest.raises(ValueError, match="job_id must be a non-empty string, got ''"):
        client.create_application("", {})
    with pytest.raises(ValueError, match="body must be a dict"):
        client.create_application("J1", [])
    with pytest.raises(ValueError, match="stage_id must be a non-empty string, got None"):
        client.set_application_stage("A1", None)
    assert fake.requests == []


# -- logs ------------------------------------------------------------------------------------------------


def test_logs_name_method_path_status_attempt_and_delay_only(caplog):
    fake = FakeKombo(httpx.Response(503, content=b"busy"), page(["a1"]))
    client, _ = make_client(fake)
    list(client.iter_application_pages(updated_after=date(2026, 1, 5)))
    ours = [r.getMessage() for r in caplog.records if r.name == "stagewatch.kombo.client"]
    assert ours == [
        "GET /ats/applications -> 503 (attempt 1)",
        "GET /ats/applications failed (HTTP 503) on attempt 1; retrying in 0.50 s",
        "GET /ats/applications -> 200 (attempt 2)",
    ]


def test_giving_up_is_logged_as_a_warning(caplog):
    fake = FakeKombo(*[httpx.ConnectError("refused")] * 2)
    client, _ = make_client(fake, retry=RetryPolicy(max_attempts=2, jitter=0))
    with pytest.raises(ConnectionFailedError):
        client.check_api_key()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["GET /check-api-key failed (no response) on attempt 2; giving up"]


# -- settings and the API key ------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in (
        "KOMBO_API_KEY",
        "KOMBO_BASE_URL",
        "KOMBO_REGION",
        "STAGEWATCH_DB",
        "STAGEWATCH_TIMEOUT",
        "STAGEWATCH_MAX_ATTEMPTS",
        "STAGEWATCH_INITIAL_DELAY",
        "STAGEWATCH_MAX_DELAY",
        "STAGEWATCH_MAX_TOTAL_WAIT",
        "STAGEWATCH_JITTER",
        "STAGEWATCH_LOCK_LEASE_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_defaults(clean_env):
    settings = Settings(_env_file=None)
    assert settings.model_dump() == {
        "kombo_api_key": None,
        "kombo_base_url": None,
        "kombo_region": "eu",
        "stagewatch_db": "stagewatch.db",
        "stagewatch_timeout": 30.0,
        "stagewatch_max_attempts": 6,
        "stagewatch_initial_delay": 0.5,
        "stagewatch_max_delay": 30.0,
        "stagewatch_max_total_wait": 120.0,
        "stagewatch_jitter": 0.25,
        "stagewatch_lock_lease_seconds": 300.0,
    }
    assert settings.retry_policy() == RetryPolicy()


def test_settings_read_the_environment_and_build_a_client(clean_env):
    clean_env.setenv("KOMBO_API_KEY", KEY)
    clean_env.setenv("KOMBO_REGION", "us")
    clean_env.setenv("KOMBO_BASE_URL", "http://127.0.0.1:8765/v1")
    clean_env.setenv("STAGEWATCH_DB", "/tmp/x.db")
    clean_env.setenv("STAGEWATCH_MAX_ATTEMPTS", "3")
    clean_env.setenv("STAGEWATCH_JITTER", "0")
    clean_env.setenv("STAGEWATCH_LOCK_LEASE_SECONDS", "2.5")
    settings = Settings(_env_file=None)
    assert settings.stagewatch_lock_lease_seconds == 2.5
    assert KEY not in repr(settings)
    assert KEY not in str(settings.model_dump())
    assert (settings.kombo_region, str(settings.stagewatch_db)) == ("us", "/tmp/x.db")
    assert settings.retry_policy() == RetryPolicy(max_attempts=3, jitter=0)
    client = settings.client(resolve_api_key(settings), INTEGRATION)
    assert (
        repr(client)
        == f"KomboClient(base_url='http://127.0.0.1:8765/v1', integration_id='{INTEGRATION}')"
    )
    assert client.retry == RetryPolicy(max_attempts=3, jitter=0)


def test_settings_reject_an_unknown_region(clean_env):
    clean_env.setenv("KOMBO_REGION", "asia")
    with pytest.raises(ValidationError, match="kombo_region"):
        Settings(_env_file=None)


def test_resolve_api_key_from_the_environment(clean_env):
    clean_env.setenv("KOMBO_API_KEY", f" {KEY}\n")
    assert resolve_api_key(Settings(_env_file=None)).get_secret_value() == KEY


@pytest.mark.parametrize("value", [None, "", "   "])
def test_resolve_api_key_names_the_sources_when_nothing_is_set(clean_env, value):
    if value is not None:
        clean_env.setenv("KOMBO_API_KEY", value)
    with pytest.raises(StagewatchError) as info:
        resolve_api_key(Settings(_env_file=None))
    assert str(info.value) == (
        "no Kombo API key: the environment variable KOMBO_API_KEY is not set "
        "(the Prefect Secret block 'kombo-api-key' was not consulted)"
    )


def fake_secret_load(value):
    """Stands in for Prefect's server: `Secret.load` finds a block holding `value`, or none."""
    from prefect.blocks.system import Secret

    def load(cls, name, validate=True, client=None, _sync=None):
        assert name == "kombo-api-key"
        if value is None:
            raise ValueError(f"Unable to find block document named {name} for block type secret")
        return Secret(value=value)

    return classmethod(load)


def test_resolve_api_key_prefers_the_prefect_secret_block_when_asked(clean_env):
    from prefect.blocks.system import Secret

    clean_env.setenv("KOMBO_API_KEY", "sk_from_env")
    clean_env.setattr(Secret, "load", fake_secret_load(KEY))
    settings = Settings(_env_file=None)
    assert kombo_api_key(settings).get_secret_value() == KEY
    assert resolve_api_key(settings).get_secret_value() == "sk_from_env"


def test_resolve_api_key_falls_back_to_the_environment_without_a_block(clean_env):
    from prefect.blocks.system import Secret

    clean_env.setattr(Secret, "load", fake_secret_load(None))
    clean_env.setenv("KOMBO_API_KEY", KEY)
    assert kombo_api_key(Settings(_env_file=None)).get_secret_value() == KEY
    clean_env.delenv("KOMBO_API_KEY")
    with pytest.raises(StagewatchError) as info:
        kombo_api_key(Settings(_env_file=None))
    assert str(info.value) == (
        "no Kombo API key: neither the Prefect Secret block 'kombo-api-key' nor the environment "
        "variable KOMBO_API_KEY is set"
    )


def test_the_client_and_settings_import_without_prefect():
    code = (
        "import sys, stagewatch.kombo.client, stagewatch.settings, stagewatch.errors, stagewatch.kombo.models;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_error_the_client_raises_is_a_kombo_error_family():
    families = (TransientError, NotReadyError, UnsupportedError, FatalError)
    for failure in (
        httpx.Response(418, content=b"teapot"),
        kombo_error(409, "ATS.APPLICATION_ALREADY_EXISTS"),
        httpx.UnsupportedProtocol("ftp"),
    ):
        fake = FakeKombo(failure)
        client, _ = make_client(fake)
        with pytest.raises(KomboError) as info:
            client.check_api_key()
        assert isinstance(info.value, families)


# -- requests conform to Kombo's OpenAPI description ---------------------------------------------------


def spec_operation(path, method):
    spec = load_spec()
    return spec, spec["paths"][path][method]


@pytest.mark.parametrize(
    ("path", "method", "filters"),
    [
        (
            "/ats/applications",
            "iter_application_pages",
            {
                "updated_after": datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC),
                "include_deleted": True,
                "ignore_unsupported_filters": False,
                "ids": ["a1", "a2"],
                "remote_ids": ["r1"],
                "outcome": "HIRED",
                "outcomes": ["HIRED", "DECLINED"],
                "job_ids": ["j1"],
                "job_remote_ids": ["jr1"],
                "current_stage_ids": ["s1"],
                "remote_created_after": date(2025, 12, 31),
            },
        ),
        (
            "/ats/jobs",
            "iter_job_pages",
            {
                "updated_after": date(2026, 1, 5),
                "include_deleted": False,
                "ignore_unsupported_filters": True,
                "ids": ["j1"],
                "remote_ids": ["r1", "r2"],
                "job_codes": ["BE-1"],
                "post_url": "https://jobs.example.com/post/1",
                "status": "OPEN",
                "statuses": ["OPEN", "DRAFT"],
                "employment_types": ["FULL_TIME"],
                "visibilities": ["PUBLIC"],
                "remote_created_after": datetime(2025, 1, 1, tzinfo=UTC),
                "name_contains": "Backend",
            },
        ),
    ],
)
def test_every_spec_filter_is_accepted_and_its_encoding_matches_the_spec_schema(
    path, method, filters
):
    import jsonschema

    spec, operation = spec_operation(path, "get")
    query = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
    assert set(filters) == set(query) - {"cursor", "page_size"}
    fake = FakeKombo(page([], "c1"), page([]))
    client, _ = make_client(fake)
    list(getattr(client, method)(page_size=250, **filters))
    sent = dict(fake.requests[1].url.params)
    assert set(sent) == set(filters) | {"page_size", "cursor"}
    for name, value in sent.items():
        schema = {**query[name], "components": spec["components"]}
        instance = int(value) if name == "page_size" else value
        jsonschema.validate(instance, schema)


def test_stage_move_body_matches_the_spec_schema():
    import jsonschema

    spec, operation = spec_operation("/ats/applications/{application_id}/stage", "put")
    fake = FakeKombo(httpx.Response(200, json={"status": "success", "data": {}, "warnings": []}))
    client, _ = make_client(fake)
    client.set_application_stage("A1", "S2")
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.validate(
        json.loads(fake.requests[0].content), {**schema, "components": spec["components"]}
    )
