"""The write ledger's classes, RPO and restore-point test, on hand-made ledgers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.measure.ledger import RecordGaps, WriteLedger, record_gaps


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
    assert (report["lost_unintended"], report["lost_discarded_by_restore"]) == (2, 0)
    assert report["lost_deleted_by_fault"] == 0
    assert (report["unacknowledged_present"], report["phantom"], report["duplicate"]) == (1, 1, 1)
    assert report["rpo_rows"] == 2  # b altered + c lost
    assert report["rpo_s"] == pytest.approx(8.0)  # incident 10 s - oldest bad ack 2 s
    assert report["samples"] == {
        "altered": ["b"],
        "lost": ["c", "d"],
        "lost_unintended": ["c", "d"],
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
    assert result.rpo_rows == 0  # "discarded" is the restore's window, counted in rpo_s
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
    assert report["samples"] == {
        "lost": ["w00", "w01", "w02"],
        "lost_unintended": ["w00", "w01", "w02"],
    }
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


def test_a_write_retried_after_the_restore_began_is_new_history() -> None:
    """Seen in a real pitr_restore run: first sent after the restore point, unanswered
    when the restore stopped the servers, sent again with the same id once they were
    back, committed on the restored database. Not a write that survived the restore."""
    ledger = WriteLedger()
    ledger.attempt("retried", 12.0)
    ledger.attempt("retried", 15.6)
    ledger.ack("retried", "c", 16.1)
    ledger.attempt("lost-in-restore", 12.5)
    boundary = ledger.restore_boundary({"retried"}, 10.0, 11.0, restore_began_s=14.8)
    assert boundary.ok, boundary
    assert (boundary.started_after, boundary.after_restore, boundary.in_flight) == (1, 1, 0)
    ledger.attempt("resurrected", 12.2)
    ledger.ack("resurrected", "c", 12.4)
    bad = ledger.restore_boundary({"retried", "resurrected"}, 10.0, 11.0, restore_began_s=14.8)
    assert bad.started_after_present == {"resurrected"}


def test_a_write_retried_after_the_restore_and_then_lost_is_never_excused() -> None:
    """First sent before the restore, sent again after it began, acknowledged by the
    restored database and then missing: the restore's design does not explain it."""
    ledger = WriteLedger()
    ledger.attempt("in-window", 12.0)
    ledger.ack("in-window", "c", 12.3)
    ledger.attempt("retried", 12.5)
    ledger.attempt("retried", 15.6)
    ledger.ack("retried", "c", 16.1)
    classified = ledger.classify([], 13.0, restore_target_s=10.0, restore_began_s=14.8, all_ids=[])
    assert classified.lost_discarded_by_restore == {"in-window"}
    assert classified.lost_unintended == {"retried"}


def test_a_write_sent_before_the_incident_and_acked_after_it_counts_in_the_rpo() -> None:
    """Committed on the old primary just before the kill, acknowledged 40 ms after it, and
    lost with the old primary: data lost from before the incident (by its ack time, it
    was taken for a write of after the incident, outside rpo_rows and rpo_s)."""
    ledger = WriteLedger()
    ledger.attempt("old", 1.0)
    ledger.ack("old", "s", 1.01)
    ledger.attempt("straddling", 9.98)
    ledger.ack("straddling", "s", 10.04)
    ledger.attempt("after", 10.5)
    ledger.ack("after", "s", 10.6)
    result = ledger.classify([("old", "s")], t_incident_s=10.0)
    assert result.lost == {"straddling", "after"}
    assert result.lost_after_incident == {"after"}
    assert result.rpo_rows == 1
    assert result.rpo_s == pytest.approx(0.02)  # from its send time, not its ack (-0.04)
    # Without its attempt time the ack time is all that is known.
    unknown = WriteLedger()
    unknown.ack("straddling", "s", 10.04)
    assert unknown.classify([], 10.0).lost_after_incident == {"straddling"}
    assert unknown.sent_time("straddling") == 10.04
    assert ledger.sent_time("straddling") == 9.98
    assert ledger.sent_time("never") is None


