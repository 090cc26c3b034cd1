"""The write ledger: every acknowledged write, checked against the final primary.

A client that got an acknowledgement believes its write is durable. After
recovery the table on the final primary is read and every ledger entry is
classified; the rows nobody acknowledged are accounted for too. Everything here
is pure: the caller reads the database and hands over what it read.

Times are seconds on the run's monotonic axis. A write's attempt time is taken
before its request is sent and its ack time when the reply arrived, so the
commit happened in between: that is what makes the restore-point test exact, and
why a write is placed before or after an incident by when it was sent, not by when
its reply came (a write committed on the old primary just before it was killed
can be acknowledged a few ms after the kill).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from itertools import chain
from typing import NotRequired, TypedDict


@dataclass(frozen=True)
class AckedWrite:
    id: str
    checksum: str
    t_ack_s: float


def _samples(sets: Mapping[str, Set[str] | None], sample: int) -> dict[str, list[str]]:
    """The first ``sample`` ids (sorted) of every non-empty set, for a person to look up."""
    return {name: sorted(ids)[:sample] for name, ids in sets.items() if ids}


class RestoreBoundaryFigures(TypedDict):
    """``metrics.writes.restore_boundary`` (``RestoreBoundary``)."""

    ok: bool
    violations: int
    acked_before: int
    acked_before_missing: int
    started_after: int
    started_after_present: int
    in_flight: int
    after_restore: int
    samples: dict[str, list[str]]


class WriteFigures(TypedDict):
    """``metrics.writes``: the ledger's classes counted (``WriteLedger.classify``)."""

    acknowledged: int
    attempted: int
    intact: int
    altered: int
    altered_after_incident: int
    lost: int
    lost_after_incident: int
    lost_unintended: int
    lost_discarded_by_restore: int
    lost_deleted_by_fault: int
    phantom: int | None
    unacknowledged_present: int
    duplicate: int
    rows_read: int
    rpo_rows: int
    rpo_s: float
    samples: dict[str, list[str]]
    restore_boundary: NotRequired[RestoreBoundaryFigures]


@dataclass(frozen=True)
class LedgerClassification:
    """The exact id sets of each class (see ``WriteLedger.classify``)."""

    acknowledged: int
    attempted: int
    rows_read: int
    intact: frozenset[str]
    altered: frozenset[str]
    lost: frozenset[str]
    lost_after_incident: frozenset[str]
    altered_after_incident: frozenset[str]
    phantom: frozenset[str] | None
    unacknowledged_present: frozenset[str]
    duplicate: frozenset[str]
    rpo_s: float
    lost_unintended: frozenset[str]
    """Lost writes the scenario did not mean to lose: all of ``lost`` but
    ``lost_discarded_by_restore`` and ``lost_deleted_by_fault``."""
    lost_discarded_by_restore: frozenset[str]
    """Lost writes a point-in-time restore discarded by design (acknowledged after its
    target, sent before it began)."""
    lost_deleted_by_fault: frozenset[str]
    """Lost writes the injected fault deleted on purpose (``intended_lost``), and not
    already counted as discarded by the restore."""

    @property
    def rpo_rows(self) -> int:
        """Lost + altered among writes sent before the incident, except those a restore
        discarded by design (committed after its target: ``rpo_s`` counts that window as
        ``t_incident - target``)."""
        return len(self.lost - self.lost_after_incident - self.lost_discarded_by_restore) + len(
            self.altered - self.altered_after_incident
        )

    def summary(self, sample: int = 10) -> WriteFigures:
        """Counts for result.json, and a few ids of every bad class to look up."""
        bad = {
            "altered": self.altered,
            "lost": self.lost,
            "lost_unintended": self.lost_unintended,
            "phantom": self.phantom,
            "unacknowledged_present": self.unacknowledged_present,
            "duplicate": self.duplicate,
        }
        return {
            "acknowledged": self.acknowledged,
            "attempted": self.attempted,
            "intact": len(self.intact),
            "altered": len(self.altered),
            "altered_after_incident": len(self.altered_after_incident),
            "lost": len(self.lost),
            "lost_after_incident": len(self.lost_after_incident),
            "lost_unintended": len(self.lost_unintended),
            "lost_discarded_by_restore": len(self.lost_discarded_by_restore),
            "lost_deleted_by_fault": len(self.lost_deleted_by_fault),
            "phantom": None if self.phantom is None else len(self.phantom),
            "unacknowledged_present": len(self.unacknowledged_present),
            "duplicate": len(self.duplicate),
            "rows_read": self.rows_read,
            "rpo_rows": self.rpo_rows,
            "rpo_s": self.rpo_s,
            "samples": _samples(bad, sample),
        }


