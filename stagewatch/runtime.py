"""Interpreter settings for the stretch of a sync where several threads share the GIL.

A listing runs up to four threads: one waits for Kombo, one parses, the caller's stages, and the
stager's worker writes to SQLite. Only one holds the GIL at a time, and one that has been waiting
(for the network, or for SQLite) gets it back only when the holder lets go.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# While a listing runs, a thread whose wait is over gets the GIL back within this many seconds
# instead of CPython's default 5 ms (see `listing_runtime`).
LISTING_SWITCH_INTERVAL = 0.0005

_listing_lock = threading.Lock()
_listings = 0
_switch_saved = 0.0


@contextmanager
def listing_runtime(interval: float = LISTING_SWITCH_INTERVAL) -> Iterator[None]:
    """Tune the interpreter while any listing in this process runs; the first listing to enter
    sets both, the last to leave restores them, so concurrent integrations share one setting.

    - The heap is frozen (`gc.freeze`). A listing allocates millions of short-lived objects; each
      full GC pass they trigger would also walk everything already on the heap (Prefect's
      objects). Frozen objects are only skipped by the collector, never freed.
    - CPython's thread switch interval is shortened. Parsing and serialising hold the GIL for long
      stretches, and a thread whose response has arrived, or whose SQLite statement has finished,
      waits for the holder to let go: up to the switch interval. (docs/performance.md)
    """
    global _listings, _switch_saved
    with _listing_lock:
        if _listings == 0:
            gc.freeze()
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, _switch_saved))
        _listings += 1
    try:
        yield
    finally:
        with _listing_lock:
            _listings -= 1
            if _listings == 0:
                sys.setswitchinterval(_switch_saved)
                gc.unfreeze()
