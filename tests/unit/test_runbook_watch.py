"""The runbook watcher: recovery.runbook in a scenario, the pure rules of when to execute,
and the watcher itself on scripted steps (real event loop, intervals of milliseconds)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.config import RecoveryConfig, ScenarioError, load_scenario
from harness.run import PlannedRun, execute_series
from harness.runbook import (
    WATCH_COOLDOWN_MIN_S,
    FixFailed,
    FunctionStep,
    Health,
    Runbook,
    RunbookLoadError,
    RunbookRecord,
    RunbookWatch,
    StepOutcome,
    StepRecord,
    describe_execution,
    execution_due,
    fixable_alerts,
    fixed_at_s,
    watch_cooldown_s,
)
from harness.runbook.steps import PRIMARY_CONNECTIVITY, runbook_for
from harness.shipped import SCENARIOS_DIR

TICK_S = 0.005


def scenario_file(tmp_path: Path, recovery: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nload: {run_time: 30s}\nfaults: [{kind: kill_primary, at: 10s}]\n"
        f"recovery: {recovery}\n"
    )
    return path


# -- recovery.runbook in a scenario -------------------------------------------------------


def test_a_runbook_takes_the_promotion_over(tmp_path: Path) -> None:
    scenario = load_scenario(scenario_file(tmp_path, "{runbook: default, watch_interval: 500ms}"))
    assert scenario.recovery.runbook == "default"
    assert scenario.recovery.promote_after is None
    assert scenario.recovery.watch_interval == 0.5
    assert RecoveryConfig().runbook is None and RecoveryConfig().promote_after == 2.0
    assert RecoveryConfig().watch_interval == 1.0


def test_runbook_and_promote_after_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario_file(tmp_path, "{runbook: default, promote_after: 2s}"))
    message = str(caught.value)
    assert "s.yaml" in message and "recovery: promote_after: must be null" in message
    assert "the runbook decides when to promote" in message
    explicit_null = load_scenario(scenario_file(tmp_path, "{runbook: a.b:RB, promote_after: null}"))
    assert explicit_null.recovery.runbook == "a.b:RB"


@pytest.mark.parametrize(
    "spec", ["defaults", "module", "a.b:", ":RB", "a..b:RB", "a.b:R B", "1a:RB"]
)
def test_a_malformed_runbook_spec_is_refused_at_load(tmp_path: Path, spec: str) -> None:
    with pytest.raises(
        ScenarioError, match=r"recovery\.runbook: .* is not a runbook: write default"
    ):
        load_scenario(scenario_file(tmp_path, f"{{runbook: '{spec}'}}"))


def test_watch_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"recovery\.watch_interval: must be greater than zero"):
        load_scenario(scenario_file(tmp_path, "{runbook: default, watch_interval: 0s}"))


def test_the_shipped_runbook_scenario_is_primary_kill_without_the_scripted_promotion() -> None:
    scripted = load_scenario(SCENARIOS_DIR / "primary_kill.yaml")
    watched = load_scenario(SCENARIOS_DIR / "primary_kill_runbook.yaml")
    assert watched.recovery.runbook == "default" and watched.recovery.promote_after is None
    assert watched.recovery.watch_interval == 1.0
    assert watched.faults == scripted.faults and watched.load == scripted.load
    assert watched.postgres == scripted.postgres and watched.objectives == scripted.objectives


def test_runbook_for_builds_the_default_anew_and_imports_the_others(tmp_path: Path) -> None:
    scenario = load_scenario(scenario_file(tmp_path, "{runbook: default}"))
    first, second = runbook_for("default", scenario), runbook_for("default", scenario)
    assert first is not second
    assert [s.name for s in first.steps][0] == PRIMARY_CONNECTIVITY
    assert runbook_for("harness.runbook.steps:DEFAULT_RUNBOOK", scenario).steps
    with pytest.raises(RunbookLoadError, match="no module named 'no_such_runbooks'"):
        runbook_for("no_such_runbooks:RB", scenario)


def test_a_runbook_that_does_not_import_stops_the_run_before_the_stack(tmp_path: Path) -> None:
    scenario = load_scenario(scenario_file(tmp_path, "{runbook: 'no_such_runbooks.mod:RB'}"))
    (record,) = asyncio.run(
        execute_series(scenario, [PlannedRun("r1", tmp_path / "r1")], logs_dir=tmp_path / "logs")
    )
    assert not record.stack_up and not record.complete
    assert any(
        n.startswith("recovery.runbook: runbook 'no_such_runbooks.mod:RB': no module named")
        and n.endswith("nothing was started")
        for n in record.notes
    ), record.notes


# -- when to execute ------------------------------------------------------------------------


def steps(*outcomes: tuple[str, StepOutcome]) -> RunbookRecord:
    record = RunbookRecord(start_s=10.0, check_only=True)
    record.steps = [
        StepRecord(n, o, f"{n} detail", 10.0 + i, 0.5) for i, (n, o) in enumerate(outcomes)
    ]
    return record


async def healthy(ctx: object) -> bool:
    return True


async def fix_nothing(ctx: object) -> str:
    return "did nothing"


TWO_STEPS = Runbook([FunctionStep("primary", healthy, fix_nothing), FunctionStep("lag", healthy)])


def test_only_an_unhealthy_step_with_a_fix_calls_for_an_execution() -> None:
    check = steps(("primary", StepOutcome.ALERT), ("lag", StepOutcome.ALERT))
    assert [s.name for s in fixable_alerts(TWO_STEPS, check)] == ["primary"]
    alert_only = steps(("primary", StepOutcome.HEALTHY), ("lag", StepOutcome.ALERT))
    assert fixable_alerts(TWO_STEPS, alert_only) == []


def test_an_execution_waits_for_the_cooldown_after_the_last() -> None:
    fixable = fixable_alerts(TWO_STEPS, steps(("primary", StepOutcome.ALERT)))
    assert execution_due(fixable, 12.0, None, 5.0)
    assert not execution_due([], 12.0, None, 5.0)
    assert not execution_due(fixable, 12.0, 8.0, 5.0)
    assert execution_due(fixable, 13.0, 8.0, 5.0)
    assert watch_cooldown_s(1.0) == WATCH_COOLDOWN_MIN_S == 5.0
    assert watch_cooldown_s(0.1) == 5.0 and watch_cooldown_s(3.0) == 15.0


def test_fixed_at_is_when_the_last_fix_held_if_every_fix_did() -> None:
    record = steps(("primary", StepOutcome.FIXED), ("lag", StepOutcome.ALERT))
    assert fixed_at_s(TWO_STEPS, record) == 10.5
    assert fixed_at_s(TWO_STEPS, steps(("primary", StepOutcome.FIX_FAILED))) is None
    assert fixed_at_s(TWO_STEPS, steps(("primary", StepOutcome.HEALTHY))) is None
    assert describe_execution(record) == "runbook: primary fixed in 0.5 s, lag alert"
    assert describe_execution(steps(("primary", StepOutcome.HEALTHY))) == (
        "runbook: every step healthy"
    )


# -- the watcher on scripted steps ----------------------------------------------------------


@dataclass
class Stack:
    """A primary that can be down, and what the runbook did to it."""

    down_from_round: int | None = None
    fix_works: bool = True
    rounds: int = 0
    down: bool = False
    fixes: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)


def watched(stack: Stack, **kwargs: object) -> RunbookWatch[Stack]:
    async def primary_up(s: Stack) -> Health:
        s.rounds += 1
        if s.down_from_round is not None and s.rounds == s.down_from_round:
            s.down = True
        return Health(not s.down, "down" if s.down else "up")

    async def promote(s: Stack) -> str:
        s.fixes += 1
        if not s.fix_works:
            raise FixFailed("no standby")
        s.down = False
        return "promoted"

    async def lag_ok(s: Stack) -> bool:
        return True

    runbook = Runbook(
        [
            FunctionStep("primary", primary_up, promote),
            FunctionStep("lag", lag_ok, preconditions=("primary",)),
        ]
    )
    loop = asyncio.get_running_loop()
    return RunbookWatch(
        runbook,
        stack,
        TICK_S,
        loop.time(),
        event=lambda t, line: stack.events.append((t, line)),
        **kwargs,  # type: ignore[arg-type]
    )


async def watch_for(watch: RunbookWatch[Stack], rounds: int) -> None:
    """Watch until ``rounds`` rounds have been looked at or paused (a slow machine only
    makes it take longer)."""
    stop = asyncio.Event()
    task = asyncio.create_task(watch.run(stop))
    async with asyncio.timeout(10):
        while watch.rounds + watch.paused_rounds < rounds:
            await asyncio.sleep(TICK_S)
    stop.set()
    await asyncio.wait_for(task, 5.0)


def test_the_watcher_executes_the_runbook_once_on_degradation() -> None:
    async def scenario() -> tuple[Stack, RunbookWatch[Stack]]:
        stack = Stack(down_from_round=3)
        watch = watched(stack)
        await watch_for(watch, 8)
        return stack, watch

    stack, watch = asyncio.run(scenario())
    assert stack.fixes == 1 and not stack.down
    assert watch.rounds >= 8
    (execution,) = watch.summary()["executions"]
    assert [s["outcome"] for s in execution["steps"]] == ["fixed", "healthy"]
    assert execution["trigger"] == [{"step": "primary", "detail": "check unhealthy: down"}]
    assert execution["t_s"] == execution["start_s"] and not execution["check_only"]
    summary = watch.summary()
    assert summary["first_degraded_s"] is not None
    assert summary["first_degraded_s"] <= execution["t_s"] <= summary["fixed_s"]
    assert summary["gaps"] == [] and summary["unhealthy_checks"] == {"primary": 1, "lag": 1}
    lines = [line for _, line in stack.events]
    assert lines[0].startswith("runbook check: primary alert: check unhealthy: down; lag skipped")
    assert lines[1].startswith("runbook: primary fixed in ")
    assert len(lines) == 2  # healthy after the fix: no change to tell


def test_a_fix_that_fails_is_not_retried_within_the_cooldown() -> None:
    async def scenario() -> tuple[Stack, RunbookWatch[Stack]]:
        stack = Stack(down_from_round=1, fix_works=False)
        watch = watched(stack)
        await watch_for(watch, 8)
        return stack, watch

    stack, watch = asyncio.run(scenario())
    assert stack.fixes == 1 and watch.rounds >= 8
    summary = watch.summary()
    assert summary["fixed_s"] is None and len(summary["executions"]) == 1
    assert [g["step"] for g in summary["gaps"]] == ["primary", "lag"]
    assert summary["unhealthy_checks"]["primary"] == watch.rounds


def test_the_watcher_does_not_look_while_paused() -> None:
    async def scenario() -> tuple[Stack, RunbookWatch[Stack]]:
        stack = Stack(down_from_round=1)
        watch = watched(stack, paused=lambda: True)
        await watch_for(watch, 4)
        return stack, watch

    stack, watch = asyncio.run(scenario())
    assert stack.rounds == 0 and watch.rounds == 0 and watch.paused_rounds >= 4
    assert watch.summary()["executions"] == [] and watch.summary()["first_degraded_s"] is None


def test_a_stop_during_a_round_executes_nothing_after_it() -> None:
    async def scenario() -> Stack:
        stack = Stack(down_from_round=1)
        watch = watched(stack)
        stop = asyncio.Event()
        stop.set()
        await watch.round(stop)
        return stack

    assert asyncio.run(scenario()).fixes == 0


def test_a_check_under_way_at_the_fault_detects_when_it_ends() -> None:
    """A clean-clone CI run caught it: a check began 4.7 ms before the kill and failed on
    it; stamped at its start, the degradation was 'seen' before the fault happened."""
    from harness.runbook import first_unhealthy_s
    from harness.runbook.engine import Action, ActionOutcome, ActionRecord, RunbookRecord

    check = RunbookRecord(start_s=7.99, check_only=True)
    check.actions.append(
        ActionRecord("primary_connectivity", Action.CHECK, 7.9956, 0.05, ActionOutcome.UNHEALTHY)
    )
    assert first_unhealthy_s(check) == pytest.approx(8.0456)