def test_altered_before_or_after_the_incident_by_send_time_too() -> None:
    ledger = WriteLedger()
    ledger.attempt("a", 9.9)
    ledger.ack("a", "s", 10.1)
    result = ledger.classify([("a", "changed")], 10.0)
    assert result.altered_after_incident == frozenset()
    assert (result.rpo_rows, result.rpo_s) == (1, pytest.approx(0.1))


def test_without_a_restore_every_lost_write_is_unintended() -> None:
    ledger = WriteLedger()
    ledger.attempt("late", 12.0)
    ledger.ack("late", "s", 12.1)  # well after the incident: lost all the same
    ledger.ack("early", "s", 2.0)
    result = ledger.classify([], t_incident_s=10.0)
    assert result.lost_unintended == result.lost == {"late", "early"}
    assert result.lost_discarded_by_restore == frozenset()
    summary = result.summary()
    assert (summary["lost_unintended"], summary["lost_discarded_by_restore"]) == (2, 0)


def test_a_restore_discards_on_purpose_only_writes_after_its_target_sent_before_it_began() -> None:
    """Restore to the target 6 s, begun at 12 s, after an incident at 10 s."""
    ledger = WriteLedger()
    ledger.attempt("before-target", 4.0)
    ledger.ack("before-target", "s", 5.0)  # committed before the target: must survive
    ledger.attempt("at-target", 5.5)
    ledger.ack("at-target", "s", 6.0)  # acknowledged at the target: committed by then
    ledger.attempt("after-target", 5.9)
    ledger.ack("after-target", "s", 7.0)  # committed after the target: discarded
    ledger.attempt("before-restore", 11.0)
    ledger.ack("before-restore", "s", 11.5)  # on the old history: discarded
    ledger.attempt("straddling-restore", 11.99)
    ledger.ack("straddling-restore", "s", 12.3)  # sent before the restore began
    ledger.attempt("after-restore", 13.0)
    ledger.ack("after-restore", "s", 13.2)  # on the restored database: must survive
    ledger.ack("unknown-start", "s", 12.5)  # sent at some time before 12.5: not excused
    ledger.attempt("kept", 13.5)
    ledger.ack("kept", "s", 13.6)
    result = ledger.classify(
        [("kept", "s")], t_incident_s=10.0, restore_target_s=6.0, restore_began_s=12.0
    )
    assert result.lost_discarded_by_restore == {
        "after-target",
        "before-restore",
        "straddling-restore",
    }
    assert result.lost_unintended == {
        "before-target",
        "at-target",
        "after-restore",
        "unknown-start",
    }
    assert result.lost == result.lost_unintended | result.lost_discarded_by_restore
    summary = result.summary()
    assert (summary["lost"], summary["lost_unintended"], summary["lost_discarded_by_restore"]) == (
        7,
        4,
        3,
    )
    assert summary["samples"] == {
        "lost": sorted(result.lost),
        "lost_unintended": ["after-restore", "at-target", "before-target", "unknown-start"],
    }
    assert result.lost_deleted_by_fault == frozenset()
    # Without the restore's start every write counts as sent before it.
    unbounded = ledger.classify([("kept", "s")], 10.0, restore_target_s=6.0)
    assert unbounded.lost_unintended == {"before-target", "at-target"}


def test_a_write_the_old_history_acknowledged_after_the_restore_began_is_discarded() -> None:
    """Seen in a real run: the restore began at 20.001 s; a write sent at 20.003 s was
    acknowledged at 20.014 s by the old primary (the servers were not stopped yet) and then
    discarded with everything after the target. Losing it is the restore's design. What
    decides is which history acknowledged it: the servers were all stopped at 20.5 s."""
    ledger = WriteLedger()
    ledger.attempt("during-stop", 20.003)
    ledger.ack("during-stop", "s", 20.014)  # the old primary's: discarded by design
    ledger.attempt("retried-after", 19.9)
    ledger.attempt("retried-after", 25.0)
    ledger.ack("retried-after", "s", 25.1)  # the restored database's: must survive
    ledger.attempt("before-target", 9.0)
    ledger.ack("before-target", "s", 9.5)  # before the target: must survive
    ledger.attempt("kept", 26.0)
    ledger.ack("kept", "s", 26.1)
    rows = [("kept", "s")]
    known = ledger.classify(
        rows, 11.0, restore_target_s=10.0, restore_began_s=20.001, restore_detached_s=20.5
    )
    assert known.lost_discarded_by_restore == {"during-stop"}
    assert known.lost_unintended == {"retried-after", "before-target"}
    # Without the moment the servers stopped, the send time decides, as before.
    unknown = ledger.classify(rows, 11.0, restore_target_s=10.0, restore_began_s=20.001)
    assert unknown.lost_unintended == {"during-stop", "retried-after", "before-target"}


