"""Reviewer labels for change-log rows and their counts."""

from stagewatch.report import label_counts, labels_from_kinds
from tests.report.factories import event


def test_label_counts_split_outcomes():
    events = [
        event("outcome_changed", to_outcome="HIRED"),
        event("outcome_changed", to_outcome="DECLINED"),
        event("outcome_changed", to_outcome="ON_HOLD"),
        event("deleted"),
    ]
    assert label_counts(events) == {
        "hired": 1,
        "declined": 1,
        "outcome changed": 1,
        "deleted": 1,
    }


def test_labels_from_kind_counts_read_only_the_outcome_changes():
    outcomes = [
        event("outcome_changed", to_outcome="HIRED"),
        event("outcome_changed", to_outcome="DECLINED"),
        event("outcome_changed", to_outcome="ON_HOLD"),
    ]
    kinds = {"first_seen": 5, "stage_changed": 2, "outcome_changed": 3, "deleted": 0}
    assert list(labels_from_kinds(kinds, outcomes).items()) == [
        ("hired", 1),
        ("declined", 1),
        ("stage moved", 2),
        ("outcome changed", 1),
        ("first seen", 5),
    ]
