"""The ledger and the integrity checker against known damage, in a real Postgres.

Rows are written for real, damaged by SQL in exact, known sets, read back from the
database the way a run reads them (the scenario's default ``read_sql`` and
``all_ids_sql``, the reference invariants), and every set the harness reports must
equal the damage done: no false negatives, no false positives. A property-based test
does the same for random damage patterns and awkward ids.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config import REFERENCE_INTEGRITY_CHECKS, IntegrityCheck, LedgerConfig
from harness.mcp_client.writes import note_checksum
from harness.measure.integrity import (
    CheckResult,
    IntegrityChecker,
    IntegrityReport,
    first_detection,
)
from harness.measure.ledger import LedgerClassification, WriteLedger
from harness.stack.local import LocalStack

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""

SCHEMA = """
CREATE TABLE notes (
    id text PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    checksum text NULL,
    parent_id text NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
"""The reference server's notes table, without its trigger (a corrupting tool bypasses it)."""

T = TypeVar("T")


@dataclass(frozen=True)
class Note:
    id: str
    title: str
    body: str
    parent_id: str | None
    t_ack_s: float | None  # None: attempted, never acknowledged (its reply was lost)


@dataclass
class Damage:
    """Disjoint sets of written ids, each damaged one way, and phantom rows."""

    altered: set[str] = field(default_factory=set)  # content changed, checksum column kept
    bad_checksum: set[str] = field(default_factory=set)  # checksum column changed only
    blank_title: set[str] = field(default_factory=set)  # title blanked, checksum recomputed
    dangling: set[str] = field(default_factory=set)  # parent_id points at no row
    deleted: set[str] = field(default_factory=set)
    phantoms: list[Note] = field(default_factory=list)  # rows no client attempted


@dataclass
class Db:
    runner: asyncio.Runner
    conn: asyncpg.Connection
    commit_timestamps: bool

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)