def test_writes_the_fault_deletes_on_purpose_are_not_unintended() -> None:
    """A corrupting tool deletes two acknowledged rows by design; a third loss is not its."""
    ledger = WriteLedger()
    for write_id, t_s in (("deleted-1", 1.0), ("deleted-2", 2.0), ("other", 3.0), ("kept", 4.0)):
        ledger.attempt(write_id, t_s)
        ledger.ack(write_id, "s", t_s + 0.1)
    result = ledger.classify(
        [("kept", "s")], 10.0, intended_lost={"deleted-1", "deleted-2", "kept", "never-acked"}
    )
    assert result.lost == {"deleted-1", "deleted-2", "other"}
    assert result.lost_deleted_by_fault == {"deleted-1", "deleted-2"}  # only lost ones
    assert result.lost_unintended == {"other"}
    assert result.rpo_rows == 3  # still data lost before the incident
    summary = result.summary()
    assert (summary["lost_unintended"], summary["lost_deleted_by_fault"]) == (1, 2)
    # A write both discarded by a restore and deleted by the fault counts once, as discarded.
    both = ledger.classify(
        [], 10.0, restore_target_s=2.5, restore_began_s=20.0, intended_lost={"deleted-2", "other"}
    )
    assert both.lost_discarded_by_restore == {"other", "kept"}
    assert both.lost_deleted_by_fault == {"deleted-2"}
    assert both.lost_unintended == {"deleted-1"}


def test_record_gaps_per_worker() -> None:
    gaps = record_gaps(
        {"w1": [0, 1, 2, 3], "w2": [0, 2, 2, 5], "w3": [1, 3], "w4": [0, 1, 9]},
        {"w1": 4, "w2": 7, "w3": None, "w4": 2, "w5": 3, "w6": None},
    )
    # w2: 1, 3, 4, 6 missing; w3: no final count, 0 and 2 missing up to its highest (3);
    # w4: 9 is beyond its final count, not a gap; w5: sent 3, none arrived;
    # w6: no final count and nothing seen.
    assert gaps == RecordGaps({"w2": 4, "w3": 2, "w5": 3}, frozenset({"w3", "w6"}))
    assert gaps.any and gaps.total_missing == 9
    assert gaps.summary() == {
        "missing": 9,
        "by_worker": {"w2": 4, "w3": 2, "w5": 3},
        "unfinished": ["w3", "w6"],
    }
    # A worker seen but absent from the final counts never sent its final batch.
    assert record_gaps({"w7": [0, 1]}, {}) == RecordGaps({}, frozenset({"w7"}))
    assert gaps.describe() == (
        "4 records of w2 missing; 2 records of w3 missing; 3 records of w5 missing; "
        "w3 never sent its final count; w6 never sent its final count"
    )
    assert record_gaps({"w1": [1]}, {"w1": 2}).describe() == "1 record of w1 missing"
    complete = record_gaps({"w1": iter([1, 0])}, {"w1": 2, "w2": 0})
    assert complete == RecordGaps({}, frozenset()) and not complete.any
    assert complete.describe() == "none missing"