@dataclass(frozen=True)
class RestoreBoundary:
    """How a restore to a restore point matches the ledger (``WriteLedger.restore_boundary``)."""

    acked_before: int
    started_after: int
    in_flight: int
    acked_before_missing: frozenset[str]
    started_after_present: frozenset[str]
    after_restore: int = 0
    """Writes first attempted once the restore began: new history, not judged."""

    @property
    def ok(self) -> bool:
        return not self.acked_before_missing and not self.started_after_present

    def summary(self, sample: int = 10) -> RestoreBoundaryFigures:
        return {
            "ok": self.ok,
            "violations": len(self.acked_before_missing) + len(self.started_after_present),
            "acked_before": self.acked_before,
            "acked_before_missing": len(self.acked_before_missing),
            "started_after": self.started_after,
            "started_after_present": len(self.started_after_present),
            "in_flight": self.in_flight,
            "after_restore": self.after_restore,
            "samples": _samples(
                {
                    "acked_before_missing": self.acked_before_missing,
                    "started_after_present": self.started_after_present,
                },
                sample,
            ),
        }


@dataclass(frozen=True)
class _Found:
    """What the read-back found: the checksums of each id's rows, the ids present (in the
    rows or in the list of every id), those present more than once, and the row count."""

    checksums: dict[str, set[str]]
    present: frozenset[str]
    duplicate: frozenset[str]
    rows_read: int

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str]], all_ids: Iterable[str] | None) -> _Found:
        row_counts: Counter[str] = Counter()
        checksums: dict[str, set[str]] = {}
        for row_id, checksum in rows:
            row_counts[row_id] += 1
            checksums.setdefault(row_id, set()).add(checksum)
        id_counts = Counter(all_ids or ())
        counts = (row_counts, id_counts)
        duplicate = frozenset(i for c in counts for i, n in c.items() if n > 1)
        present = frozenset(row_counts) | frozenset(id_counts)
        return cls(checksums, present, duplicate, sum(row_counts.values()))


def _rpo_s(
    t_incident_s: float | None, oldest_bad_sent_s: float | None, restore_target_s: float | None
) -> float:
    """The age at the incident of the oldest write sent before it and then lost or
    altered, or a restore's window when that is larger; 0 without an incident."""
    if t_incident_s is None:
        return 0.0
    ages = [t_incident_s - t for t in (oldest_bad_sent_s, restore_target_s) if t is not None]
    return max([0.0, *ages])