@pytest.fixture(scope="module")
def db(local_stack: LocalStack) -> Iterator[Db]:
    """A database of this module's own, with the reference notes table, and one connection."""
    name = f"checker_truth_{uuid.uuid4().hex[:12]}"
    cluster = local_stack.clusters["primary"]
    runner = asyncio.Runner()

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(cluster.dsn(), timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    runner.run(admin(f"CREATE DATABASE {name}"))
    try:
        conn = runner.run(asyncpg.connect(cluster.dsn(database=name), timeout=10))
        runner.run(conn.execute(SCHEMA))
        on = runner.run(conn.fetchval("SHOW track_commit_timestamp")) == "on"
        yield Db(runner, conn, on)
        runner.run(conn.close())
    finally:
        runner.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        runner.close()


def reference_checks(db: Db) -> list[IntegrityCheck]:
    """The reference invariants; without track_commit_timestamp on this cluster their
    ``changed_at`` column cannot be had, so it is NULL (the id sets are the same)."""
    if db.commit_timestamps:
        return list(REFERENCE_INTEGRITY_CHECKS)
    return [
        IntegrityCheck(
            name=c.name,
            sql=re.sub(r"pg_xact_commit_timestamp\([^)]*\)", "NULL::timestamptz", c.sql),
        )
        for c in REFERENCE_INTEGRITY_CHECKS
    ]


SEND_BEFORE_ACK_S = 0.05
"""Each test write is sent this long before its acknowledgement."""


async def write(conn: asyncpg.Connection, notes: list[Note], ledger: WriteLedger) -> None:
    """Insert every note for real, recording each in the ledger as a client would."""
    await conn.execute("TRUNCATE notes")
    for note in notes:
        ledger.attempt(note.id, None if note.t_ack_s is None else note.t_ack_s - SEND_BEFORE_ACK_S)
    await conn.copy_records_to_table(
        "notes",
        records=[
            (n.id, n.title, n.body, note_checksum(n.title, n.body), n.parent_id) for n in notes
        ],
        columns=["id", "title", "body", "checksum", "parent_id"],
    )
    for note in notes:
        if note.t_ack_s is not None:
            ledger.ack(note.id, note_checksum(note.title, note.body), note.t_ack_s)


async def damage(conn: asyncpg.Connection, d: Damage) -> None:
    async with conn.transaction():
        await conn.execute(
            "UPDATE notes SET body = body || ' (tampered)' WHERE id = ANY($1::text[])",
            list(d.altered),
        )
        await conn.execute(
            "UPDATE notes SET checksum = repeat('0', 64) WHERE id = ANY($1::text[])",
            list(d.bad_checksum),
        )
        await conn.execute(
            "UPDATE notes SET title = '  ', checksum = encode(sha256(convert_to("
            "'  ' || E'\\n' || body, 'UTF8')), 'hex') WHERE id = ANY($1::text[])",
            list(d.blank_title),
        )
        await conn.execute(
            "UPDATE notes SET parent_id = 'missing:' || id WHERE id = ANY($1::text[])",
            list(d.dangling),
        )
        await conn.execute("DELETE FROM notes WHERE id = ANY($1::text[])", list(d.deleted))
        await conn.executemany(
            "INSERT INTO notes (id, title, body, checksum, parent_id) VALUES ($1, $2, $3, $4, $5)",
            [(p.id, p.title, p.body, note_checksum(p.title, p.body), None) for p in d.phantoms],
        )


async def read_back(
    conn: asyncpg.Connection, ledger: WriteLedger, checker: IntegrityChecker, t_incident_s: float
) -> tuple[LedgerClassification, IntegrityReport]:
    """What a run reports: the scenario's default read-back queries and the checker."""
    config = LedgerConfig()
    assert config.all_ids_sql is not None
    rows = [
        (str(r[0]), hashlib.sha256(str(r[1]).encode()).hexdigest())
        for r in await conn.fetch(config.read_sql, sorted(ledger.attempted))
    ]
    all_ids = [str(r[0]) for r in await conn.fetch(config.all_ids_sql)]
    classified = ledger.classify(rows, t_incident_s, all_ids=all_ids)
    return classified, await checker.run(conn, t_s=time.monotonic())


def assert_exact(
    notes: list[Note],
    d: Damage,
    t_incident_s: float,
    classified: LedgerClassification,
    report: IntegrityReport,
) -> None:
    """Every reported set equals the damage done, computed from the notes and damage."""
    acked = {n.id for n in notes if n.t_ack_s is not None}
    unacked = {n.id for n in notes} - acked
    changed = d.altered | d.blank_title
    assert classified.altered == changed & acked
    assert classified.lost == d.deleted & acked
    assert classified.intact == acked - changed - d.deleted
    # Before or after the incident by when a write was sent (SEND_BEFORE_ACK_S before its ack).
    sent_s = {n.id: n.t_ack_s - SEND_BEFORE_ACK_S for n in notes if n.t_ack_s is not None}
    late = {i for i, t_s in sent_s.items() if t_s >= t_incident_s}
    assert classified.lost_after_incident == d.deleted & late
    assert classified.altered_after_incident == changed & late
    assert classified.phantom == {p.id for p in d.phantoms}
    assert classified.unacknowledged_present == unacked - d.deleted
    assert classified.duplicate == frozenset()
    assert classified.rows_read == len(notes) - len(d.deleted)
    bad_before = (changed | d.deleted) & acked - late
    assert classified.rpo_rows == len(bad_before)
    oldest_s = min((sent_s[i] for i in bad_before), default=t_incident_s)
    assert classified.rpo_s == t_incident_s - oldest_s
    assert report.measured, report.summary()
    assert report.check("checksum").ids == d.altered | d.bad_checksum
    assert report.check("title_not_blank").ids == d.blank_title
    orphans = {
        n.id
        for n in notes
        if n.parent_id in d.deleted and n.id not in d.deleted and n.id not in d.dangling
    }
    assert report.check("parent_exists").ids == d.dangling | orphans


def reference_notes(n: int) -> list[Note]:
    notes = []
    for i in range(n):
        parent = f"note-{i // 2:03d}" if i % 3 == 1 else None
        acked = None if i % 10 == 9 else float(i)
        notes.append(Note(f"note-{i:03d}", f"title {i}", f"body {i}\nline two", parent, acked))
    return notes


def test_known_damage_is_reported_exactly(db: Db) -> None:
    notes = reference_notes(60)
    ledger = WriteLedger()
    db.run(write(db.conn, notes, ledger))
    checker = IntegrityChecker(reference_checks(db), timeout_s=5.0)
    clean_ledger, clean = db.run(read_back(db.conn, ledger, checker, t_incident_s=30.0))
    assert clean.violations == 0 and clean.measured
    assert clean_ledger.intact == set(ledger.acked) and clean_ledger.rpo_rows == 0

    d = Damage(
        altered={"note-002", "note-031", "note-047", "note-019"},  # 019: attempted, never acked
        bad_checksum={"note-005", "note-040"},
        blank_title={"note-010", "note-033"},
        dangling={"note-013", "note-050"},
        deleted={"note-003", "note-020", "note-035", "note-029"},  # parents of 007, 040, 058
        phantoms=[Note("ghost-1", "g", "g", None, None), Note("ghost-2", "h", "h", None, None)],
    )
    before_damage = dt.datetime.now(dt.UTC)
    db.run(damage(db.conn, d))
    classified, report = db.run(read_back(db.conn, ledger, checker, t_incident_s=30.0))
    assert_exact(notes, d, 30.0, classified, report)
    # spelled out once, for a reader:
    assert classified.altered == {"note-002", "note-031", "note-047", "note-010", "note-033"}
    assert classified.lost == {"note-003", "note-020", "note-035"}
    unacked_present = {"note-009", "note-019", "note-039", "note-049", "note-059"}
    assert classified.unacknowledged_present == unacked_present  # 029 deleted
    # 013, 050 dangling; 007, 040, 058 children of the deleted 003, 020, 029
    assert report.check("parent_exists").ids == {
        "note-013",
        "note-050",
        "note-007",
        "note-040",
        "note-058",
    }
    assert classified.rpo_rows == 4  # 002, 010, 003, 020 acked before 30 s
    assert classified.rpo_s == pytest.approx(28.05)  # oldest: note-002 sent at 1.95 s
    assert report.violations == 6 + 2 + 5
    summary = report.summary(sample=2)
    assert summary["checks"]["checksum"] == {  # type: ignore[index]
        "violations": 6,
        "sample": ["note-002", "note-005"],
        "error": None,
    }
    if db.commit_timestamps:
        changed_at = report.check("checksum").earliest_changed_at
        assert changed_at is not None and changed_at >= before_damage - dt.timedelta(seconds=1)
    t_fault = clean.t_s + 0.001
    assert first_detection([clean, report], t_fault) == report.t_s
    assert first_detection([clean, clean], t_fault) is None


def test_a_check_that_times_out_or_fails_is_recorded_not_raised(db: Db) -> None:
    checker = IntegrityChecker(
        [
            IntegrityCheck(name="slow", sql="SELECT 'x' FROM pg_sleep(2)"),
            IntegrityCheck(name="broken", sql="SELECT id FROM no_such_table"),
            IntegrityCheck(name="blank", sql="SELECT id FROM notes WHERE btrim(title) = ''"),
        ],
        timeout_s=0.5,
    )
    started = time.monotonic()
    report = db.run(checker.run(db.conn, t_s=1.0))
    assert time.monotonic() - started < 1.8
    assert not report.measured
    assert report.check("slow").error == "timed out after 0.5 s"
    assert report.check("slow").ids == frozenset()
    assert "no_such_table" in (report.check("broken").error or "")
    assert report.check("blank").error is None  # the connection survived both
    assert report.summary()["checks"]["broken"]["violations"] is None  # type: ignore[index]
    assert report.summary()["violations"] is None
    assert db.run(db.conn.fetchval("SELECT 1")) == 1


def _report(t_s: float, **checks: set[str] | str) -> IntegrityReport:
    """A report by hand: a set of violating ids per check, or an error message."""
    return IntegrityReport(
        t_s,
        tuple(
            CheckResult(name, frozenset(), error=v)
            if isinstance(v, str)
            else CheckResult(name, frozenset(v))
            for name, v in checks.items()
        ),
    )


def test_first_detection_needs_a_violation_the_baseline_did_not_have() -> None:
    reports = [
        _report(1.0, a={"old"}, b=set()),
        _report(2.0, a={"old"}, b="timed out after 5 s"),
        _report(3.0, a={"old"}, b="timed out after 5 s"),  # not measured: no detection
        _report(4.0, a={"new"}, b=set()),  # a different row, the same count
        _report(5.0, a={"old", "new"}, b={"x"}),
    ]
    assert first_detection(reports, t_fault_s=2.0) == 4.0
    assert first_detection(reports, t_fault_s=4.5) == 5.0
    assert first_detection(reports[:3], t_fault_s=2.0) is None
    assert first_detection(reports, t_fault_s=9.0) is None
    # a check that timed out before the fault leaves its last measured baseline in place
    assert (
        first_detection([_report(1.0, b={"x"}), _report(2.0, b="err"), _report(3.0, b={"x"})], 1.5)
        is None
    )
    # no baseline at all: any violation after the fault is new
    assert first_detection([_report(3.0, a={"old"})], 2.0) == 3.0


def test_report_figures() -> None:
    report = _report(7.0, a={"r1", "r2"}, b={"r2"}, c="boom")
    assert report.violations == 3
    assert report.violating_ids == {"r1", "r2"}
    assert not report.measured
    # A check that did not run found nothing because it looked at nothing: not zero.
    assert report.summary(sample=1) == {
        "violations": None,
        "unmeasured": ["c"],
        "checks": {
            "a": {"violations": 2, "sample": ["r1"], "error": None},
            "b": {"violations": 1, "sample": ["r2"], "error": None},
            "c": {"violations": None, "sample": [], "error": "boom"},
        },
    }


def test_earliest_new_change_dates_only_damage_since_the_baseline() -> None:
    import datetime as dt

    from harness.measure.integrity import CheckResult, IntegrityReport, earliest_new_change

    old, new = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    report = IntegrityReport(
        9.0,
        (
            CheckResult("a", frozenset({"pre", "post"}), {"pre": old, "post": new}),
            CheckResult("b", frozenset({"undated"})),
            CheckResult("c", frozenset(), error="timed out"),
        ),
    )
    assert earliest_new_change(report, {"a": frozenset({"pre"})}) == new
    assert earliest_new_change(report, {}) == old
    assert earliest_new_change(report, {"a": frozenset({"pre", "post"})}) is None


# Ids and text with quotes, backslashes, spaces, newlines, unicode: anything but NUL and
# lone surrogates, which a PostgreSQL text value cannot hold.
odd_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("'\"\\ %_\n\t,;{}[]()é中😀\u200b")),
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    ),
    max_size=8,
)
KINDS = ("intact", "altered", "bad_checksum", "blank_title", "dangling", "deleted")


