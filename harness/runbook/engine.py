"""The disaster-recovery runbook as code: ordered steps of check / fix / timeout.

A runbook written in a wiki is tested on the day it is needed. Written as steps
the harness runs, it is tested on every drill, and its record says how long each
check and fix took and where a person still has to act.

A ``Step`` has a name, an async ``check`` (healthy or not), an optional async
``fix`` (without one the step is check-only: a failed check is an alert), a
timeout for each, and ``preconditions``: names of earlier steps that must have
ended ``healthy`` or ``fixed`` for this one to run (a dynamic condition belongs
in the step's own check). ``Runbook.execute`` runs the steps in order:

- the check runs under ``check_timeout_s``; a timeout or an exception counts as
  unhealthy (action outcome ``timed_out`` / ``error``) and the check is cancelled;
- an unhealthy step with a fix, in a run that may fix, runs the fix under
  ``fix_timeout_s`` and then checks again under ``check_timeout_s``;
- a fix that raises, times out or raises ``FixFailed`` is not re-checked: the
  runbook cannot know what state it left, so the step needs a person
  (``fix_failed``).

Every check, fix and re-check is an ``ActionRecord`` (start, duration, outcome,
detail). Times come from a ``Clock`` (CLOCK_MONOTONIC by default, a fake one in
tests); the timeouts are the event loop's, so a check that hangs is cancelled
at its timeout whatever clock records it.

The context handed to every check and fix (the stack, the scenario, a clock, a
``say`` callback) is the caller's: the engine never looks inside it, so it
imports nothing from the stack or the run. Users write their own steps as small
classes or with ``FunctionStep``, and name the runbook as ``pkg.module:NAME``
(``load_runbook``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

Ctx = TypeVar("Ctx")

DEFAULT_CHECK_TIMEOUT_S = 10.0
DEFAULT_FIX_TIMEOUT_S = 60.0


class Clock(Protocol):
    """Where the runbook reads the time; steps may sleep on it (``ctx`` carries one)."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """CLOCK_MONOTONIC and the event loop's sleep: the clock of every measurement."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


MONOTONIC_CLOCK = MonotonicClock()


@dataclass(frozen=True)
class Health:
    """What a check found; ``detail`` says what it saw, for the record and the report."""

    healthy: bool
    detail: str = ""


class FixFailed(Exception):
    """Raised by a fix that knows it cannot fix (no replica to promote, ...); the message
    says what a person should do instead. Any other exception is recorded as an error."""


CheckFn = Callable[[Ctx], Awaitable[Health | bool]]
FixFn = Callable[[Ctx], Awaitable[str]]


class Step(Generic[Ctx]):
    """One step of a runbook. Subclass it and define ``name``, ``async check(ctx)`` and,
    unless the step is check-only, ``async fix(ctx) -> str`` (what the fix did); or use
    ``FunctionStep``. ``preconditions`` names earlier steps that must end healthy or fixed."""

    name: str
    check: CheckFn[Ctx]
    fix: FixFn[Ctx] | None = None
    check_timeout_s: float = DEFAULT_CHECK_TIMEOUT_S
    fix_timeout_s: float = DEFAULT_FIX_TIMEOUT_S
    preconditions: Sequence[str] = ()


@dataclass
class FunctionStep(Step[Ctx]):
    """A step made of plain async functions: ``FunctionStep("primary_up", is_up, promote)``."""

    name: str
    check: CheckFn[Ctx]
    fix: FixFn[Ctx] | None = None
    check_timeout_s: float = DEFAULT_CHECK_TIMEOUT_S
    fix_timeout_s: float = DEFAULT_FIX_TIMEOUT_S
    preconditions: Sequence[str] = ()


class Action(StrEnum):
    CHECK = "check"
    FIX = "fix"
    RECHECK = "recheck"