@dataclass
class WriteLedger:
    """Acknowledged writes by id, the ids of every write attempted, and when each write
    was first attempted (where the caller said)."""

    acked: dict[str, AckedWrite] = field(default_factory=dict)
    attempted: set[str] = field(default_factory=set)
    first_attempt_s: dict[str, float] = field(default_factory=dict)
    last_attempt_s: dict[str, float] = field(default_factory=dict)
    """A retried write's latest send: a retry after a restore began writes on the
    restored database, whatever its first send did."""

    def attempt(self, write_id: str, t_s: float | None = None) -> None:
        """A write is about to be sent; ``t_s`` is taken before sending. The earliest and
        the latest attempt times of a retried write are kept. Without ``t_s`` the write's
        start stays unknown, which only the restore-point test needs (such a write is
        never taken for one that started after the restore point)."""
        self.attempted.add(write_id)
        if t_s is not None:
            first = self.first_attempt_s.get(write_id)
            if first is None or t_s < first:
                self.first_attempt_s[write_id] = t_s
            last = self.last_attempt_s.get(write_id)
            if last is None or t_s > last:
                self.last_attempt_s[write_id] = t_s

    def attempt_time(self, write_id: str) -> float | None:
        """When the write was first attempted, or ``None`` when nobody said."""
        return self.first_attempt_s.get(write_id)

    def ack(self, write_id: str, checksum: str, t_ack_s: float) -> None:
        """A write was acknowledged: it was attempted too. A retried write keeps its
        first acknowledgement. An ack does not stand in for an unknown attempt time: the
        write began at some moment before it, which is all that is known."""
        self.attempted.add(write_id)
        if write_id not in self.acked:
            self.acked[write_id] = AckedWrite(write_id, checksum, t_ack_s)

    def sent_time(self, write_id: str) -> float | None:
        """When the write was sent: its first attempt time, or, when nobody said, its ack
        time (it was sent before that, the best that is known); None if never acked."""
        known = self.first_attempt_s.get(write_id)
        if known is not None:
            return known
        acked = self.acked.get(write_id)
        return None if acked is None else acked.t_ack_s

    def classify(
        self,
        rows: Iterable[tuple[str, str]],
        t_incident_s: float | None,
        *,
        all_ids: Iterable[str] | None = None,
        restore_target_s: float | None = None,
        restore_began_s: float | None = None,
        restore_detached_s: float | None = None,
        intended_lost: Set[str] = frozenset(),
    ) -> LedgerClassification:
        """Compare with ``rows`` = (id, checksum of content) read back from the final primary
        for the ledger's ids (others may come along) and ``all_ids`` = every id in the
        table. ``rows`` decide what became of each acknowledged write (an id that
        ``all_ids`` lists but ``rows`` do not could not be read back: lost); any of the two
        shows an id present, for the unacknowledged, phantom and duplicate classes.

        intact: acknowledged and every copy read has its checksum; altered: present with
        other content; lost: acknowledged and absent; phantom: present but never
        attempted by any client (``None`` without ``all_ids``: not measured);
        unacknowledged_present: attempted, never acknowledged, yet committed (a reply
        lost in the outage); duplicate: ids present more than once.

        Before or after the incident is decided by when a write was sent (``sent_time``:
        its first attempt, else its ack), not when it was acknowledged: a write committed
        on the old primary just before the kill and acknowledged 40 ms after it is a write
        of before the incident, and losing it is data loss the RPO must count.
        ``lost_after_incident`` and ``altered_after_incident`` are those sent at or after
        the incident; ``rpo_rows`` (lost + altered) are the others. Without an incident
        time every write counts as before it.

        ``rpo_s`` is the age at the incident (from its send time) of the oldest write sent
        before it and then lost or altered (0 when none). For a point-in-time restore
        (``restore_target_s``), the restore discarded the committed history between its
        target and the incident by design, so ``rpo_s`` is ``t_incident - restore_target_s``
        (0 for a target at or after the incident), or the ledger's figure above when that
        is larger: a restore that lost even older writes lost more than its window.

        ``lost_discarded_by_restore``: the lost writes a restore to ``restore_target_s``
        that began at ``restore_began_s`` discarded on purpose: acknowledged after the
        target (committed after it) and sent before the restore began (a write sent later
        went to the restored database: losing it is not the restore's design; so did a write
        sent again after it began, whatever its first send). Without
        ``restore_began_s`` every write counts as sent before the restore; a write's send
        time is ``sent_time``. When the restore says when it had stopped every server
        (``restore_detached_s``), that decides instead: a write acknowledged after the target
        and by then was acknowledged by the history the restore discards (even one sent after
        the restore began, before the servers stopped); one acknowledged later was
        acknowledged by the restored database. ``lost_deleted_by_fault``: the other lost writes among
        ``intended_lost``, the ids the scenario's injected fault deleted on purpose (a
        corrupting tool's deletions). ``lost_unintended`` is every other lost write, the one
        figure of acknowledged writes lost that the scenario did not mean to lose: without
        a restore and without ``intended_lost`` it is ``lost``. The three never overlap and
        together are ``lost``.
        """
        found = _Found.of(rows, all_ids)
        checksums = found.checksums
        phantom = None if all_ids is None else frozenset(found.present - self.attempted)

        intact: set[str] = set()
        altered: set[str] = set()
        lost: set[str] = set()
        after_incident: set[str] = set()
        discarded: set[str] = set()
        began = float("inf") if restore_began_s is None else restore_began_s
        oldest_bad_sent_s: float | None = None
        for write in self.acked.values():
            sent_s = self.first_attempt_s.get(write.id, write.t_ack_s)
            before = t_incident_s is None or sent_s < t_incident_s
            if not before:
                after_incident.add(write.id)
            if write.id not in checksums:
                lost.add(write.id)
                last_sent_s = self.last_attempt_s.get(write.id, sent_s)
                on_the_old_history = (
                    last_sent_s < began
                    if restore_detached_s is None
                    else write.t_ack_s <= restore_detached_s
                )
                if (
                    restore_target_s is not None
                    and write.t_ack_s > restore_target_s
                    and on_the_old_history
                ):
                    discarded.add(write.id)
            elif checksums[write.id] != {write.checksum}:
                altered.add(write.id)
            else:
                intact.add(write.id)
            if before and write.id not in intact and write.id not in discarded:
                if oldest_bad_sent_s is None or sent_s < oldest_bad_sent_s:
                    oldest_bad_sent_s = sent_s

        deleted = (lost & set(intended_lost)) - discarded
        return LedgerClassification(
            acknowledged=len(self.acked),
            attempted=len(self.attempted),
            rows_read=found.rows_read,
            intact=frozenset(intact),
            altered=frozenset(altered),
            lost=frozenset(lost),
            lost_after_incident=frozenset(lost & after_incident),
            altered_after_incident=frozenset(altered & after_incident),
            phantom=phantom,
            unacknowledged_present=frozenset(
                i for i in found.present if i in self.attempted and i not in self.acked
            ),
            duplicate=found.duplicate,
            rpo_s=_rpo_s(t_incident_s, oldest_bad_sent_s, restore_target_s),
            lost_unintended=frozenset(lost - discarded - deleted),
            lost_discarded_by_restore=frozenset(discarded),
            lost_deleted_by_fault=frozenset(deleted),
        )

    def restore_boundary(
        self,
        present_ids: Iterable[str],
        t_start_s: float,
        t_end_s: float,
        restore_began_s: float | None = None,
    ) -> RestoreBoundary:
        """The exact test of a restore to a restore point created during
        [``t_start_s``, ``t_end_s``], given the ids present after the restore.

        A write acknowledged at or before ``t_start_s`` committed before the restore point
        existed: it must be present. A write first attempted at or after ``t_end_s``, and
        never sent again once ``restore_began_s`` had come, committed after it: it must be
        absent. A write sent (or retried) after the restore began is new history, made on
        the restored database (``after_restore``): an unanswered write retried once the
        servers are back may commit there. Every other write was in flight at that instant
        (started before ``t_end_s``, or at an unknown time, and acknowledged after
        ``t_start_s`` or never) and may be either; they are only counted (``in_flight``).
        """
        if t_end_s < t_start_s:
            raise ValueError(
                f"restore point window ends ({t_end_s}) before it starts ({t_start_s})"
            )
        present = set(present_ids)
        acked_before = {w.id for w in self.acked.values() if w.t_ack_s <= t_start_s}
        began = float("inf") if restore_began_s is None else restore_began_s
        after_restore = {
            i for i, t_s in self.last_attempt_s.items() if t_s >= began and i not in acked_before
        }
        started_after = {
            i
            for i, t_s in self.first_attempt_s.items()
            if t_s >= t_end_s and i not in acked_before and i not in after_restore
        }
        return RestoreBoundary(
            acked_before=len(acked_before),
            started_after=len(started_after),
            in_flight=len(self.attempted)
            - len(acked_before)
            - len(started_after)
            - len(after_restore),
            acked_before_missing=frozenset(acked_before - present),
            started_after_present=frozenset(started_after & present),
            after_restore=len(after_restore),
        )


