"""The listing's progress artifact: updated every few pages, never more than once per interval."""

from __future__ import annotations

import tasks.steps
from tasks.steps import ListingProgress


def test_progress_updates_follow_pages_and_are_spaced_in_time(monkeypatch):
    calls = []
    monkeypatch.setattr(
        tasks.steps,
        "create_progress_artifact",
        lambda progress, description: calls.append(("create", progress)) or "artifact-1",
    )
    monkeypatch.setattr(
        tasks.steps,
        "update_progress_artifact",
        lambda artifact_id, progress, description=None: calls.append((artifact_id, progress)),
    )
    now = [100.0]
    progress = ListingProgress(
        "greenhouse:x", lambda: 1000, every=2, min_seconds=5.0, monotonic=lambda: now[0]
    )
    for pages, seconds in ((1, 0), (2, 1), (3, 1), (4, 1), (6, 1), (8, 2), (10, 1), (12, 4)):
        now[0] += seconds
        progress(pages, pages * 50)
    progress.finish()
    # Page 2 creates it (t=101); 4 and 6 come too soon; 8 is 5 s later (t=106); 10 too soon;
    # 12 is 5 s after 8; odd pages never update; the end says 100%.
    assert calls == [
        ("create", 10.0),
        ("artifact-1", 40.0),
        ("artifact-1", 60.0),
        ("artifact-1", 100.0),
    ]


def test_the_last_update_states_the_whole_listing(monkeypatch):
    descriptions = []
    monkeypatch.setattr(
        tasks.steps,
        "create_progress_artifact",
        lambda progress, description: descriptions.append((progress, description)) or "a-1",
    )
    monkeypatch.setattr(
        tasks.steps,
        "update_progress_artifact",
        lambda artifact_id, progress, description=None: descriptions.append(
            (progress, description)
        ),
    )
    progress = ListingProgress("greenhouse:x", None, every=20, min_seconds=0.0)
    for pages in range(1, 31):
        progress(pages, pages * 10)
    progress.finish()
    assert descriptions == [
        (100.0 * 20 / 70, "greenhouse:x: 20 pages, 200 applications listed so far"),
        (100.0, "greenhouse:x: done, 30 pages, 300 applications listed"),
    ]