class ActionOutcome(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DONE = "done"
    """The fix returned; only the re-check says whether it fixed anything."""
    FAILED = "failed"
    """The fix raised ``FixFailed``."""
    TIMED_OUT = "timed_out"
    ERROR = "error"


class StepOutcome(StrEnum):
    HEALTHY = "healthy"
    """The first check passed."""
    FIXED = "fixed"
    """The fix ran and the re-check passed."""
    NOT_FIXED = "not_fixed"
    """The fix ran and the re-check did not pass."""
    FIX_FAILED = "fix_failed"
    """The fix raised, timed out or raised ``FixFailed``; not re-checked."""
    ALERT = "alert"
    """Unhealthy with no fix to run: a check-only step, or a check-only run."""
    SKIPPED = "skipped"
    """A precondition did not end healthy or fixed; not checked."""


_Body = Callable[[], Awaitable[tuple[ActionOutcome, str]]]
"""One action's work: its outcome and detail, before the timeout and the record."""

OK_OUTCOMES = frozenset({StepOutcome.HEALTHY, StepOutcome.FIXED})


@dataclass(frozen=True)
class ActionRecord:
    step: str
    action: Action
    start_s: float
    """On the record's time axis (``origin_s`` of ``execute``)."""
    duration_s: float
    outcome: ActionOutcome
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (ActionOutcome.HEALTHY, ActionOutcome.DONE)

    def as_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class StepRecord:
    name: str
    outcome: StepOutcome
    detail: str
    start_s: float
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass
class RunbookRecord:
    """What a runbook did, as plain data; ``as_dict()`` is its shape in result.json."""

    start_s: float
    check_only: bool
    steps: list[StepRecord] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def healthy(self) -> bool:
        """Every step ended healthy or fixed."""
        return not self.gaps()

    def gaps(self) -> list[StepRecord]:
        """The steps a person has to look at, in order: alerts, fixes that did not fix or
        failed, and steps skipped because of them (never checked)."""
        return [s for s in self.steps if s.outcome not in OK_OUTCOMES]

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "check_only": self.check_only,
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "steps": [s.as_dict() for s in self.steps],
            "actions": [a.as_dict() for a in self.actions],
            "gaps": [s.name for s in self.gaps()],
        }


class Runbook(Generic[Ctx]):
    """An ordered list of steps, checked when it is built (names unique, preconditions
    on earlier steps, timeouts positive) so a broken runbook fails before a drill."""

    def __init__(self, steps: Iterable[Step[Ctx]]) -> None:
        self.steps: tuple[Step[Ctx], ...] = tuple(steps)
        _validate(self.steps)

    def __repr__(self) -> str:
        return f"Runbook([{', '.join(s.name for s in self.steps)}])"

    async def execute(
        self,
        ctx: Ctx,
        *,
        clock: Clock = MONOTONIC_CLOCK,
        check_only: bool = False,
        origin_s: float | None = None,
    ) -> RunbookRecord:
        """Run every step in order. ``check_only`` never calls a fix (an unhealthy step
        is an alert). Times are recorded relative to ``origin_s`` on ``clock`` (the
        run's start, so they line up with its timeline), by default this call's start."""
        started = clock.now()
        origin = started if origin_s is None else origin_s
        record = RunbookRecord(start_s=started - origin, check_only=check_only)
        run = _Execution(ctx, clock, check_only, origin, record)
        for step in self.steps:
            record.steps.append(await run.step(step))
        record.duration_s = clock.now() - started
        return record


@dataclass
class _Execution(Generic[Ctx]):
    ctx: Ctx
    clock: Clock
    check_only: bool
    origin_s: float
    record: RunbookRecord
    outcomes: dict[str, StepOutcome] = field(default_factory=dict)

    def t(self, now: float) -> float:
        return now - self.origin_s

    async def step(self, step: Step[Ctx]) -> StepRecord:
        started = self.clock.now()

        def done(outcome: StepOutcome, detail: str) -> StepRecord:
            self.outcomes[step.name] = outcome
            return StepRecord(
                step.name, outcome, detail, self.t(started), self.clock.now() - started
            )

        for name in step.preconditions:
            if self.outcomes[name] not in OK_OUTCOMES:
                return done(StepOutcome.SKIPPED, f"precondition {name} is {self.outcomes[name]}")

        check = await self.action(step, Action.CHECK, step.check_timeout_s, self.check_body(step))
        if check.ok:
            return done(StepOutcome.HEALTHY, check.detail)
        if self.check_only or step.fix is None:
            return done(StepOutcome.ALERT, _explain(check))

        fix = await self.action(step, Action.FIX, step.fix_timeout_s, self.fix_body(step.fix))
        if not fix.ok:
            return done(StepOutcome.FIX_FAILED, _explain(fix))
        recheck = await self.action(
            step, Action.RECHECK, step.check_timeout_s, self.check_body(step)
        )
        if recheck.ok:
            return done(StepOutcome.FIXED, fix.detail)
        return done(StepOutcome.NOT_FIXED, _explain(recheck))

    def check_body(self, step: Step[Ctx]) -> _Body:
        async def body() -> tuple[ActionOutcome, str]:
            health = _as_health(await step.check(self.ctx))
            outcome = ActionOutcome.HEALTHY if health.healthy else ActionOutcome.UNHEALTHY
            return outcome, health.detail

        return body

    def fix_body(self, fix: FixFn[Ctx]) -> _Body:
        async def body() -> tuple[ActionOutcome, str]:
            try:
                did = await fix(self.ctx)
            except FixFailed as exc:
                return ActionOutcome.FAILED, str(exc)
            return ActionOutcome.DONE, "" if did is None else str(did)

        return body

    async def action(
        self,
        step: Step[Ctx],
        action: Action,
        timeout_s: float,
        body: _Body,
    ) -> ActionRecord:
        """One check, fix or re-check under its timeout; never raises (but for cancellation
        of the whole runbook)."""
        started = self.clock.now()
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                outcome, detail = await body()
        except TimeoutError as exc:
            if deadline.expired():
                outcome, detail = ActionOutcome.TIMED_OUT, f"no result within {timeout_s:g}s"
            else:
                outcome, detail = ActionOutcome.ERROR, _describe(exc)
        except Exception as exc:
            log.warning("runbook step %s: %s raised", step.name, action, exc_info=True)
            outcome, detail = ActionOutcome.ERROR, _describe(exc)
        record = ActionRecord(
            step.name,
            action,
            self.t(started),
            self.clock.now() - started,
            outcome,
            detail,
        )
        self.record.actions.append(record)
        return record


