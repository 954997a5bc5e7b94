"""A store driven through five full runs with a known timeline, for the analytics tests.

Runs are observed at H0, H24, H48, H96 and H120 (hours after 2026-01-05 09:00 UTC). job-1 has four
stages with indices 0-3; job-2 has a tied index (Y and Z share 1) and a stage without one (W);
job-3 lists no stages at all, its applications carry their own.
"""

from __future__ import annotations

from datetime import UTC, datetime

from stagewatch.store import Store
from tests.test_store_fixtures import Runner, application, job

H0 = "2026-01-05T09:00:00.000Z"
H24 = "2026-01-06T09:00:00.000Z"
H48 = "2026-01-07T09:00:00.000Z"
H96 = "2026-01-09T09:00:00.000Z"
H120 = "2026-01-10T09:00:00.000Z"
A_CREATED = "2026-01-03T09:00:00.000Z"
D_CREATED = "2026-01-05T21:00:00.000Z"
AS_OF = datetime(2026, 1, 10, 21, 0, tzinfo=UTC)  # H132

APPLIED, SCREEN, ONSITE = (
    ("st-applied", "Applied"),
    ("st-screen", "Phone screen"),
    ("st-onsite", "Onsite"),
)
X, Y, Z, W = ("st-x", "X"), ("st-y", "Y"), ("st-z", "Z"), ("st-w", "W")
FREE, NEXT = ("st-free", "Free stage"), ("st-next", "Next stage")
TIED = (("st-x", "X", 0), ("st-y", "Y", 1), ("st-z", "Z", 1), ("st-w", "W", None))
DELETED = {"remote_deleted_at": "2026-01-09T08:00:00Z"}


def _a(stage, outcome="PENDING"):
    return application("app-a", stage, outcome, remote_created_at=A_CREATED)


def _d(outcome="PENDING"):
    return application("app-d", APPLIED, outcome, remote_created_at=D_CREATED)


def _c():
    return application("app-c", SCREEN, "DECLINED")


def _e(stage):
    return application("app-e", stage, job_id="job-2")


def _f(stage):
    return application("app-f", stage, job_id="job-2")


def _g(stage):
    return application("app-g", stage, job_id="job-3")


RUNS = [
    (
        0,
        [
            _a(APPLIED),
            application("app-b", APPLIED),
            _c(),
            _e(X),
            _f(X),
            _g(FREE),
            application("app-h", SCREEN),
        ],
    ),
    (
        24,
        [
            _a(SCREEN),
            application("app-b", APPLIED),
            _c(),
            _d(),
            _e(Y),
            _f(W),
            _g(NEXT),
            application("app-h", SCREEN),
        ],
    ),
    (
        48,
        [
            _a(APPLIED),
            application("app-b", ONSITE),
            _c(),
            _d("HIRED"),
            _e(Z),
            _f(W),
            _g(NEXT),
            application("app-h", X, job_id="job-2"),
        ],
    ),
    (
        96,
        [
            _a(ONSITE),
            application("app-b", ONSITE, **DELETED),
            _c(),
            _d("HIRED"),
            _e(Z),
            _f(W),
            _g(NEXT),
            application("app-h", X, job_id="job-2"),
        ],
    ),
    (
        120,
        [
            _a(ONSITE, "HIRED"),
            application("app-b", ONSITE, **DELETED),
            _c(),
            _d("HIRED"),
            _e(Z),
            _f(W),
            _g(NEXT),
            application("app-h", X, job_id="job-2"),
        ],
    ),
]


def build(store: Store, runs=RUNS) -> Runner:
    runner = Runner(store)
    for number, (hours, apps) in enumerate(runs):
        jobs = [job(), job("job-2", TIED), job("job-3", ())] if number == 0 else ()
        runner.run(apps, hours=hours, jobs=jobs)
    return runner