@st.composite
def histories(draw: st.DrawFn) -> tuple[WriteLedger, list[tuple[str, str]], dict[str, str]]:
    """Writes with an attempt time (or none), an ack time after it (or no ack), and a fate
    in the final rows; returns the ledger, the rows and each acknowledged write's fate."""
    ledger = WriteLedger()
    rows: list[tuple[str, str]] = []
    fates: dict[str, str] = {}
    writes = draw(
        st.lists(
            st.tuples(
                st.none() | st.integers(0, 2000),
                st.none() | st.integers(0, 300),
                st.sampled_from(["present", "absent", "altered", "twice", "twice-altered"]),
            ),
            max_size=60,
        )
    )
    for n, (attempt, took, fate) in enumerate(writes):
        write_id = f"w{n}"
        attempt_s = None if attempt is None else attempt / 100
        ledger.attempt(write_id, attempt_s)
        if took is not None:
            ledger.ack(write_id, "sum", ((attempt or 0) + took) / 100)
            fates[write_id] = fate
        if fate in ("present", "twice", "twice-altered"):
            rows.append((write_id, "sum"))
        if fate in ("altered", "twice", "twice-altered"):
            rows.append((write_id, "sum" if fate == "twice" else "other"))
    return ledger, rows, fates


@settings(max_examples=300, deadline=None)
@given(
    history=histories(),
    incident=st.none() | st.integers(0, 2300).map(lambda t: t / 100),
    target=st.none() | st.integers(0, 2300).map(lambda t: t / 100),
    began=st.none() | st.integers(0, 2300).map(lambda t: t / 100),
    intended=st.sets(st.integers(0, 70).map(lambda n: f"w{n}")),
)
def test_every_acknowledged_write_is_in_exactly_one_class_and_every_loss_is_counted(
    history: tuple[WriteLedger, list[tuple[str, str]], dict[str, str]],
    incident: float | None,
    target: float | None,
    began: float | None,
    intended: set[str],
) -> None:
    ledger, rows, fates = history
    result = ledger.classify(
        rows, incident, restore_target_s=target, restore_began_s=began, intended_lost=intended
    )
    plain = ledger.classify(rows, incident, restore_target_s=target, restore_began_s=began)
    acked = set(ledger.acked)
    classes = (result.intact, result.altered, result.lost)
    assert set().union(*classes) == acked
    assert sum(len(c) for c in classes) == len(acked)  # disjoint
    assert result.lost == {i for i, fate in fates.items() if fate == "absent"}
    assert result.altered == {i for i, f in fates.items() if f in ("altered", "twice-altered")}
    # Every lost write is unintended or discarded by the restore, never both, never neither;
    # with writes the fault deletes on purpose, those are a third class.
    assert plain.lost_unintended | plain.lost_discarded_by_restore == plain.lost
    assert not plain.lost_unintended & plain.lost_discarded_by_restore
    assert plain.lost_deleted_by_fault == frozenset()
    parts = (
        result.lost_unintended,
        result.lost_discarded_by_restore,
        result.lost_deleted_by_fault,
    )
    assert set().union(*parts) == result.lost
    assert sum(len(p) for p in parts) == len(result.lost)
    assert result.lost_deleted_by_fault <= intended
    assert not result.lost_unintended & intended
    if target is None:
        assert plain.lost_unintended == plain.lost
        assert result.lost_unintended == result.lost - intended
    for write_id in result.lost_discarded_by_restore:
        sent = ledger.sent_time(write_id)
        assert target is not None and sent is not None
        assert ledger.acked[write_id].t_ack_s > target and (began is None or sent < began)
    # Every lost or altered write is in the RPO (sent before the incident), after it, or
    # discarded by a restore by design (rpo_s counts that as the restore's window).
    after = result.lost_after_incident | result.altered_after_incident
    discarded_before = result.lost_discarded_by_restore - after
    assert result.rpo_rows + len(after) + len(discarded_before) == len(result.lost) + len(
        result.altered
    )
    for write_id in acked:
        sent = ledger.sent_time(write_id)
        assert sent is not None
        assert (write_id in after) == (
            write_id in result.lost | result.altered and incident is not None and sent >= incident
        )
    assert result.rpo_s >= 0.0
    counts = {k: v for k, v in plain.summary().items() if isinstance(v, int)}
    assert counts["lost"] == counts["lost_unintended"] + counts["lost_discarded_by_restore"]
    assert counts["intact"] + counts["altered"] + counts["lost"] == counts["acknowledged"]
