"""The watcher: during a scenario, the runbook checked on an interval and executed when a
step with a fix turns unhealthy (with a cool-down, so a fix that did not hold is not
retried in a tight loop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

from harness.runbook.engine import (
    MONOTONIC_CLOCK,
    OK_OUTCOMES,
    Action,
    ActionOutcome,
    Clock,
    Ctx,
    Runbook,
    RunbookRecord,
    StepOutcome,
    StepRecord,
)

log = logging.getLogger(__name__)


WATCH_COOLDOWN_MIN_S = 5.0
WATCH_COOLDOWN_INTERVALS = 5
"""After an execution the watcher keeps checking but executes again only after
``max(WATCH_COOLDOWN_MIN_S, WATCH_COOLDOWN_INTERVALS * interval)``: a fix that did not
hold is not retried in a tight loop."""


def watch_cooldown_s(interval_s: float) -> float:
    return max(WATCH_COOLDOWN_MIN_S, WATCH_COOLDOWN_INTERVALS * interval_s)


def fixable_alerts(runbook: Runbook[Any], check: RunbookRecord) -> list[StepRecord]:
    """The steps of a check-only round that were unhealthy and have a fix: what executing
    the runbook could act on. An unhealthy check-only step alone is an alert for a person;
    executing would only record it again."""
    with_fix = {s.name for s in runbook.steps if s.fix is not None}
    return [s for s in check.steps if s.outcome == StepOutcome.ALERT and s.name in with_fix]


def execution_due(
    fixable: Sequence[StepRecord],
    now_s: float,
    last_execution_end_s: float | None,
    cooldown_s: float,
) -> bool:
    """Execute when a step with a fix is unhealthy and the last execution ended at least
    ``cooldown_s`` ago (or there was none)."""
    if not fixable:
        return False
    return last_execution_end_s is None or now_s - last_execution_end_s >= cooldown_s


def first_unhealthy_s(check: RunbookRecord) -> float | None:
    """When the round's first unhealthy check ended (on the record's time axis): when the
    watcher knew. Its start may precede the fault (a check under way when the primary
    died), and a detection stamped before the fault would flatter it."""
    return next(
        (
            a.start_s + a.duration_s
            for a in check.actions
            if a.action == Action.CHECK and a.outcome != ActionOutcome.HEALTHY
        ),
        None,
    )


def fixed_at_s(runbook: Runbook[Any], execution: RunbookRecord) -> float | None:
    """When an execution's fixes held: the end of its last step that ended ``fixed``,
    provided every step with a fix ended healthy or fixed. None when one did not, or
    when it fixed nothing (the degradation had passed when it ran)."""
    with_fix = {s.name for s in runbook.steps if s.fix is not None}
    if any(s.name in with_fix and s.outcome not in OK_OUTCOMES for s in execution.steps):
        return None
    fixed = [s.start_s + s.duration_s for s in execution.steps if s.outcome == StepOutcome.FIXED]
    return max(fixed) if fixed else None


def describe_execution(execution: RunbookRecord) -> str:
    """One line for the timeline: ``runbook: primary_connectivity fixed in 0.4 s``."""
    parts = []
    for step in execution.steps:
        if step.outcome == StepOutcome.FIXED:
            parts.append(f"{step.name} fixed in {step.duration_s:.1f} s")
        elif step.outcome != StepOutcome.HEALTHY:
            parts.append(f"{step.name} {step.outcome}")
    return f"runbook: {', '.join(parts) if parts else 'every step healthy'}"


def _not_ok(record: RunbookRecord) -> tuple[str, ...]:
    return tuple(s.name for s in record.gaps())


WatchEvent = Callable[[float, str], None]
"""Told (time on the record's axis, line) when the health the watcher sees changes and
after each execution."""


@dataclass
class RunbookWatch(Generic[Ctx]):
    """Runs a runbook during a scenario: every ``interval_s`` a check-only round; when a
    step with a fix is unhealthy, one execution with fixes (then a cool-down, checks go
    on). Times are on the axis of ``origin_s`` (the run's start). While ``paused()``
    (a restore under way) it does not look. ``executing`` says a fix may be under way:
    cancel the watcher only when it is not."""

    runbook: Runbook[Ctx]
    ctx: Ctx
    interval_s: float
    origin_s: float
    clock: Clock = MONOTONIC_CLOCK
    paused: Callable[[], bool] = lambda: False
    event: WatchEvent | None = None
    cooldown_s: float = field(init=False)
    rounds: int = 0
    paused_rounds: int = 0
    unhealthy_rounds: dict[str, int] = field(default_factory=dict)
    """Per step, how many check rounds found it not healthy."""
    executions: list[tuple[list[StepRecord], RunbookRecord]] = field(default_factory=list)
    """Each execution with the round's unhealthy fixable steps that triggered it."""
    first_degraded_s: float | None = None
    last: RunbookRecord | None = None
    """The latest round or execution: its gaps are what a person still has to look at."""
    executing: bool = False
    last_execution_end_s: float | None = None

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"watch interval must be positive, not {self.interval_s!r}")
        self.cooldown_s = watch_cooldown_s(self.interval_s)

    def t(self) -> float:
        return self.clock.now() - self.origin_s

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set; every round starts ``interval_s`` after the last
        one started (at once when a round took longer)."""
        while not stop.is_set():
            started = self.clock.now()
            if self.paused():
                self.paused_rounds += 1
            else:
                await self.round(stop)
            wait = started + self.interval_s - self.clock.now()
            if wait > 0 and not stop.is_set():
                try:
                    async with asyncio.timeout(wait):
                        await stop.wait()
                except TimeoutError:
                    pass

    async def round(self, stop: asyncio.Event) -> None:
        check = await self.runbook.execute(
            self.ctx, clock=self.clock, check_only=True, origin_s=self.origin_s
        )
        self.rounds += 1
        before = _not_ok(self.last) if self.last is not None else ()
        self.last = check
        for step in check.gaps():
            self.unhealthy_rounds[step.name] = self.unhealthy_rounds.get(step.name, 0) + 1
        if _not_ok(check) != before:
            self._tell(check.start_s, _describe_check(check))
        if check.healthy:
            return
        if self.first_degraded_s is None:
            self.first_degraded_s = first_unhealthy_s(check)
        fixable = fixable_alerts(self.runbook, check)
        if stop.is_set() or self.paused():
            return
        if not execution_due(fixable, self.t(), self.last_execution_end_s, self.cooldown_s):
            return
        self.executing = True
        try:
            execution = await self.runbook.execute(
                self.ctx, clock=self.clock, origin_s=self.origin_s
            )
        finally:
            self.executing = False
        self.last_execution_end_s = self.t()
        self.executions.append((fixable, execution))
        self.last = execution
        self._tell(self.last_execution_end_s, describe_execution(execution))

    def _tell(self, t_s: float, line: str) -> None:
        if self.event is not None:
            try:
                self.event(t_s, line)
            except Exception:  # an observer never stops the watcher
                log.warning("runbook watch: the event callback raised", exc_info=True)

    def summary(self) -> dict[str, Any]:
        """The watch as plain data (``metrics.runbook`` in result.json, with the spec)."""
        first = self.executions[0][1] if self.executions else None
        return {
            "interval_s": self.interval_s,
            "cooldown_s": self.cooldown_s,
            "checks": self.rounds,
            "paused_checks": self.paused_rounds,
            "first_degraded_s": self.first_degraded_s,
            "fixed_s": fixed_at_s(self.runbook, first) if first is not None else None,
            "executions": [
                {
                    "t_s": execution.start_s,
                    "trigger": [{"step": s.name, "detail": s.detail} for s in trigger],
                    **execution.as_dict(),
                }
                for trigger, execution in self.executions
            ],
            "unhealthy_checks": dict(self.unhealthy_rounds),
            "gaps": [
                {"step": s.name, "outcome": s.outcome.value, "detail": s.detail}
                for s in (self.last.gaps() if self.last is not None else [])
            ],
        }


def _describe_check(check: RunbookRecord) -> str:
    gaps = check.gaps()
    if not gaps:
        return "runbook check: every step healthy"
    return "runbook check: " + "; ".join(f"{s.name} {s.outcome}: {s.detail}" for s in gaps)