@dataclass(frozen=True)
class RecordGaps:
    """Ledger records that never arrived (``record_gaps``).

    ``missing``: per worker with a gap, how many of its sequence numbers are missing.
    ``unfinished``: the workers that never sent their final count (every one of them,
    gap or not: their last records may be missing and nothing can tell how many).
    """

    missing: dict[str, int]
    unfinished: frozenset[str]

    @property
    def any(self) -> bool:
        """Some records are, or may be, missing: the ledger is incomplete."""
        return bool(self.missing) or bool(self.unfinished)

    @property
    def total_missing(self) -> int:
        return sum(self.missing.values())

    def describe(self) -> str:
        """One line for a person: e.g. ``3 records of load-1 missing; load-2 never sent
        its final count``."""
        parts = [
            f"{n} record{'s' if n != 1 else ''} of {worker} missing"
            for worker, n in sorted(self.missing.items())
        ]
        parts += [f"{worker} never sent its final count" for worker in sorted(self.unfinished)]
        return "; ".join(parts) or "none missing"

    def summary(self) -> dict[str, object]:
        """For result.json."""
        return {
            "missing": self.total_missing,
            "by_worker": dict(sorted(self.missing.items())),
            "unfinished": sorted(self.unfinished),
        }


def record_gaps(
    seqs_by_worker: Mapping[str, Iterable[int]], final_counts: Mapping[str, int | None]
) -> RecordGaps:
    """Which workers' ledger records did not all arrive. Every worker numbers its records
    0, 1, 2, ... and at its end says how many it sent (``final_counts``); a record lost on
    the way (a worker killed mid-batch, a dropped message) would take its acknowledged
    writes out of the ledger, and the ledger would then under-count what was lost.

    For each worker: the numbers in 0..final_count-1 not seen, or, when its final count
    is ``None`` or absent (it never sent its final batch), the numbers in 0..max seen not
    seen; such a worker is also in ``unfinished``, since what came after its last record
    seen cannot be known. Numbers outside that range (repeats, or beyond a final count)
    are not gaps and are not counted.
    """
    missing: dict[str, int] = {}
    unfinished: set[str] = set()
    for worker in chain(seqs_by_worker, (w for w in final_counts if w not in seqs_by_worker)):
        seen = set(seqs_by_worker.get(worker, ()))
        final = final_counts.get(worker)
        if final is None:
            unfinished.add(worker)
            final = max(seen, default=-1) + 1
        gap = final - sum(1 for seq in seen if 0 <= seq < final)
        if gap:
            missing[worker] = gap
    return RecordGaps(missing, frozenset(unfinished))
