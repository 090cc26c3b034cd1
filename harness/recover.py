"""Recovery from damaged data, as a scenario scripts it.

Redundancy does not survive corruption: the replica copies the bad rows. What
does is a base backup, the WAL archive and a restore that was tested. During a
run ``IntegrityWatch`` checks the primary's invariants every few seconds (the
time to detect); ``Restorer`` then restores the stack to the
scenario's target, each step timed by the stack, and rebuilds the replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from harness import Say
from harness.config import LedgerConfig, RestoreConfig, restore_target_time
from harness.measure.clock import RunClock
from harness.measure.integrity import (
    IntegrityChecker,
    IntegrityReport,
    baseline_ids,
    earliest_new_change,
    first_detection,
)
from harness.measure.ledger import WriteLedger
from harness.measure.readback import read_written
from harness.stack import (
    RestoreFailed,
    RestorePoint,
    RestoreReport,
    RestoreStep,
    RestoreTarget,
    Stack,
)
from harness.stack.postgres import APP_DATABASE

log = logging.getLogger(__name__)


CONNECT_TIMEOUT_S = 2.0


def app_database_dsn(superuser_dsn: str) -> str:
    """The application database on the node a superuser DSN points to."""
    return superuser_dsn.rsplit("/", 1)[0] + f"/{APP_DATABASE}"


@dataclass
class IntegrityWatch:
    """Runs the integrity checks on the current primary every ``interval_s``; sets
    ``detected`` at the first round after the incident that flags a row the last round
    before it did not (``first_detection``)."""

    checker: IntegrityChecker
    stack: Stack
    clock: RunClock
    interval_s: float
    incident: Callable[[], float | None]
    reports: list[IntegrityReport] = field(default_factory=list)
    detected: asyncio.Event = field(default_factory=asyncio.Event)
    detected_at_s: float | None = None

    async def check_once(self) -> IntegrityReport | None:
        """One round on the current primary; None when it cannot be reached (a restore)."""
        try:
            conn = await asyncpg.connect(
                app_database_dsn(self.stack.current_primary_dsn), timeout=CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            log.debug("integrity check skipped: %r", exc)
            return None
        try:
            report = await self.checker.run(conn, time.monotonic() - self.clock.t0)
        finally:
            await conn.close(timeout=CONNECT_TIMEOUT_S)
        # Stamped when the round ended: a round that began before the fault may have read
        # rows after it, so only rounds that ended before the fault are its baseline, and a
        # detection is dated when the checks that saw the damage had finished.
        return dataclasses.replace(report, t_s=time.monotonic() - self.clock.t0)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            report = await self.check_once()
            if report is not None:
                self.reports.append(report)
                t_fault = self.incident()
                if not self.detected.is_set() and t_fault is not None:
                    seen = first_detection(self.reports, t_fault)
                    if seen is not None:
                        self.detected_at_s = seen
                        self.detected.set()
            try:
                await asyncio.wait_for(
                    stop.wait(), max(0.0, started + self.interval_s - time.monotonic())
                )
            except TimeoutError:
                pass


@dataclass
class RestoreOutcome:
    """What a restore did, on the run's time axis; ``summary`` shapes it for result.json."""

    trigger: str
    t_trigger_s: float | None = None
    target_kind: str = ""
    target_value: str = ""
    target_t_s: float | None = None
    target_found_by: str = ""
    report: RestoreReport | None = None
    steps_done: list[RestoreStep] = field(default_factory=list)
    """The timed steps that finished (all five, or those before a failure)."""
    t_start_s: float | None = None
    t_detached_s: float | None = None
    """When the restore had stopped every server: no write acknowledged later was
    acknowledged by the history it discards."""
    t_reattached_s: float | None = None
    rebuild_replica_s: float | None = None
    error: str | None = None

    def summary(self, first_good_write_s: float | None) -> dict[str, Any]:
        steps: dict[str, float | None] = {
            f"{s.name}_s": round(s.duration_s, 3) for s in self.steps_done
        }
        steps["first_good_write_s"] = first_good_write_s
        steps["rebuild_replica_s"] = self.rebuild_replica_s
        total = None
        if (
            self.t_start_s is not None
            and self.t_reattached_s is not None
            and first_good_write_s is not None
        ):
            total = self.t_reattached_s + first_good_write_s - self.t_start_s
        return {
            "trigger": self.trigger,
            "t_trigger_s": self.t_trigger_s,
            "started_s": self.t_start_s,
            "target": {
                "kind": self.target_kind,
                "value": self.target_value,
                "t_s": self.target_t_s,
                "found_by": self.target_found_by,
            },
            "steps": steps,
            "total_s": total,
            "stopped_at_lsn": self.report.stopped_at_lsn if self.report else None,
            "last_replayed_commit": self.report.last_replayed_commit if self.report else None,
            "base_backup": self.report.base_backup if self.report else None,
            "error": self.error,
        }


