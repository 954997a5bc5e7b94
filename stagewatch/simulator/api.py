"""Kombo's ATS endpoints over a `World`: parameter validation, filters, cursors, writes.

Each function takes an `Integration` and already-parsed request parts and returns the success body,
or raises `ApiError` carrying Kombo's error code. Transport concerns (auth, faults, rate limits,
headers) live in `handler.py`.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stagewatch.simulator import render
from stagewatch.simulator.backlog import IMPORT_ID_TYPES
from stagewatch.simulator.changes import ChangeLog
from stagewatch.simulator.integration import Integration
from stagewatch.simulator.records import JOB_REMOTE_BASE, OUTCOMES, SimulationError

MAX_PAGE_SIZE = 250
DEFAULT_PAGE_SIZE = 100
# Kombo documents the status of only some codes; these are this simulator's choices for the rest.
STATUS_BY_CODE = {
    "PLATFORM.INPUT_INVALID": 400,
    "PLATFORM.AUTHENTICATION_INVALID": 401,
    "PLATFORM.INTEGRATION_NOT_FOUND": 404,
    "PLATFORM.RATE_LIMIT_EXCEEDED": 429,
    "PLATFORM.UNKNOWN_ERROR": 500,
    "INTEGRATION.PERMISSION_MISSING": 403,
    "INTEGRATION.SETUP_SYNC_PENDING": 409,
    "INTEGRATION.MODEL_NOT_AVAILABLE": 400,
    "INTEGRATION.ACTION_NOT_AVAILABLE": 400,
    "REMOTE.SERVICE_UNAVAILABLE": 503,
    "ATS.JOB_CLOSED": 400,
    "ATS.APPLICATION_ALREADY_EXISTS": 409,
}
TITLE_BY_CODE = {
    "PLATFORM.INPUT_INVALID": "Invalid input",
    "PLATFORM.AUTHENTICATION_INVALID": "Authentication failed",
    "PLATFORM.INTEGRATION_NOT_FOUND": "Integration not found",
    "PLATFORM.RATE_LIMIT_EXCEEDED": "Rate limit exceeded",
    "PLATFORM.UNKNOWN_ERROR": "Unknown error",
    "INTEGRATION.PERMISSION_MISSING": "Permission missing",
    "INTEGRATION.SETUP_SYNC_PENDING": "Initial sync pending",
    "INTEGRATION.MODEL_NOT_AVAILABLE": "Model not available",
    "INTEGRATION.ACTION_NOT_AVAILABLE": "Action not available",
    "REMOTE.SERVICE_UNAVAILABLE": "Remote service unavailable",
    "ATS.JOB_CLOSED": "Job closed",
    "ATS.APPLICATION_ALREADY_EXISTS": "Application already exists",
}

# Filters each limitation scenario's ATS cannot evaluate: they empty the listing unless
# `ignore_unsupported_filters=true`.
UNSUPPORTED_FILTERS = {
    "no-outcomes": frozenset({"outcome", "outcomes"}),
    "no-stages": frozenset({"current_stage_ids"}),
}

_COMMON_PARAMS = frozenset(
    {
        "cursor",
        "page_size",
        "updated_after",
        "include_deleted",
        "ignore_unsupported_filters",
        "ids",
        "remote_ids",
        "remote_created_after",
    }
)
JOB_PARAMS = _COMMON_PARAMS | {
    "job_codes",
    "post_url",
    "status",
    "statuses",
    "employment_types",
    "visibilities",
    "name_contains",
}
APPLICATION_PARAMS = _COMMON_PARAMS | {
    "outcome",
    "outcomes",
    "job_ids",
    "job_remote_ids",
    "current_stage_ids",
}
_NOT_FILTERS = frozenset({"cursor", "page_size", "ignore_unsupported_filters"})
JOB_STATUSES = ("OPEN", "CLOSED", "DRAFT", "ARCHIVED")
EMPLOYMENT_TYPES = ("FULL_TIME", "PART_TIME", "CONTRACT", "SEASONAL", "INTERNSHIP")
VISIBILITIES = ("PUBLIC", "INTERNAL", "UNLISTED", "CONFIDENTIAL")
# The schema's pattern for `updated_after` / `remote_created_after`: no offsets.
_TIMESTAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?)?Z?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


class ApiError(Exception):
    """A Kombo error answer: `code` decides status and title."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_BY_CODE[code]


