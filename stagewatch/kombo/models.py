"""Kombo records at the boundary: tolerant of growth, strict only where stagewatch depends on a field.

Every field the spec marks nullable is Optional; unknown fields are kept (`extra="allow"`) so the raw
record survives; enums are open (an unknown `outcome` or job `status` is kept as the string given).
A record that cannot be parsed at all becomes a `Quarantined` entry with its reason and raw payload.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from stagewatch.timeutil import ensure_utc

KNOWN_OUTCOMES = ("PENDING", "HIRED", "DECLINED")
KNOWN_JOB_STATUSES = ("OPEN", "CLOSED", "DRAFT", "ARCHIVED")


# Kombo sends UTC with a `Z`; a timestamp without an offset is read as UTC, so every datetime a model
# holds is aware and comparable.
UtcDatetime = Annotated[datetime, AfterValidator(ensure_utc)]
# Ids are the keys stagewatch stores by: an empty one would merge unrelated records.
KomboId = Annotated[str, Field(min_length=1)]


class KomboModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    # The ATS's own payload: parsed like any field, never serialised, so it is never stored.
    # Excluded here, pydantic skips it without an `exclude` argument on every call.
    remote_data: Any = Field(default=None, exclude=True)


class Stage(KomboModel):
    """One stage of a job's pipeline. Stage ids are job-specific."""

    id: KomboId
    remote_id: str | None = None
    name: str | None = None
    index: int | None = Field(
        default=None,
        description="Order in the ATS when it orders stages; may be missing, null or tied.",
    )
    status: str | None = None  # ACTIVE | INACTIVE in newer responses, open enum


class Job(KomboModel):
    id: KomboId
    remote_id: str | None = None
    name: str | None = None
    status: str | None = None  # open enum: OPEN, CLOSED, DRAFT, ARCHIVED or the ATS's raw string
    changed_at: UtcDatetime | None = None
    remote_created_at: UtcDatetime | None = None
    remote_updated_at: UtcDatetime | None = None
    remote_deleted_at: UtcDatetime | None = None
    stages: list[Stage] | None = None

    @field_validator("stages", mode="before")
    @classmethod
    def _drop_null_stages(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [s for s in value if s is not None]
        return value


class CurrentStage(KomboModel):
    id: KomboId
    remote_id: str | None = None
    name: str | None = None
    index: int | None = None
    status: str | None = Field(
        default=None,
        description="ACTIVE or INACTIVE (open enum, kept as given), None when the ATS does not say "
        "or the response predates the field. An application can sit in an INACTIVE stage.",
    )


class JobRef(KomboModel):
    id: KomboId
    remote_id: str | None = None
    name: str | None = None


class Candidate(BaseModel):
    """Only the candidate's name: contact data (emails, phones, links) is dropped at parse time."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class Application(KomboModel):
    id: KomboId
    remote_id: str | None = None
    outcome: str | None = None  # open enum: PENDING, HIRED, DECLINED, None, or a new value as given
    rejection_reason_name: str | None = None
    rejected_at: UtcDatetime | None = None
    current_stage_id: str | None = None
    current_stage: CurrentStage | None = None
    job_id: str | None = None
    job: JobRef | None = None
    candidate_id: str | None = None
    candidate: Candidate | None = None
    changed_at: UtcDatetime | None = None
    remote_created_at: UtcDatetime | None = None
    remote_updated_at: UtcDatetime | None = None
    remote_deleted_at: UtcDatetime | None = None

    @property
    def stage_id(self) -> str | None:
        return self.current_stage.id if self.current_stage else self.current_stage_id

    @property
    def stage_name(self) -> str | None:
        return self.current_stage.name if self.current_stage else None

    @property
    def stage_status(self) -> str | None:
        return self.current_stage.status if self.current_stage else None

    @property
    def effective_job_id(self) -> str | None:
        return self.job_id or (self.job.id if self.job else None)

    @property
    def candidate_name(self) -> str | None:
        if not self.candidate:
            return None
        parts = [p for p in (self.candidate.first_name, self.candidate.last_name) if p]
        return " ".join(parts) or None


class Quarantined(BaseModel):
    """A record that could not be parsed; kept with its reason so one bad record hides nothing."""

    model: str  # "job" | "application"
    record_id: str | None
    reason: str
    raw: Any


M = TypeVar("M", bound=KomboModel)


class Page(BaseModel, Generic[M]):
    """One page of a listing: parsed records, quarantined ones, the cursor to the next page, and
    when Kombo served it (its `Date` header: Kombo's clock, not ours; None without one)."""

    records: list[M]
    quarantined: list[Quarantined] = Field(default_factory=list)
    next_cursor: str | None = None
    served_at: datetime | None = None


CANDIDATE_FIELDS_KEPT = ("id", "first_name", "last_name")


def _record_id(raw: Any) -> str | None:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
        return raw["id"]
    return None


def _without_contact_data(raw: Any) -> Any:
    """The raw record with its candidate cut down to the name, as `Candidate` keeps it."""
    if isinstance(raw, dict) and isinstance(raw.get("candidate"), dict):
        candidate = raw["candidate"]
        return {
            **raw,
            "candidate": {k: candidate[k] for k in CANDIDATE_FIELDS_KEPT if k in candidate},
        }
    return raw


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


@cache
def _list_adapter(model: type[M]) -> TypeAdapter[list[M]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def quarantine(raw: Any, kind: str, reason: str) -> Quarantined:
    """A `Quarantined` entry for `raw`, keeping no candidate contact data."""
    return Quarantined(
        model=kind, record_id=_record_id(raw), reason=reason, raw=_without_contact_data(raw)
    )


def parse_records(
    model: type[M], raw_records: list[Any], kind: str
) -> tuple[list[M], list[Quarantined]]:
    """Parse every record; the unparseable ones are quarantined, the rest kept.

    The whole list is validated in one call first (the common case, and fast); only when that fails
    is each record parsed on its own, so one bad record costs its page a second pass, nothing more.
    """
    try:
        return _list_adapter(model).validate_python(raw_records), []
    except ValidationError:
        return _parse_one_by_one(model, raw_records, kind)


def _parse_one_by_one(
    model: type[M], raw_records: list[Any], kind: str
) -> tuple[list[M], list[Quarantined]]:
    records: list[M] = []
    quarantined: list[Quarantined] = []
    for raw in raw_records:
        if not isinstance(raw, dict):
            quarantined.append(
                quarantine(raw, kind, f"record is {type(raw).__name__}, not an object")
            )
            continue
        try:
            records.append(model.model_validate(raw))
        except ValidationError as exc:
            quarantined.append(quarantine(raw, kind, _reason(exc)))
    return records, quarantined
