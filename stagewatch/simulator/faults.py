"""Seeded fault injection: what Kombo and the load balancers in front of it do on a bad day."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Kinds answered instead of the request (the world is not touched).
RATE_LIMIT = "rate-limit"  # 429 envelope with Retry-After
RATE_LIMIT_NO_RETRY_AFTER = "rate-limit-no-retry-after"  # 429 envelope, only ratelimit-reset
HTML_500 = "html-500"  # a load balancer's HTML page
EMPTY_502 = "empty-502"
UNAVAILABLE_503 = "unavailable-503"  # REMOTE.SERVICE_UNAVAILABLE envelope
# Kinds where the request is served but the answer does not arrive intact.
TIMEOUT = "timeout"  # slower than the client's read timeout
DISCONNECT = "disconnect"  # connection dropped mid-body
TRUNCATED = "truncated"  # 200 with half a JSON body

# Kinds where a listing page arrives intact but its records are not what they should be. Only asked
# for by name: they test what stagewatch concludes from a listing, not how it survives transport.
SKIP_RECORD = "skip-record"  # a page without one of its records, as if it moved while paged
BAD_RECORD = "bad-record"  # a page with one record whose timestamp no parser accepts

REFUSING_KINDS = (RATE_LIMIT, RATE_LIMIT_NO_RETRY_AFTER, HTML_500, EMPTY_502, UNAVAILABLE_503)
DELIVERY_KINDS = (TIMEOUT, DISCONNECT, TRUNCATED)
RECORD_KINDS = (SKIP_RECORD, BAD_RECORD)
FAULT_KINDS = REFUSING_KINDS + DELIVERY_KINDS  # the default: every transport fault
ALL_FAULT_KINDS = FAULT_KINDS + RECORD_KINDS

DEFAULT_RETRY_AFTER_SECONDS = 2
DEFAULT_SLOW_SECONDS = 60.0


@dataclass(frozen=True)
class FaultConfig:
    """Fail a `rate` share of Kombo requests with one of `kinds`, chosen by a seeded RNG.

    `slow_seconds` is how late a `timeout` answer comes; it only becomes a timeout when it
    exceeds the client's read timeout (the in-process transport raises `httpx.ReadTimeout`
    without sleeping; over HTTP the server really waits).
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS
    slow_seconds: float = DEFAULT_SLOW_SECONDS

    def __post_init__(self) -> None:
        if not (isinstance(self.rate, int | float) and 0.0 <= self.rate <= 1.0):
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate!r}")
        kinds = tuple(self.kinds)
        unknown = [k for k in kinds if k not in ALL_FAULT_KINDS]
        if unknown:
            raise ValueError(
                f"unknown fault kind(s) {unknown}; choose from {list(ALL_FAULT_KINDS)}"
            )
        if self.rate and not kinds:
            raise ValueError("a fault rate above 0 needs at least one fault kind")
        if self.retry_after_seconds < 0:
            raise ValueError("retry_after_seconds must be >= 0")
        if not math.isfinite(self.slow_seconds) or self.slow_seconds < 0:
            raise ValueError("slow_seconds must be a finite number >= 0")
        object.__setattr__(self, "kinds", kinds)

    @classmethod
    def parse_kinds(cls, text: str) -> tuple[str, ...]:
        """`"timeout,html-500"` -> kinds; blank means every transport kind."""
        kinds = tuple(k.strip() for k in text.split(",") if k.strip())
        return kinds or FAULT_KINDS

    @classmethod
    def none(cls) -> FaultConfig:
        return cls(rate=0.0)
