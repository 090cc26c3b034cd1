"""The integrity checker: invariants the data must keep, as SQL that selects violations.

Each check (``harness.config.IntegrityCheck``) selects the violating rows: the row id
first, optionally when the row last changed. The checker runs them during the run (time
to detect a corruption) and after it (state after a restore). A check that fails or
outlives its time bound is recorded as not measured, never raised: a damaged database
is exactly when checks misbehave, and the run must still report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg

from harness.config import IntegrityCheck
from harness.stack.postgres import DB_ERRORS


@dataclass(frozen=True)
class CheckResult:
    """One check's violating row ids, each row's ``changed_at`` (when the check selects
    one), or why it could not be measured."""

    name: str
    ids: frozenset[str]
    changed_at: Mapping[str, dt.datetime] = field(default_factory=dict)
    error: str | None = None

    @property
    def earliest_changed_at(self) -> dt.datetime | None:
        return min(self.changed_at.values(), default=None)


@dataclass(frozen=True)
class IntegrityReport:
    """Every check's result at ``t_s`` (seconds on the run's monotonic axis)."""

    t_s: float
    checks: tuple[CheckResult, ...]

    @property
    def violations(self) -> int:
        """Violations summed over the checks (a row breaking two invariants counts twice)."""
        return sum(len(c.ids) for c in self.checks)

    @property
    def violating_ids(self) -> frozenset[str]:
        return frozenset().union(*(c.ids for c in self.checks))

    @property
    def measured(self) -> bool:
        """Every check ran to completion."""
        return all(c.error is None for c in self.checks)

    @property
    def earliest_changed_at(self) -> dt.datetime | None:
        stamps = [c.earliest_changed_at for c in self.checks if c.earliest_changed_at]
        return min(stamps, default=None)

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    def summary(self, sample: int = 10) -> dict[str, object]:
        """``violations`` is None unless every check ran: a check that timed out or failed
        found nothing because it looked at nothing, which is not zero violations."""
        return {
            "violations": self.violations if self.measured else None,
            "unmeasured": sorted(c.name for c in self.checks if c.error is not None),
            "checks": {
                c.name: {
                    "violations": None if c.error is not None else len(c.ids),
                    "sample": sorted(c.ids)[:sample],
                    "error": c.error,
                }
                for c in self.checks
            },
        }


@dataclass(frozen=True)
class IntegrityChecker:
    """Runs ``checks`` on a connection, each query bounded by ``timeout_s`` on both sides:
    the client gives up (and cancels the query) and the server stops it."""

    checks: Sequence[IntegrityCheck]
    timeout_s: float

    async def run(self, conn: asyncpg.Connection, t_s: float) -> IntegrityReport:
        return IntegrityReport(t_s, tuple([await self._run_one(conn, c) for c in self.checks]))

    async def _run_one(self, conn: asyncpg.Connection, check: IntegrityCheck) -> CheckResult:
        try:
            # A read-only transaction per check: a failed check does not poison the next,
            # a check cannot write, and the server-side bound ends with the transaction.
            async with conn.transaction(readonly=True):
                await conn.execute(
                    f"SET LOCAL statement_timeout = {max(1, round(self.timeout_s * 1000))}"
                )
                rows = await conn.fetch(check.sql, timeout=self.timeout_s)
        except (TimeoutError, asyncpg.QueryCanceledError):
            return CheckResult(
                check.name, frozenset(), error=f"timed out after {self.timeout_s:g} s"
            )
        except DB_ERRORS as exc:
            return CheckResult(check.name, frozenset(), error=f"{type(exc).__name__}: {exc}")
        ids = frozenset(str(row[0]) for row in rows)
        stamps = {
            str(row[0]): row[1] for row in rows if len(row) > 1 and isinstance(row[1], dt.datetime)
        }
        return CheckResult(check.name, ids, stamps)


def baseline_ids(reports: Iterable[IntegrityReport], t_fault_s: float) -> dict[str, frozenset[str]]:
    """Each check's violating ids in its last measured result before the fault (a check
    that timed out is never taken for a clean baseline)."""
    baseline: dict[str, frozenset[str]] = {}
    for report in sorted(reports, key=lambda r: r.t_s):
        if report.t_s >= t_fault_s:
            break
        for check in report.checks:
            if check.error is None:
                baseline[check.name] = check.ids
    return baseline


def new_violations(report: IntegrityReport, baseline: dict[str, frozenset[str]]) -> set[str]:
    """Ids a measured check of ``report`` flags that its baseline did not."""
    return {
        i
        for c in report.checks
        if c.error is None
        for i in c.ids - baseline.get(c.name, frozenset())
    }


def first_detection(reports: Iterable[IntegrityReport], t_fault_s: float) -> float | None:
    """``t_s`` of the first report at or after the fault with a violation the baseline did
    not have, or ``None``. A check is compared only where it was measured, so a check
    that timed out is never taken for a detection nor for a clean baseline.
    """
    ordered = sorted(reports, key=lambda r: r.t_s)
    baseline = baseline_ids(ordered, t_fault_s)
    for report in ordered:
        if report.t_s >= t_fault_s and new_violations(report, baseline):
            return report.t_s
    return None


def earliest_new_change(
    report: IntegrityReport, baseline: dict[str, frozenset[str]]
) -> dt.datetime | None:
    """The oldest ``changed_at`` among the rows flagged since the baseline: when the damage
    began, as far as the checks that date their rows can tell."""
    stamps = [
        c.changed_at[i]
        for c in report.checks
        if c.error is None
        for i in c.ids - baseline.get(c.name, frozenset())
        if i in c.changed_at
    ]
    return min(stamps, default=None)