@dataclass
class RestorePointMark:
    """The restore point the harness creates just before the first fault, on the run's axis."""

    point: RestorePoint
    t_start_s: float
    t_end_s: float


async def create_restore_point(stack: Stack, clock: RunClock, name: str) -> RestorePointMark:
    point = await stack.create_restore_point(name)
    return RestorePointMark(point, point.t_start - clock.t0, point.t_end - clock.t0)


@dataclass
class Restorer:
    """Restores the stack when the scenario says: on detection or at a set time."""

    config: RestoreConfig
    stack: Stack
    clock: RunClock
    watch: IntegrityWatch | None
    ledger: WriteLedger
    ledger_config: LedgerConfig
    restore_point: Callable[[], RestorePointMark | None]
    say: Say

    async def run(self, restoring: asyncio.Event) -> RestoreOutcome:
        """Wait for the trigger, pick the target, restore, rebuild the replica.
        ``restoring`` is set once the restore begins (from then on it is not cancelled).
        Never raises for a failed restore: the outcome says what went wrong."""
        config, clock = self.config, self.clock
        if config.at is not None:
            outcome = RestoreOutcome("scheduled")
            await asyncio.sleep(max(0.0, clock.t0 + config.at - time.monotonic()))
            outcome.t_trigger_s = time.monotonic() - clock.t0
        else:
            outcome = RestoreOutcome("detection")
            if self.watch is None:
                outcome.error = "no integrity checks to detect damage with, and no restore.at"
                return outcome
            await self.watch.detected.wait()
            outcome.t_trigger_s = self.watch.detected_at_s
            await asyncio.sleep(config.after_detection)
        try:
            target = await self._target(outcome)
        except RestoreImpossible as exc:
            outcome.error = str(exc)
            self.say(f"restore not started: {exc}")
            return outcome
        restoring.set()
        outcome.t_start_s = time.monotonic() - clock.t0
        self.say(
            f"t={outcome.t_start_s:.2f}s restoring to {target.kind} {target.value} "
            f"({outcome.target_found_by})"
        )
        try:
            outcome.report = await self.stack.restore(target, config.timeout)
        except RestoreFailed as exc:
            outcome.steps_done, outcome.error = exc.steps, str(exc)
            outcome.t_detached_s = _detached_s(exc.steps, clock.t0)
            self.say(outcome.error)
            return outcome
        except Exception as exc:  # a failed restore is a finding of the drill, with its reason
            outcome.error = f"restore failed: {exc}"
            self.say(outcome.error)
            return outcome
        outcome.steps_done = outcome.report.steps
        outcome.t_detached_s = _detached_s(outcome.report.steps, clock.t0)
        replayed = outcome.report.last_replayed_commit
        if outcome.target_t_s is None and replayed is not None:
            # An LSN names no time: the last commit replayed says where history now ends.
            outcome.target_t_s = clock.t_of(dt.datetime.fromisoformat(replayed))
        outcome.t_reattached_s = time.monotonic() - clock.t0
        steps = ", ".join(f"{s.name} {s.duration_s:.2f} s" for s in outcome.report.steps)
        self.say(f"t={outcome.t_reattached_s:.2f}s restored and server reattached ({steps})")
        if config.rebuild_replica:
            try:
                outcome.rebuild_replica_s = await self.stack.rebuild_replica()
                self.say(
                    f"replica rebuilt from the restored primary in {outcome.rebuild_replica_s:.2f} s"
                )
            except Exception as exc:
                outcome.error = f"replica rebuild failed: {exc}"
                self.say(outcome.error)
        return outcome

    async def _target(self, outcome: RestoreOutcome) -> RestoreTarget:
        config, clock = self.config, self.clock
        outcome.target_kind = config.target
        if config.target == "restore_point":
            mark = self.restore_point()
            if mark is None:
                raise RestoreImpossible("the restore point was not created before the fault")
            outcome.target_value, outcome.target_t_s = mark.point.name, mark.t_start_s
            outcome.target_found_by = (
                f"pg_create_restore_point at t={mark.t_start_s:.3f}s (LSN {mark.point.lsn})"
            )
            return RestoreTarget("restore_point", mark.point.name)
        if config.target == "lsn":
            assert config.target_lsn is not None
            outcome.target_value, outcome.target_found_by = config.target_lsn, "given"
            return RestoreTarget("lsn", config.target_lsn)
        if config.target == "time":
            assert config.target_time is not None
            given = restore_target_time(config.target_time)
            wall = clock.wall_of(given) if isinstance(given, float) else given
            outcome.target_found_by = "given"
        else:
            wall, outcome.target_found_by = await self.earliest_damage()
        target = RestoreTarget.before(wall)
        outcome.target_t_s, outcome.target_value = clock.t_of(wall), target.value
        return target

    async def earliest_damage(self) -> tuple[dt.datetime, str]:
        """The first damaging commit the evidence shows, looking only at damage that is new
        since the incident: the oldest commit timestamp among the rows the integrity
        checks flag now and did not flag before it, and the attempt time of the oldest
        write made since the incident that reads back altered (a bad release damages the
        writes it makes). The restore stops just before it."""
        t_fault = self.watch.incident() if self.watch is not None else None
        if t_fault is None:
            raise RestoreImpossible("no confirmed incident to look for damage after")
        evidence: list[tuple[dt.datetime, str]] = []
        if self.watch is not None:
            report = await self.watch.check_once()
            if report is not None:
                baseline = baseline_ids(self.watch.reports, t_fault)
                changed = earliest_new_change(report, baseline)
                if changed is not None:
                    evidence.append((changed, "integrity checks (commit timestamp)"))
        conn = await asyncpg.connect(app_database_dsn(self.stack.current_primary_dsn), timeout=10)
        try:
            rows = await read_written(conn, self.ledger_config, list(self.ledger.acked))
        finally:
            await conn.close()
        altered = self.ledger.classify(rows, None).altered
        since = [
            t for t in map(self.ledger.attempt_time, altered) if t is not None and t >= t_fault
        ]
        if since:
            evidence.append((self.clock.wall_of(min(since)), "write ledger (first altered write)"))
        if not evidence:
            raise RestoreImpossible(
                "no damage new since the incident found by the integrity checks or the ledger"
            )
        wall, source = min(evidence)
        return wall, f"earliest damage: {source}"


class RestoreImpossible(RuntimeError):
    """No target could be chosen (no restore point, no damage found)."""


def _detached_s(steps: Sequence[RestoreStep], t0: float) -> float | None:
    """When the restore's ``stop`` step (every server stopped) ended, on the run's axis."""
    stop = next((s for s in steps if s.name == "stop"), None)
    return None if stop is None else stop.end - t0