def invalid(message: str) -> ApiError:
    return ApiError("PLATFORM.INPUT_INVALID", message)


# -- parameters ------------------------------------------------------------------------------


def parse_query(
    pairs: Iterable[tuple[str, str]], allowed: frozenset[str], endpoint: str
) -> dict[str, str]:
    """One value per parameter; repeated or unknown parameters are input errors.

    Kombo takes multi-value filters as one comma-separated value, so `ids=a&ids=b` is a client bug
    worth surfacing rather than silently reading only one of the values.
    """
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise invalid(f"Unknown query parameter {name!r} for {endpoint}.")
        if name in params:
            raise invalid(
                f"Query parameter {name!r} was given more than once; "
                "send multiple values as one comma-separated value."
            )
        params[name] = value
    return params


def parse_timestamp(name: str, value: str) -> int:
    """Epoch milliseconds of `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS(.sss)Z`."""
    match = _TIMESTAMP.match(value)
    if not match:
        raise invalid(
            f"{name} must look like YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS.sssZ (UTC, no offset); "
            f"got {value!r}."
        )
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=UTC,
        )
    except ValueError:
        raise invalid(f"{name} is not a valid date: {value!r}.") from None
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    return calendar.timegm(moment.utctimetuple()) * 1000 + millis


def _optional_timestamp(params: dict[str, str], name: str) -> int | None:
    """A timestamp parameter; absent or empty means no cut-off."""
    return parse_timestamp(name, params[name]) if params.get(name) else None


def _bool(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "false")
    if value not in ("true", "false"):
        raise invalid(f"{name} must be 'true' or 'false', got {value!r}.")
    return value == "true"


def _page_size(params: dict[str, str]) -> int:
    raw = params.get("page_size")
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not re.fullmatch(r"\d+", raw) or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise invalid(f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}, got {raw!r}.")
    return int(raw)


def _values(params: dict[str, str], name: str) -> list[str] | None:
    """A comma-separated filter; blank means 'no filter'."""
    raw = params.get(name)
    if raw is None:
        return None
    values = [v.strip() for v in raw.split(",") if v.strip()]
    return values or None


def _enum_values(params: dict[str, str], name: str, allowed: tuple[str, ...]) -> set[str] | None:
    values = _values(params, name)
    if values is None:
        return None
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise invalid(f"{name} has unknown value(s) {unknown}; allowed: {', '.join(allowed)}.")
    return set(values)


# -- cursors ---------------------------------------------------------------------------------


def _filter_digest(params: dict[str, str]) -> str:
    canonical = sorted((k, v) for k, v in params.items() if k not in _NOT_FILTERS)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:16]


