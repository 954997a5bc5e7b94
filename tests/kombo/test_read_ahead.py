"""`read_ahead`: the listing's worker thread keeps order, raises where the error happened, and stops;
`listing_runtime`: what a listing tunes is restored by the last one to end."""

from __future__ import annotations

import gc
import sys
import threading

import pytest

from stagewatch.fetch import read_ahead
from stagewatch.runtime import listing_runtime


def test_items_arrive_in_order_from_another_thread():
    threads = []

    def items():
        for number in range(50):
            threads.append(threading.current_thread().name)
            yield number

    assert list(read_ahead(items(), depth=3)) == list(range(50))
    assert set(threads) == {"stagewatch-read-ahead"}


def test_the_worker_stays_at_most_depth_items_ahead():
    produced = []
    pause = threading.Event()  # never set: only waited on

    def items():
        for number in range(10):
            produced.append(number)
            yield number

    listing = read_ahead(items(), depth=2)
    assert next(listing) == 0
    # The worker fills the hand-off (2 items) and holds one more, waiting for room.
    for _ in range(200):
        if len(produced) == 4:
            break
        pause.wait(0.01)
    assert produced == [0, 1, 2, 3]
    listing.close()


def test_an_error_is_raised_after_the_items_before_it():
    def items():
        yield "page 1"
        yield "page 2"
        raise ConnectionError("Kombo went away")

    listing = read_ahead(items())
    assert next(listing) == "page 1"
    assert next(listing) == "page 2"
    with pytest.raises(ConnectionError, match="Kombo went away"):
        next(listing)


def test_stopping_early_closes_the_source_in_the_worker_before_returning():
    closed_in = []

    def items():
        try:
            yield from range(1000)
        finally:
            closed_in.append(threading.current_thread().name)

    listing = read_ahead(items(), depth=2)
    assert [next(listing), next(listing)] == [0, 1]
    listing.close()
    assert closed_in == ["stagewatch-read-ahead"]
    assert not any(t.name == "stagewatch-read-ahead" for t in threading.enumerate())


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be at least 1, not 0"):
        list(read_ahead([1], depth=0))


def test_the_listing_runtime_holds_while_any_listing_runs_and_is_restored_after():
    interval, frozen = sys.getswitchinterval(), gc.get_freeze_count()
    with listing_runtime(0.001):
        assert sys.getswitchinterval() == pytest.approx(0.001)
        assert gc.get_freeze_count() > frozen
        with pytest.raises(RuntimeError), listing_runtime(0.001):  # a second integration's listing
            raise RuntimeError("it fails")
        # The first one still lists: nothing is restored under it.
        assert sys.getswitchinterval() == pytest.approx(0.001)
        assert gc.get_freeze_count() > frozen
    assert (sys.getswitchinterval(), gc.get_freeze_count()) == (interval, frozen)
