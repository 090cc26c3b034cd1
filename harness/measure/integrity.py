"""The integrity checker: invariants the data must keep, as SQL that selects violations.

Each check (``harness.config.IntegrityCheck``) selects the violating rows: the row id
first, optionally when the row last changed. The checker runs them during the run (time
to detect a corruption) and after it (state after a restore). A check that fails or
outlives its time bound is recorded as not measured, never raised: a damaged database
is exactly when checks misbehave, and the run must still report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg

from harness.config import IntegrityCheck


@dataclass(frozen=True)
class CheckResult:
    """One check's violating row ids, the earliest ``changed_at`` among them (when the
    check selects one), or why it could not be measured."""

    name: str
    ids: frozenset[str]
    earliest_changed_at: dt.datetime | None = None
    error: str | None = None


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
        return {
            "violations": self.violations,
            "checks": {
                c.name: {
                    "violations": len(c.ids),
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
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            return CheckResult(check.name, frozenset(), error=f"{type(exc).__name__}: {exc}")
        ids = frozenset(str(row[0]) for row in rows)
        stamps = [row[1] for row in rows if len(row) > 1 and isinstance(row[1], dt.datetime)]
        return CheckResult(check.name, ids, min(stamps, default=None))


def first_detection(reports: Iterable[IntegrityReport], t_fault_s: float) -> float | None:
    """``t_s`` of the first report at or after the fault with a violation the baseline did
    not have, or ``None``. The baseline of each check is its last measured result before
    the fault (none: no violations); a check is compared only where it was measured, so a
    check that timed out is never taken for a detection nor for a clean baseline.
    """
    baseline: dict[str, frozenset[str]] = {}
    for report in sorted(reports, key=lambda r: r.t_s):
        for check in report.checks:
            if check.error is not None:
                continue
            if report.t_s < t_fault_s:
                baseline[check.name] = check.ids
            elif check.ids - baseline.get(check.name, frozenset()):
                return report.t_s
    return None


def detected_of_injected(report: IntegrityReport, injected_ids: Iterable[str]) -> dict[str, int]:
    """How many of the rows a fault damaged the checks found, and how many they missed."""
    injected = set(injected_ids)
    found = report.violating_ids
    return {
        "injected": len(injected),
        "detected": len(injected & found),
        "missed": len(injected - found),
    }