def _plain(record: ActionRecord | StepRecord) -> dict[str, Any]:
    """A record's fields with its enums as their plain string values (for result.json)."""
    return {k: v.value if isinstance(v, StrEnum) else v for k, v in asdict(record).items()}


def _as_health(value: object) -> Health:
    if isinstance(value, Health):
        return value
    if isinstance(value, bool):
        return Health(value)
    raise TypeError(f"a check returns Health or bool, this one returned {value!r}")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _explain(record: ActionRecord) -> str:
    """Why an action did not pass, as the step's detail: ``recheck unhealthy: lag 30s``."""
    text = f"{record.action} {record.outcome}"
    return f"{text}: {record.detail}" if record.detail else text


def _validate(steps: Sequence[Step[Any]]) -> None:
    seen: set[str] = set()
    for index, step in enumerate(steps):
        name = getattr(step, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"runbook step {index} ({step!r}) has no name: give it a `name`")
        where = f"runbook step {name!r}"
        if name in seen:
            raise ValueError(f"{where}: two steps have this name; names must be unique")
        if not callable(getattr(step, "check", None)):
            raise ValueError(f"{where}: `check` must be an async function of the context")
        if step.fix is not None and not callable(step.fix):
            raise ValueError(f"{where}: `fix` must be an async function, or None (check-only)")
        for attribute in ("check_timeout_s", "fix_timeout_s"):
            value = getattr(step, attribute)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{where}: {attribute} must be a positive number, not {value!r}")
        if isinstance(step.preconditions, str):
            raise ValueError(
                f"{where}: preconditions is a list of step names, not a string "
                f"(write ({step.preconditions!r},))"
            )
        for precondition in step.preconditions:
            if precondition not in seen:
                raise ValueError(
                    f"{where}: precondition {precondition!r} is not an earlier step "
                    "(steps run in order: put it before this one)"
                )
        seen.add(name)


class RunbookLoadError(ValueError):
    """A ``pkg.module:NAME`` that does not name a Runbook; the message names the spec."""


def load_runbook(spec: str) -> Runbook[Any]:
    """The Runbook named ``pkg.module:NAME`` (from a scenario or ``--runbook``)."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise RunbookLoadError(
            f"runbook {spec!r}: expected 'package.module:NAME' "
            "(a module path, a colon, the name of a Runbook in that module)"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise RunbookLoadError(
                f"runbook {spec!r}: no module named {module_name!r} "
                "(is its package installed, or its folder on PYTHONPATH?)"
            ) from exc
        raise RunbookLoadError(
            f"runbook {spec!r}: importing {module_name} failed: {_describe(exc)}"
        ) from exc
    if not hasattr(module, attribute):
        found = sorted(n for n, v in vars(module).items() if isinstance(v, Runbook))
        hint = f"Runbooks it defines: {', '.join(found)}" if found else "it defines no Runbook"
        raise RunbookLoadError(f"runbook {spec!r}: {module_name} has no {attribute!r} ({hint})")
    runbook = getattr(module, attribute)
    if not isinstance(runbook, Runbook):
        raise RunbookLoadError(
            f"runbook {spec!r}: {attribute} is a {type(runbook).__name__}, "
            "not a harness.runbook.Runbook (build it with Runbook([step, ...]))"
        )
    return runbook
