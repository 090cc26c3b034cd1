"""The write ledger's classes, RPO and restore-point test, on hand-made ledgers."""

from __future__ import annotations

import pytest

from harness.measure.ledger import WriteLedger


def test_ledger_classifies_every_kind_and_rpo() -> None:
    ledger = WriteLedger()
    ledger.ack("a", "sum-a", 1.0)
    ledger.ack("b", "sum-b", 2.0)
    ledger.ack("c", "sum-c", 3.0)
    ledger.ack("d", "sum-d", 12.0)  # after the incident
    ledger.attempt("e")  # never acknowledged
    rows = [("a", "sum-a"), ("b", "tampered"), ("e", "sum-e"), ("x", "sum-x"), ("x", "sum-x")]
    result = ledger.classify(rows, t_incident_s=10.0, all_ids=["a", "b", "e", "x", "x"])
    assert result.intact == {"a"}
    assert result.altered == {"b"}
    assert result.lost == {"c", "d"}
    assert result.lost_after_incident == {"d"}
    assert result.altered_after_incident == frozenset()
    assert result.unacknowledged_present == {"e"}
    assert result.phantom == {"x"}
    assert result.duplicate == {"x"}
    report = result.summary()
    assert report["acknowledged"] == 4
    assert report["attempted"] == 5
    assert report["rows_read"] == 5
    assert (report["intact"], report["altered"], report["lost"]) == (1, 1, 2)
    assert report["lost_after_incident"] == 1
    assert (report["unacknowledged_present"], report["phantom"], report["duplicate"]) == (1, 1, 1)
    assert report["rpo_rows"] == 2  # b altered + c lost
    assert report["rpo_s"] == pytest.approx(8.0)  # incident 10 s - oldest bad ack 2 s
    assert report["samples"] == {
        "altered": ["b"],
        "lost": ["c", "d"],
        "phantom": ["x"],
        "unacknowledged_present": ["e"],
        "duplicate": ["x"],
    }


def test_ledger_without_losses_has_zero_rpo() -> None:
    ledger = WriteLedger()
    ledger.ack("a", "s", 1.0)
    ledger.ack("a", "s", 1.5)  # an idempotent retry keeps the first ack
    report = ledger.classify([("a", "s")], t_incident_s=5.0).summary()
    assert (report["acknowledged"], report["rpo_rows"], report["rpo_s"]) == (1, 0, 0.0)
    assert report["samples"] == {}
    assert ledger.acked["a"].t_ack_s == 1.0


def test_phantoms_are_not_measured_without_every_id() -> None:
    ledger = WriteLedger()
    ledger.ack("a", "s", 1.0)
    result = ledger.classify([("a", "s"), ("stranger", "t")], t_incident_s=None)
    assert result.phantom is None
    assert result.summary()["phantom"] is None
    assert result.intact == {"a"}


def test_ack_without_attempt_counts_as_attempted() -> None:
    ledger = WriteLedger()
    ledger.ack("a", "s", 1.0)
    result = ledger.classify([("a", "s")], None, all_ids=["a"])
    assert ledger.attempted == {"a"}
    assert result.phantom == frozenset()
    assert result.unacknowledged_present == frozenset()
    assert "a" not in ledger.first_attempt_s  # its start is not known, only its ack


def test_attempt_keeps_the_earliest_known_time() -> None:
    ledger = WriteLedger()
    ledger.attempt("a")
    ledger.attempt("a", 3.0)
    ledger.attempt("a", 2.0)
    ledger.attempt("a", 4.0)
    ledger.attempt("a")
    assert ledger.first_attempt_s == {"a": 2.0}
    assert ledger.attempt_time("a") == 2.0
    ledger.ack("b", "s", 5.0)
    assert ledger.attempt_time("b") is None


def test_without_incident_every_write_counts_before_it() -> None:
    ledger = WriteLedger()
    ledger.ack("a", "s", 1.0)
    ledger.ack("b", "s", 50.0)
    result = ledger.classify([("b", "other")], t_incident_s=None)
    assert result.lost == {"a"}
    assert result.altered == {"b"}
    assert result.lost_after_incident == frozenset()
    assert result.rpo_rows == 2
    assert result.rpo_s == 0.0  # no incident: no age to measure


def test_ack_at_the_incident_counts_after_it() -> None:
    ledger = WriteLedger()
    ledger.ack("a", "s", 10.0)
    ledger.ack("b", "s", 10.0)
    result = ledger.classify([("b", "changed")], t_incident_s=10.0)
    assert result.lost_after_incident == {"a"}
    assert result.altered_after_incident == {"b"}
    assert (result.rpo_rows, result.rpo_s) == (0, 0.0)


def test_duplicate_copies_with_one_changed_are_altered() -> None:
    ledger = WriteLedger()
    ledger.ack("a", "s", 1.0)
    ledger.ack("b", "s", 1.0)
    result = ledger.classify([("a", "s"), ("a", "other"), ("b", "s"), ("b", "s")], 5.0)
    assert result.altered == {"a"}
    assert result.intact == {"b"}
    assert result.duplicate == {"a", "b"}
    assert result.rows_read == 4


