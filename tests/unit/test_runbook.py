"""The runbook engine on scripted steps: a fake clock gives the recorded times; the
timeouts are real but tiny (a hanging step is cancelled after HANG_TIMEOUT_S)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.runbook import (
    Action,
    ActionOutcome,
    FixFailed,
    FunctionStep,
    Health,
    Runbook,
    RunbookLoadError,
    RunbookRecord,
    Step,
    StepOutcome,
    load_runbook,
)
from tests.helpers import FakeClock

HANG_TIMEOUT_S = 0.01


@dataclass
class Ctx:
    """What a caller hands every step: here a clock and a log of the calls made."""

    clock: FakeClock = field(default_factory=FakeClock)
    calls: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def check(name: str, *answers: object, takes_s: float = 0.0) -> Any:
    """A check giving ``answers`` in turn (the last one again after them)."""
    remaining = list(answers)

    async def run(ctx: Ctx) -> object:
        ctx.calls.append(f"check {name}")
        await ctx.clock.sleep(takes_s)
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return run


def fix(name: str, did: str = "fixed it", takes_s: float = 0.0) -> Any:
    async def run(ctx: Ctx) -> str:
        ctx.calls.append(f"fix {name}")
        await ctx.clock.sleep(takes_s)
        return did

    return run


def raising(name: str, exc: BaseException) -> Any:
    async def run(ctx: Ctx) -> str:
        ctx.calls.append(f"raise {name}")
        raise exc

    return run


def hanging(name: str, takes_s: float = 0.0) -> Any:
    """Spends ``takes_s`` on the fake clock, then never answers."""

    async def run(ctx: Ctx) -> str:
        ctx.calls.append(f"hang {name}")
        await ctx.clock.sleep(takes_s)
        try:
            await asyncio.Event().wait()
        finally:
            ctx.cancelled.append(name)
        raise AssertionError("unreachable")

    return run


def step(name: str, check_fn: Any, fix_fn: Any = None, **kwargs: Any) -> FunctionStep[Ctx]:
    kwargs.setdefault("check_timeout_s", HANG_TIMEOUT_S)
    kwargs.setdefault("fix_timeout_s", HANG_TIMEOUT_S)
    return FunctionStep(name, check_fn, fix_fn, **kwargs)


def execute(steps: Sequence[Step[Ctx]], ctx: Ctx | None = None, **kwargs: Any) -> RunbookRecord:
    ctx = ctx or Ctx()
    return asyncio.run(Runbook(steps).execute(ctx, clock=ctx.clock, **kwargs))


def actions(record: RunbookRecord) -> list[tuple[str, str, str]]:
    return [(a.step, a.action.value, a.outcome.value) for a in record.actions]


def outcomes(record: RunbookRecord) -> dict[str, str]:
    return {s.name: s.outcome.value for s in record.steps}


def test_a_healthy_step_is_checked_once_and_never_fixed() -> None:
    ctx = Ctx()
    record = execute(
        [step("primary", check("primary", Health(True, "accepts writes")), fix("primary"))], ctx
    )
    assert ctx.calls == ["check primary"]
    assert actions(record) == [("primary", "check", "healthy")]
    assert record.steps[0].outcome is StepOutcome.HEALTHY
    assert record.steps[0].detail == "accepts writes"
    assert record.healthy and record.gaps() == []


def test_an_unhealthy_step_is_fixed_then_checked_again() -> None:
    ctx = Ctx()
    primary = step("primary", check("primary", False, True), fix("primary", "promoted the replica"))
    record = execute([primary], ctx)
    assert ctx.calls == ["check primary", "fix primary", "check primary"]
    assert actions(record) == [
        ("primary", "check", "unhealthy"),
        ("primary", "fix", "done"),
        ("primary", "recheck", "healthy"),
    ]
    assert (record.steps[0].outcome, record.steps[0].detail) == ("fixed", "promoted the replica")
    assert record.healthy


def test_a_fix_that_does_not_fix_is_a_gap() -> None:
    lagging = check("replica", Health(False, "lag 30s"))
    record = execute([step("replica", lagging, fix("replica"))])
    assert record.steps[0].outcome is StepOutcome.NOT_FIXED
    assert record.steps[0].detail == "recheck unhealthy: lag 30s"
    assert [s.name for s in record.gaps()] == ["replica"] and not record.healthy


@pytest.mark.parametrize(
    ("bad_fix", "outcome", "detail"),
    [
        (raising("f", RuntimeError("boom")), ActionOutcome.ERROR, "RuntimeError: boom"),
        (
            raising("f", FixFailed("no replica to promote")),
            ActionOutcome.FAILED,
            "no replica to promote",
        ),
        (hanging("f"), ActionOutcome.TIMED_OUT, f"no result within {HANG_TIMEOUT_S:g}s"),
    ],
    ids=["raises", "fix_failed", "hangs"],
)
def test_a_fix_that_fails_is_not_rechecked(
    bad_fix: Any, outcome: ActionOutcome, detail: str
) -> None:
    ctx = Ctx()
    record = execute([step("primary", check("primary", False), bad_fix)], ctx)
    fix_action = record.actions[-1]
    assert [a.action for a in record.actions] == [Action.CHECK, Action.FIX]
    assert (fix_action.outcome, fix_action.detail) == (outcome, detail)
    assert record.steps[0].outcome is StepOutcome.FIX_FAILED
    assert record.steps[0].detail == f"fix {outcome}: {detail}"
    assert ctx.calls.count("check primary") == 1


def test_a_fix_that_hangs_is_cancelled_at_its_timeout() -> None:
    ctx = Ctx()
    execute([step("primary", check("primary", False), hanging("promote"))], ctx)
    assert ctx.cancelled == ["promote"]


def test_a_check_that_hangs_is_cancelled_recorded_timed_out_and_the_fix_runs() -> None:
    ctx = Ctx()
    answers = iter([hanging("primary", takes_s=3.0), check("primary", True)])

    async def first_hangs_then_healthy(ctx: Ctx) -> Health | bool:
        result: Health | bool = await next(answers)(ctx)
        return result

    record = execute([step("primary", first_hangs_then_healthy, fix("primary"))], ctx)
    assert ctx.cancelled == ["primary"]
    assert actions(record) == [
        ("primary", "check", "timed_out"),
        ("primary", "fix", "done"),
        ("primary", "recheck", "healthy"),
    ]
    assert record.actions[0].duration_s == 3.0  # from the clock, not the event loop
    assert record.steps[0].outcome is StepOutcome.FIXED


@pytest.mark.parametrize(
    ("bad_check", "detail"),
    [
        (raising("c", ConnectionRefusedError("port 5432")), "ConnectionRefusedError: port 5432"),
        (raising("c", TimeoutError()), "TimeoutError"),
        (check("c", None), "TypeError: a check returns Health or bool, this one returned None"),
    ],
    ids=["raises", "its_own_timeout", "returns_none"],
)
def test_a_check_that_errors_is_unhealthy_and_the_fix_runs(bad_check: Any, detail: str) -> None:
    ctx = Ctx()
    record = execute([step("primary", bad_check, fix("primary"))], ctx)
    assert (record.actions[0].outcome, record.actions[0].detail) == (ActionOutcome.ERROR, detail)
    assert "fix primary" in ctx.calls


def test_a_check_only_step_that_fails_is_an_alert() -> None:
    record = execute(
        [step("backups", check("backups", Health(False, "last base backup 3 days old")))]
    )
    assert actions(record) == [("backups", "check", "unhealthy")]
    assert record.steps[0].outcome is StepOutcome.ALERT
    assert record.steps[0].detail == "check unhealthy: last base backup 3 days old"
    assert [s.name for s in record.gaps()] == ["backups"]


def test_a_check_only_run_never_calls_a_fix() -> None:
    ctx = Ctx()
    steps = [
        step("primary", check("primary", False), fix("primary")),
        step("replica", check("replica", True), fix("replica")),
        step("mcp", hanging("mcp"), fix("mcp")),
    ]
    record = execute(steps, ctx, check_only=True)
    assert not any(call.startswith("fix") for call in ctx.calls)
    assert outcomes(record) == {"primary": "alert", "replica": "healthy", "mcp": "alert"}
    assert record.check_only and record.as_dict()["check_only"] is True


def test_steps_and_their_actions_run_in_order() -> None:
    ctx = Ctx()
    steps = [
        step("primary", check("primary", False, True), fix("primary")),
        step("replica", check("replica", True)),
        step("mcp", check("mcp", False, True), fix("mcp")),
    ]
    record = execute(steps, ctx)
    assert ctx.calls == [
        "check primary",
        "fix primary",
        "check primary",
        "check replica",
        "check mcp",
        "fix mcp",
        "check mcp",
    ]
    assert [(a.step, a.action.value) for a in record.actions] == [
        ("primary", "check"),
        ("primary", "fix"),
        ("primary", "recheck"),
        ("replica", "check"),
        ("mcp", "check"),
        ("mcp", "fix"),
        ("mcp", "recheck"),
    ]
    assert [s.name for s in record.steps] == ["primary", "replica", "mcp"]


def test_a_step_whose_precondition_did_not_pass_is_skipped() -> None:
    ctx = Ctx()
    steps = [
        step("primary", check("primary", False)),  # check-only: an alert
        step("replica", check("replica", False, True), fix("replica")),  # fixed
        step("writes", check("writes", True), preconditions=("primary",)),
        step("reads", check("reads", True), preconditions=("replica",)),
        step("mcp", check("mcp", True), preconditions=("replica", "writes")),
        step("backups", check("backups", True)),
    ]
    record = execute(steps, ctx)
    assert outcomes(record) == {
        "primary": "alert",
        "replica": "fixed",
        "writes": "skipped",
        "reads": "healthy",
        "mcp": "skipped",
        "backups": "healthy",
    }
    details = {s.name: s.detail for s in record.steps}
    assert details["writes"] == "precondition primary is alert"
    assert details["mcp"] == "precondition writes is skipped"
    assert "check writes" not in ctx.calls and "check mcp" not in ctx.calls
    assert [s.name for s in record.gaps()] == ["primary", "writes", "mcp"]


def test_times_are_read_from_the_clock_on_the_callers_axis() -> None:
    ctx = Ctx(clock=FakeClock(t=1000.0))
    steps = [
        step("primary", check("primary", False, True, takes_s=0.5), fix("primary", takes_s=4.0)),
        step("replica", check("replica", True, takes_s=0.25)),
    ]
    record = execute(steps, ctx, origin_s=990.0)
    assert [(a.start_s, a.duration_s) for a in record.actions] == [
        (10.0, 0.5),
        (10.5, 4.0),
        (14.5, 0.5),
        (15.0, 0.25),
    ]
    assert [(s.start_s, s.duration_s) for s in record.steps] == [(10.0, 5.0), (15.0, 0.25)]
    assert (record.start_s, record.duration_s) == (10.0, 5.25)


def test_times_start_at_zero_without_an_origin() -> None:
    record = execute([step("primary", check("primary", True, takes_s=2.0))])
    assert (record.start_s, record.actions[0].start_s, record.duration_s) == (0.0, 0.0, 2.0)


def test_the_record_is_plain_json() -> None:
    steps = [
        step("primary", check("primary", Health(False, "down"), True), fix("primary", "promoted")),
        step("backups", check("backups", False)),
    ]
    data = json.loads(json.dumps(execute(steps).as_dict()))
    assert data["healthy"] is False
    assert data["gaps"] == ["backups"]
    assert data["steps"][0] == {
        "name": "primary",
        "outcome": "fixed",
        "detail": "promoted",
        "start_s": 0.0,
        "duration_s": 0.0,
    }
    assert data["actions"][0] == {
        "step": "primary",
        "action": "check",
        "start_s": 0.0,
        "duration_s": 0.0,
        "outcome": "unhealthy",
        "detail": "down",
    }
    assert [a["action"] for a in data["actions"]] == ["check", "fix", "recheck", "check"]


def test_steps_may_be_small_classes() -> None:
    @dataclass
    class ReplicaLag(Step[Ctx]):
        max_lag_s: float
        name: str = "replica_lag"
        check_timeout_s: float = 1.0

        async def check(self, ctx: Ctx) -> Health:
            return Health(self.max_lag_s >= 5, f"lag 5s, at most {self.max_lag_s:g}s")

    record = execute([ReplicaLag(max_lag_s=1)])
    assert (record.steps[0].outcome, record.steps[0].detail) == (
        "alert",
        "check unhealthy: lag 5s, at most 1s",
    )
    assert execute([ReplicaLag(max_lag_s=10)]).healthy


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [step("a", check("a", True)), step("a", check("a", True))],
            "'a': two steps have this name",
        ),
        (
            [step("a", check("a", True), preconditions=("b",)), step("b", check("b", True))],
            "precondition 'b' is not an earlier step",
        ),
        (
            [step("a", check("a", True)), step("b", check("b", True), preconditions="a")],
            "not a string",
        ),
        (
            [step("a", check("a", True), check_timeout_s=0)],
            "check_timeout_s must be a positive number",
        ),
        ([step("", check("a", True))], "has no name"),
        ([step("a", "not a function")], "`check` must be an async function"),
    ],
    ids=[
        "duplicate",
        "later_precondition",
        "string_preconditions",
        "zero_timeout",
        "no_name",
        "check",
    ],
)
def test_a_broken_runbook_fails_when_it_is_built(steps: list[Step[Ctx]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Runbook(steps)


MODULES = {
    "rb_good": """
        from harness.runbook import FunctionStep, Health, Runbook

        async def up(ctx):
            return Health(True, "up")

        RUNBOOK = Runbook([FunctionStep("primary", up)])
        OTHER = Runbook([])
        NOT_A_RUNBOOK = {"steps": []}
    """,
    "rb_needs_missing": "import rb_dependency_that_is_not_installed\n",
    "rb_broken": "raise RuntimeError('no DSN configured')\n",
}


@pytest.fixture
def runbook_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, text in MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in MODULES:
        sys.modules.pop(name, None)


def test_load_runbook_finds_the_named_runbook(runbook_modules: None) -> None:
    runbook = load_runbook("rb_good:RUNBOOK")
    assert [s.name for s in runbook.steps] == ["primary"]
    assert asyncio.run(runbook.execute(None)).healthy


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rb_good", "expected 'package.module:NAME'"),
        ("rb_good:", "expected 'package.module:NAME'"),
        ("rb_nowhere:RUNBOOK", "no module named 'rb_nowhere'.*PYTHONPATH"),
        ("rb_good.sub:RUNBOOK", "no module named 'rb_good.sub'"),
        ("rb_needs_missing:RUNBOOK", "importing rb_needs_missing failed: ModuleNotFoundError"),
        ("rb_broken:RUNBOOK", "importing rb_broken failed: RuntimeError: no DSN configured"),
        ("rb_good:RUNBOK", r"rb_good has no 'RUNBOK' \(Runbooks it defines: OTHER, RUNBOOK\)"),
        ("rb_good:NOT_A_RUNBOOK", "NOT_A_RUNBOOK is a dict, not a harness.runbook.Runbook"),
    ],
)
def test_load_runbook_says_what_is_wrong_with_the_spec(
    runbook_modules: None, spec: str, message: str
) -> None:
    with pytest.raises(RunbookLoadError, match=message) as caught:
        load_runbook(spec)
    assert repr(spec) in str(caught.value)
