"""Expected flow failures leave no engine traceback in a deployed run's logs (issue 17)."""

import logging

from prefect.exceptions import ParameterTypeError

from flows.sync import SyncFailed


def record(exc: BaseException | None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord(
        "prefect.flow_runs", logging.ERROR, __file__, 1, "Engine execution exited", (), exc_info
    )


def test_told_failures_are_dropped_and_everything_else_kept():
    for name in ("prefect.flow_runs", "prefect.engine"):
        logger = logging.getLogger(name)
        assert not logger.filter(record(SyncFailed("1 of 4 failed: x (y)", [])))
        assert not logger.filter(record(ParameterTypeError("bad id")))
        assert logger.filter(record(RuntimeError("a bug")))
        assert logger.filter(record(None))