def test_duplicates_seen_only_in_every_id() -> None:
    ledger = WriteLedger()
    ledger.attempt("u", 0.5)
    result = ledger.classify([], 5.0, all_ids=["u", "u", "p", "p", "q"])
    assert result.duplicate == {"u", "p"}
    assert result.phantom == {"p", "q"}
    assert result.unacknowledged_present == {"u"}


def test_listed_but_not_read_back_is_lost() -> None:
    ledger = WriteLedger()
    ledger.ack("a", "s", 1.0)
    result = ledger.classify([], 5.0, all_ids=["a"])
    assert result.lost == {"a"}
    assert result.phantom == frozenset()


def test_restore_target_sets_the_rpo_window() -> None:
    ledger = WriteLedger()
    ledger.ack("old", "s", 1.0)
    ledger.ack("discarded", "s", 7.0)
    ledger.ack("after", "s", 12.0)
    rows = [("old", "s")]
    result = ledger.classify(rows, t_incident_s=10.0, restore_target_s=6.0)
    assert result.lost == {"discarded", "after"}
    assert result.lost_after_incident == {"after"}
    assert result.rpo_rows == 1
    assert result.rpo_s == pytest.approx(4.0)  # the restore's window, not 10 - 7
    # nothing before the incident lost: the window is still what the restore discarded
    assert ledger.classify(rows + [("discarded", "s")], 10.0, restore_target_s=6.0).rpo_s == 4.0
    # a target at or after the incident discards no history before it
    assert ledger.classify(rows + [("discarded", "s")], 10.0, restore_target_s=11.0).rpo_s == 0.0
    # a restore that lost older writes than its target lost more than its window
    assert ledger.classify([], 10.0, restore_target_s=6.0).rpo_s == pytest.approx(9.0)
    assert ledger.classify([], None, restore_target_s=6.0).rpo_s == 0.0


def test_summary_samples_are_sorted_and_bounded() -> None:
    ledger = WriteLedger()
    for i in range(30):
        ledger.ack(f"w{i:02d}", "s", 1.0)
    report = ledger.classify([], 5.0).summary(sample=3)
    assert report["samples"] == {"lost": ["w00", "w01", "w02"]}
    assert report["lost"] == 30


def _restore_ledger() -> WriteLedger:
    """Writes around a restore point created during [10, 11]."""
    ledger = WriteLedger()
    ledger.attempt("before", 8.0)
    ledger.ack("before", "s", 9.0)  # committed before the restore point: must be present
    ledger.attempt("at-start", 9.5)
    ledger.ack("at-start", "s", 10.0)  # acked exactly at the start: committed before it
    ledger.attempt("spanning", 9.9)
    ledger.ack("spanning", "s", 10.5)  # in flight
    ledger.attempt("never-acked", 10.2)  # in flight
    ledger.attempt("unknown-start")
    ledger.ack("unknown-start", "s", 12.0)  # began at some time before 12: in flight
    ledger.attempt("at-end", 11.0)  # began when the restore point existed: must be absent
    ledger.attempt("after", 12.0)
    ledger.ack("after", "s", 12.5)  # must be absent
    ledger.attempt("after-unacked", 13.0)  # must be absent
    return ledger


def test_restore_boundary_exact() -> None:
    ledger = _restore_ledger()
    good = ledger.restore_boundary(["before", "at-start", "spanning"], 10.0, 11.0)
    assert good.ok
    assert (good.acked_before, good.started_after, good.in_flight) == (2, 3, 3)
    assert good.summary()["samples"] == {}

    bad = ledger.restore_boundary(
        ["at-start", "never-acked", "unknown-start", "at-end", "after-unacked"], 10.0, 11.0
    )
    assert not bad.ok
    assert bad.acked_before_missing == {"before"}
    assert bad.started_after_present == {"at-end", "after-unacked"}
    summary = bad.summary()
    assert summary["ok"] is False
    assert summary["acked_before_missing"] == 1
    assert summary["started_after_present"] == 2
    assert summary["violations"] == 3
    assert summary["in_flight"] == 3
    assert summary["samples"] == {
        "acked_before_missing": ["before"],
        "started_after_present": ["after-unacked", "at-end"],
    }


def test_restore_boundary_rejects_a_reversed_window() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        WriteLedger().restore_boundary([], 11.0, 10.0)


def test_writes_after_the_restore_began_are_new_history_not_judged() -> None:
    ledger = WriteLedger()
    ledger.attempt("old", 1.0)
    ledger.ack("old", "c", 2.0)
    ledger.attempt("discarded", 6.0)
    ledger.ack("discarded", "c", 6.5)
    ledger.attempt("new", 12.0)
    ledger.ack("new", "c", 12.5)
    boundary = ledger.restore_boundary({"old", "new"}, 5.0, 5.1, restore_began_s=10.0)
    assert boundary.ok
    assert (boundary.acked_before, boundary.started_after, boundary.after_restore) == (1, 1, 1)
    assert boundary.in_flight == 0
    judged_forever = ledger.restore_boundary({"old", "new"}, 5.0, 5.1)
    assert judged_forever.started_after_present == {"new"}