def encode_cursor(model: str, integ: Integration, seq: int, params: dict[str, str]) -> str:
    payload = {"m": model, "i": integ.number, "s": seq, "f": _filter_digest(params)}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(model: str, integ: Integration, cursor: str, params: dict[str, str]) -> int:
    """The sequence number after which the next page starts."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        seq = payload["s"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise invalid("cursor is not a cursor this API issued; copy it from data.next.") from None
    if payload.get("m") != model or payload.get("i") != integ.number:
        raise invalid("cursor belongs to a different listing (endpoint or integration).")
    if payload.get("f") != _filter_digest(params):
        raise invalid("cursor was issued for different filters; re-send the same filters.")
    return seq


# -- listing ---------------------------------------------------------------------------------


@dataclass
class Listing:
    """What a listing request resolved to: rows to consider and tests each row must pass."""

    candidates: set[int] | None  # rows from an id-like filter, else None: scan the change log
    predicates: list[Callable[[int], bool]]


def _paginate(
    log: ChangeLog,
    listing: Listing,
    after_seq: int,
    updated_after: int | None,
    page_size: int,
) -> tuple[list[int], int | None]:
    """Up to `page_size` rows in change order and the last one's seq if more rows follow.

    Looks one row ahead so the last page says `next: null` instead of costing an empty page.
    """
    predicates = listing.predicates
    rows: Iterator[tuple[int, int]]
    if listing.candidates is None:
        rows = log.scan(after_seq, updated_after)
    else:
        ordered = sorted((log.seq_of(r), r) for r in listing.candidates if log.listed(r))
        rows = (
            (seq, r)
            for seq, r in ordered
            if seq > after_seq and (updated_after is None or log.time_of(r) > updated_after)
        )
    found: list[tuple[int, int]] = []
    for seq, row in rows:
        if all(test(row) for test in predicates):
            found.append((seq, row))
            if len(found) > page_size:
                break
    more = len(found) > page_size
    page = found[:page_size]
    return [row for _, row in page], (page[-1][0] if more else None)


def _common(
    model: str, integ: Integration, params: dict[str, str]
) -> tuple[int, int, int | None, bool, bool]:
    page_size = _page_size(params)
    after_seq = -1
    if params.get("cursor"):
        after_seq = decode_cursor(model, integ, params["cursor"], params)
    updated_after = _optional_timestamp(params, "updated_after")
    include_deleted = _bool(params, "include_deleted")
    ignore_unsupported = _bool(params, "ignore_unsupported_filters")
    return page_size, after_seq, updated_after, include_deleted, ignore_unsupported


def _unsupported(integ: Integration, params: dict[str, str]) -> list[str]:
    unsupported = UNSUPPORTED_FILTERS.get(integ.scenario, frozenset())
    return [name for name in params if name in unsupported and params[name].strip()]


def _page(model: str, integ: Integration, records: list[dict], seq: int | None, params) -> dict:
    cursor = None if seq is None else encode_cursor(model, integ, seq, params)
    return {"status": "success", "data": {"next": cursor, "results": records}}


def list_applications(integ: Integration, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    params = parse_query(pairs, APPLICATION_PARAMS, "GET /ats/applications")
    if not integ.has_applications:
        raise ApiError(
            "INTEGRATION.MODEL_NOT_AVAILABLE",
            f"The {integ.tool} integration does not offer applications.",
        )
    page_size, after_seq, updated_after, include_deleted, ignore = _common(
        "applications", integ, params
    )
    outcomes = {name: _enum_values(params, name, OUTCOMES) for name in ("outcomes", "outcome")}
    created_after = _optional_timestamp(params, "remote_created_after")
    unsupported = _unsupported(integ, params)
    if unsupported and not ignore:
        return _page("applications", integ, [], None, params)
    wanted_outcomes = [v for k, v in outcomes.items() if v is not None and k not in unsupported]
    listing = _application_listing(
        integ, params, unsupported, wanted_outcomes, created_after, include_deleted
    )
    rows, next_seq = _paginate(integ.app_log, listing, after_seq, updated_after, page_size)
    records = [render.application(integ, row) for row in rows]
    return _page("applications", integ, records, next_seq, params)


def _application_listing(
    integ: Integration,
    params: dict[str, str],
    unsupported: list[str],
    wanted_outcomes: list[set[str]],
    created_after: int | None,
    include_deleted: bool,
) -> Listing:
    """Id-like filters narrow the rows to consider; the others become tests on each row."""
    candidate_sets = _named_rows(integ, params, unsupported)
    predicates: list[Callable[[int], bool]] = []
    if not include_deleted:
        deleted = integ.deleted
        predicates.append(lambda row: row not in deleted)
    for wanted in wanted_outcomes:
        codes = {OUTCOMES.index(o) for o in wanted}
        predicates.append(lambda row, codes=codes: integ.app_outcome[row] in codes)
    if created_after is not None:
        # A recent cut-off names few rows: look them up rather than test every row.
        recent = integ.rows_created_after(created_after, integ.application_count // 8)
        if recent is not None:
            candidate_sets.append(set(recent))
        else:
            created = integ.app_created
            predicates.append(lambda row: created[row] > created_after)
    candidates = set.intersection(*candidate_sets) if candidate_sets else None
    return Listing(candidates, predicates)


def _named_rows(
    integ: Integration, params: dict[str, str], unsupported: list[str]
) -> list[set[int]]:
    """The rows each given id-like filter (ids, remote ids, stages, jobs) allows."""
    named: list[set[int]] = []
    ids = _values(params, "ids")
    if ids is not None:
        named.append({row for row in map(integ.application_row, ids) if row is not None})
    remote_ids = _values(params, "remote_ids")
    if remote_ids is not None:
        rows = map(integ.application_row_by_remote_id, remote_ids)
        named.append({row for row in rows if row is not None})
    stage_ids = None if "current_stage_ids" in unsupported else _values(params, "current_stage_ids")
    if stage_ids is not None:
        stages = {integ.stage_by_id[s] for s in stage_ids if s in integ.stage_by_id}
        stage_of = integ.app_stage
        named.append(
            {r for job, pos in stages for r in integ.jobs[job].members if stage_of[r] == pos}
        )
    job_rows = _job_rows(integ, params)
    if job_rows is not None:
        named.append({r for job in job_rows for r in integ.jobs[job].members})
    return named


def _job_rows(integ: Integration, params: dict[str, str]) -> set[int] | None:
    """Job rows named by `job_ids` and `job_remote_ids` (ANDed when both are given)."""
    result: set[int] | None = None
    job_ids = _values(params, "job_ids")
    if job_ids is not None:
        result = {integ.job_by_id[j] for j in job_ids if j in integ.job_by_id}
    job_remote_ids = _values(params, "job_remote_ids")
    if job_remote_ids is not None:
        rows = {
            int(r) - JOB_REMOTE_BASE
            for r in job_remote_ids
            if r.isdigit() and 0 <= int(r) - JOB_REMOTE_BASE < len(integ.jobs)
        }
        result = rows if result is None else result & rows
    return result


def list_jobs(integ: Integration, pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    params = parse_query(pairs, JOB_PARAMS, "GET /ats/jobs")
    if not integ.has_jobs:
        raise ApiError(
            "INTEGRATION.MODEL_NOT_AVAILABLE", f"The {integ.tool} integration does not offer jobs."
        )
    page_size, after_seq, updated_after, include_deleted, _ = _common("jobs", integ, params)
    jobs = integ.jobs
    predicates: list[Callable[[int], bool]] = []
    if not include_deleted:
        predicates.append(lambda row: jobs[row].deleted_ms is None)
    ids = _values(params, "ids")
    if ids is not None:
        wanted_ids = set(ids)
        predicates.append(lambda row: jobs[row].id in wanted_ids)
    remote_ids = _values(params, "remote_ids")
    if remote_ids is not None:
        wanted_remote = set(remote_ids)
        predicates.append(lambda row: jobs[row].remote_id in wanted_remote)
    codes = _values(params, "job_codes")
    if codes is not None:
        wanted_codes = set(codes)
        predicates.append(lambda row: jobs[row].job_code in wanted_codes)
    if params.get("post_url"):
        url = params["post_url"]
        predicates.append(lambda row: render.post_url(integ, jobs[row]) == url)
    for name in ("status", "statuses"):
        statuses = _enum_values(params, name, JOB_STATUSES)
        if statuses is not None:
            predicates.append(lambda row, statuses=statuses: jobs[row].status in statuses)
    types = _enum_values(params, "employment_types", EMPLOYMENT_TYPES)
    if types is not None:
        predicates.append(lambda row: jobs[row].employment_type in types)
    visibilities = _enum_values(params, "visibilities", VISIBILITIES)
    if visibilities is not None:
        predicates.append(lambda row: jobs[row].visibility in visibilities)
    created_after = _optional_timestamp(params, "remote_created_after")
    if created_after is not None:
        predicates.append(lambda row: jobs[row].created_ms > created_after)
    if params.get("name_contains"):
        needle = params["name_contains"].casefold()
        predicates.append(lambda row: needle in jobs[row].name.casefold())
    rows, next_seq = _paginate(
        integ.job_log, Listing(None, predicates), after_seq, updated_after, page_size
    )
    records = [render.job(integ, jobs[row]) for row in rows]
    return _page("jobs", integ, records, next_seq, params)


# -- writes ----------------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise invalid("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise invalid("The request body must be a JSON object.")
    return payload


def _string(obj: dict[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        need = "is required and must be" if required else "must be"
        raise invalid(f"{where}{name} {need} a non-empty string.")
    return value


def create_application(integ: Integration, job_id: str, body: bytes) -> dict[str, Any]:
    payload = _json_object(body)
    candidate = payload.get("candidate")
    if not isinstance(candidate, dict):
        raise invalid("candidate is required and must be an object.")
    first = _string(candidate, "first_name", "candidate.", required=True)
    last = _string(candidate, "last_name", "candidate.", required=True)
    email = _string(candidate, "email_address", "candidate.", required=True)
    phone = _string(candidate, "phone_number", "candidate.", required=False)
    stage_id = _string(payload, "stage_id", "", required=False)
    if not _EMAIL.match(email or ""):
        raise invalid(f"candidate.email_address is not an e-mail address: {email!r}.")
    try:
        row = integ.create_application(job_id, first, last, email, phone, stage_id)  # type: ignore[arg-type]
    except SimulationError as exc:
        raise ApiError(exc.code, str(exc)) from None
    data = render.application(integ, row, full_candidate=True)
    return {"status": "success", "data": data, "warnings": []}


def set_application_stage(integ: Integration, application_id: str, body: bytes) -> dict[str, Any]:
    payload = _json_object(body)
    stage_id = _string(payload, "stage_id", "", required=True)
    try:
        integ.set_stage(application_id, stage_id)  # type: ignore[arg-type]
    except SimulationError as exc:
        raise ApiError(exc.code, str(exc)) from None
    return {"status": "success", "data": {}, "warnings": []}


def import_tracked_application(integ: Integration, body: bytes) -> dict[str, Any]:
    """Track an application the ATS has and Kombo does not; listed after the next sync."""
    if not integ.supports_import:
        raise ApiError(
            "INTEGRATION.ACTION_NOT_AVAILABLE",
            f"Importing tracked applications is not available for {integ.tool}.",
        )
    payload = _json_object(body)
    if "tracked_at" not in payload:
        raise invalid("tracked_at is required (a timestamp or null).")
    tracked = payload["tracked_at"]
    if tracked is not None and not isinstance(tracked, str):
        raise invalid("tracked_at must be a string or null.")
    tracked_ms = integ.world.now_ms if tracked is None else parse_timestamp("tracked_at", tracked)
    tools = [key for key in payload if key != "tracked_at"]
    if tools != [integ.tool]:
        raise invalid(
            f"The body must name this integration's ATS only ({integ.tool}); got {tools}."
        )
    ids = _import_ids(integ.tool, payload[integ.tool])
    try:
        row = integ.import_application(ids, tracked_ms)
    except SimulationError as exc:
        raise ApiError(exc.code, str(exc)) from None
    data = {
        "id": integ.application_ids.encode(row),
        "tracked_at": render.format_ms(tracked_ms),
        "imported_id": {integ.tool: payload[integ.tool]},
    }
    return {"status": "success", "data": data, "warnings": []}


def _import_ids(tool: str, given: Any) -> dict[str, str]:
    """The id fields of one of the tool's id types, each a non-empty string."""
    where = f"{tool}."
    if not isinstance(given, dict):
        raise invalid(f"{tool} must be an object with an id_type.")
    id_type = _string(given, "id_type", where, required=True)
    shapes = IMPORT_ID_TYPES[tool]
    if id_type not in shapes:
        raise invalid(f"{where}id_type must be one of {sorted(shapes)}, got {id_type!r}.")
    return {name: _string(given, name, where, required=True) for name in shapes[id_type]}  # type: ignore[misc]