@st.composite
def damaged_tables(draw: st.DrawFn) -> tuple[list[Note], Damage]:
    n = draw(st.integers(min_value=5, max_value=50))
    notes: list[Note] = []
    d = Damage()
    for i in range(n):
        note_id = f"n{i}:{draw(odd_text)}"
        parent = draw(st.none() | st.integers(0, i - 1)) if i else None
        acked = draw(st.booleans() | st.just(True))
        notes.append(
            Note(
                note_id,
                f"t{draw(odd_text)}",
                draw(odd_text),
                None if parent is None else notes[parent].id,
                float(i) if acked else None,
            )
        )
        kind = draw(st.sampled_from(KINDS))
        if kind != "intact":
            getattr(d, kind).add(note_id)
    for j in range(draw(st.integers(0, 4))):
        d.phantoms.append(
            Note(f"p{j}:{draw(odd_text)}", f"t{draw(odd_text)}", draw(odd_text), None, None)
        )
    return notes, d


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    case=damaged_tables(),
    # acks are at whole seconds: an incident on one of them tests the boundary
    t_incident_s=st.integers(0, 50).map(float) | st.floats(0.0, 50.0),
)
def test_random_damage_is_reported_exactly(
    db: Db, case: tuple[list[Note], Damage], t_incident_s: float
) -> None:
    notes, d = case
    ledger = WriteLedger()
    checker = IntegrityChecker(reference_checks(db), timeout_s=5.0)

    async def go() -> tuple[LedgerClassification, IntegrityReport]:
        await write(db.conn, notes, ledger)
        await damage(db.conn, d)
        return await read_back(db.conn, ledger, checker, t_incident_s)

    classified, report = db.run(go())
    assert_exact(notes, d, t_incident_s, classified, report)
