"""The built-in runbook steps' pure parts: Prometheus samples and their rates over a window
(on a fake clock), the lag decision, which tools to open, where a restore stops; and what
the steps say for a server without an admin endpoint or metrics (a stand-in stack that has
neither: only those two methods are ever called)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from harness.measure.exposition import ExpositionError, SeriesKey, counter_increase, parse_metrics
from harness.measure.integrity import CheckResult, IntegrityReport
from harness.runbook import FixFailed, Health, Runbook, StepOutcome
from harness.runbook import steps as runbook_steps
from harness.runbook.admin import AdminRequestFailed, admin_request
from harness.runbook.context import NO_ADMIN, RunbookContext
from harness.runbook.counters import CounterHistory, CounterWindow, MetricsUnavailable
from harness.runbook.steps import (
    ConnectionRate,
    IntegrityViolations,
    PrimaryConnectivity,
    ReplicaLag,
    ReplicationLag,
    ToolCalls,
    ToolSuccessRate,
    default_runbook,
    integrity_health,
    lag_health,
    plan_restore,
    session_rate_health,
    success_rate,
    tool_calls,
    tools_to_open,
)
from harness.stack import AdminEndpoint, Stack, StackError
from tests.helpers import FakeClock

MIB = 1024 * 1024


def key(name: str, **labels: str) -> SeriesKey:
    return (name, tuple(sorted(labels.items())))


def calls(tool: str) -> SeriesKey:
    return key("mcp_requests_total", method="tools/call", tool=tool)


def errors(tool: str) -> SeriesKey:
    return key("mcp_request_errors_total", method="tools/call", tool=tool)


INIT = key("mcp_requests_total", method="initialize", tool="")


def test_parse_metrics_reads_labels_escapes_and_refuses_a_broken_page() -> None:
    text = (
        "# HELP mcp_requests_total JSON-RPC requests answered.\n"
        "# TYPE mcp_requests_total counter\n"
        'mcp_requests_total{method="tools/call",tool="create_note"} 12\n'
        'mcp_requests_total{tool="x",method="initialize"} 3 1700000000000\n'
        'weird{label="a \\"quoted\\" \\\\ value\\n"} 1.5\n'
        "mcp_db_up 1.0\n"
        "mcp_sessions_open NaN\n"
    )
    series = parse_metrics(text)
    assert series[key("mcp_requests_total", method="tools/call", tool="create_note")] == 12
    assert series[key("mcp_requests_total", method="initialize", tool="x")] == 3
    assert series[key("weird", label='a "quoted" \\ value\n')] == 1.5
    assert series[key("mcp_db_up")] == 1.0
    assert len(series) == 5
    # Half a page is not read as the whole: a rate would be made out of nothing.
    with pytest.raises(ExpositionError, match="not a Prometheus text exposition"):
        parse_metrics(text + "not a sample line\n")
    with pytest.raises(ExpositionError):
        parse_metrics(text + "broken_value{} abc\n")


def test_counter_increase_counts_growth_resets_and_new_series() -> None:
    before = {key("a"): 10.0, key("b"): 50.0, key("gone"): 3.0}
    after = {key("a"): 15.0, key("b"): 4.0, key("new"): 7.0}
    assert counter_increase(before, after) == {key("a"): 5.0, key("b"): 4.0, key("new"): 7.0}


def scripted(*reads: dict[str, dict[SeriesKey, float] | str]) -> Callable[[], Any]:
    """A scrape answering ``reads`` in turn (the last one again after them)."""
    remaining = list(reads)

    async def scrape() -> dict[str, dict[SeriesKey, float] | str]:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return scrape


def test_window_without_a_recent_sample_samples_twice_min_span_apart() -> None:
    clock = FakeClock()
    history = CounterHistory(window_s=10, min_span_s=2)
    scrape = scripted({"u": {INIT: 5}}, {"u": {INIT: 105}})
    window = asyncio.run(history.window(clock, scrape))
    assert clock.slept == [2]
    assert window.span_s == 2 and window.rate("mcp_requests_total", method="initialize") == 50


def test_window_starts_at_the_oldest_sample_still_in_it() -> None:
    clock = FakeClock()
    history = CounterHistory(window_s=10, min_span_s=2)
    history.samples = [(88.0, {"u": {INIT: 0}}), (95.0, {"u": {INIT: 10}})]
    window = asyncio.run(history.window(clock, scripted({"u": {INIT: 40}})))
    assert clock.slept == []  # the sample at 95 is 5 s old: no waiting
    assert window.span_s == 5 and window.increase[INIT] == 30
    assert [t for t, _ in history.samples] == [95.0, 100.0]  # the one at 88 left the window


def test_window_with_a_too_recent_sample_waits_out_the_rest_of_min_span() -> None:
    clock = FakeClock()
    history = CounterHistory(window_s=10, min_span_s=2)
    history.samples = [(99.5, {"u": {INIT: 0}})]
    window = asyncio.run(history.window(clock, scripted({"u": {INIT: 1}}, {"u": {INIT: 4}})))
    assert clock.slept == [1.5] and window.span_s == 2 and window.increase[INIT] == 4


def test_window_sums_instances_and_names_those_it_could_not_read() -> None:
    clock = FakeClock()
    history = CounterHistory(window_s=10, min_span_s=1)
    history.samples = [(98.0, {"a": {INIT: 0}, "b": {INIT: 100}})]
    read: dict[str, dict[SeriesKey, float] | str] = {
        "a": {INIT: 10},
        "b": {INIT: 3},
        "c": "ConnectError: refused",
    }
    window = asyncio.run(history.window(clock, scripted(read)))
    assert window.increase[INIT] == 13  # b restarted: its 3 count whole
    assert window.unread == ("c",) and "not read: c" in window.note()


def test_window_without_any_metrics_says_why() -> None:
    history = CounterHistory(window_s=10, min_span_s=1)
    with pytest.raises(MetricsUnavailable, match="user's server"):
        asyncio.run(history.window(FakeClock(), scripted({})))
    with pytest.raises(MetricsUnavailable, match="HTTP 404"):
        asyncio.run(history.window(FakeClock(), scripted({"u": "HTTP 404"})))


def test_session_rate_counts_initializes_and_notes_the_shed() -> None:
    storm = CounterWindow(2.0, {INIT: 300, key("mcp_admission_shed_total"): 40})
    health = session_rate_health(storm, max_new_per_s=50)
    assert not health.healthy
    assert "150.0 new sessions/s" in health.detail and "40 shed" in health.detail
    assert session_rate_health(CounterWindow(2.0, {INIT: 60}), 50).healthy


def test_tool_calls_leave_out_refusals_and_unknown_tools() -> None:
    increase = {
        calls("create_note"): 100,
        errors("create_note"): 90,
        key("mcp_breaker_rejected_total", tool="create_note"): 40,
        calls("get_note"): 50,
        errors("get_note"): 1,
        calls("unknown"): 9,
        errors("unknown"): 9,
        INIT: 7,
    }
    tools = tool_calls(increase)
    assert set(tools) == {"create_note", "get_note"}
    assert tools["create_note"] == ToolCalls(100, 90, 40)
    assert tools["create_note"].ran == 60 and tools["create_note"].failed == 50
    rate, ran = success_rate(tools)
    assert ran == 110 and rate == pytest.approx(59 / 110)
    assert tools_to_open(tools, above_error_rate=0.5, min_calls=10) == ["create_note"]
    assert tools_to_open(tools, above_error_rate=0.9, min_calls=10) == []
    assert tools_to_open(tools, above_error_rate=0.5, min_calls=61) == []


def test_an_open_circuit_alone_is_no_failure_of_its_tool() -> None:
    only_refused = ToolCalls(calls=30, errors=30, refused=30)
    assert only_refused.ran == 0 and only_refused.error_rate is None
    assert success_rate({"create_note": only_refused}) == (None, 0)


def lag(state: str, lag_bytes: float | None, lag_s: float | None) -> ReplicaLag:
    return ReplicaLag("replica", state, lag_bytes, lag_s)


def test_lag_decision() -> None:
    bound = {"max_bytes": 16 * MIB, "max_s": 5.0}
    assert lag_health([lag("streaming", 1024, None), lag("catchup", 0, None)], **bound).healthy
    assert lag_health([lag("streaming", 0, 0.2)], **bound).healthy
    over_bytes = lag_health([lag("streaming", 20 * MIB, 0.1)], **bound)
    assert not over_bytes.healthy and "20.0 MiB" in over_bytes.detail
    assert "(over)" in over_bytes.detail
    assert not lag_health([lag("streaming", 0, 6.0)], **bound).healthy
    assert not lag_health([lag("streaming", None, None)], **bound).healthy
    none = lag_health([], **bound)
    assert not none.healthy and none.detail == "no replica streams from the primary"
    starting = lag_health([lag("startup", None, None)], **bound)
    assert not starting.healthy and "replica startup" in starting.detail


T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def report(*checks: CheckResult) -> IntegrityReport:
    return IntegrityReport(0.0, checks)


def test_restore_stops_just_before_the_earliest_dated_damage() -> None:
    plan = plan_restore(
        report(
            CheckResult("checksum", frozenset({"a", "b"}), {"a": T0 + dt.timedelta(seconds=3)}),
            CheckResult("title", frozenset({"c"}), {"c": T0}),
            CheckResult("late", frozenset(), error="timed out after 5 s"),
        )
    )
    assert plan.target.kind == "time" and plan.target.value == T0.isoformat()
    assert plan.earliest_damage == T0 and plan.undated == 1


def test_restore_needs_dated_evidence() -> None:
    with pytest.raises(FixFailed, match="none dated"):
        plan_restore(report(CheckResult("parent_exists", frozenset({"x"}))))
    with pytest.raises(FixFailed, match="nothing to restore"):
        plan_restore(report(CheckResult("checksum", frozenset())))


def test_integrity_health() -> None:
    assert integrity_health(report(CheckResult("checksum", frozenset()))) == Health(
        True, "1 integrity check(s), no violation"
    )
    bad = integrity_health(report(CheckResult("checksum", frozenset({"n1", "n2"}))))
    assert not bad.healthy and "checksum 2" in bad.detail and "n1, n2" in bad.detail
    failed = integrity_health(report(CheckResult("checksum", frozenset(), error="boom")))
    assert not failed.healthy and failed.detail.startswith("not measured: checksum: boom")


def test_parameters_are_checked_when_a_step_is_built() -> None:
    with pytest.raises(ValueError, match="timeout_s must be a positive number"):
        PrimaryConnectivity(timeout_s=0)
    with pytest.raises(ValueError, match="min_success is a fraction"):
        ToolSuccessRate(min_success=90)
    with pytest.raises(ValueError, match="burst must be >= 1"):
        ConnectionRate(burst=0)
    with pytest.raises(ValueError, match="do not fit in fix_timeout_s"):
        IntegrityViolations(restore_timeout_s=550)
    assert IntegrityViolations(restore_timeout_s=540).too_long(540) is None
    assert ConnectionRate(admission_rate=20).admission_body() == {"rate": 20}
    assert ConnectionRate(admission_rate=20, burst=5, queue=0, max_wait_s=1).admission_body() == {
        "rate": 20,
        "burst": 5,
        "queue": 0,
        "max_wait": 1,
    }


def test_default_runbook_puts_the_primary_first() -> None:
    runbook = default_runbook()
    names = [s.name for s in runbook.steps]
    assert names == [
        "primary_connectivity",
        "replication_lag",
        "connection_rate",
        "tool_success_rate",
        "integrity_violations",
    ]
    needs = {s.name: tuple(s.preconditions) for s in runbook.steps}
    assert needs["connection_rate"] == ()  # a storm is throttled even with no primary
    assert needs["tool_success_rate"] == ("primary_connectivity",)


@dataclass
class ServerlessStack:
    """Stands in for a stack whose server is the user's: no admin endpoint, no metrics."""

    metrics_urls: list[str] = field(default_factory=list)
    base_backups: list[object] = field(default_factory=list)

    def server_admin(self) -> list[AdminEndpoint]:
        return []

    def server_metrics_urls(self) -> list[str]:
        return self.metrics_urls


def users_server_context() -> RunbookContext:
    return RunbookContext(cast(Stack, ServerlessStack()), say=lambda _: None, clock=FakeClock())


def test_without_metrics_or_admin_the_rate_steps_say_so() -> None:
    runbook = Runbook([ConnectionRate(), ToolSuccessRate()])
    record = asyncio.run(runbook.execute(users_server_context()))
    assert [s.outcome for s in record.steps] == [StepOutcome.FIX_FAILED] * 2
    checks = [a for a in record.actions if a.action == "check"]
    assert all(a.detail.startswith("not measured: the stack lists no server") for a in checks)
    assert all(NO_ADMIN in s.detail for s in record.steps)


def test_failing_tools_on_a_users_server_need_a_person(monkeypatch: pytest.MonkeyPatch) -> None:
    """Metrics show a failing tool, but there is no breaker to open: FixFailed says so."""
    reads = scripted(
        {"u": {calls("save"): 0, errors("save"): 0}}, {"u": {calls("save"): 40, errors("save"): 40}}
    )
    monkeypatch.setattr(runbook_steps, "metrics_scraper", lambda ctx: reads)
    record = asyncio.run(Runbook([ToolSuccessRate(min_calls=5)]).execute(users_server_context()))
    (step,) = record.steps
    assert step.outcome == StepOutcome.FIX_FAILED
    assert "open the circuit of the failing tools in your server by hand" in step.detail
    assert "0.0% of 40 tool calls succeeded" in record.actions[0].detail


def test_spread_failures_open_no_circuit(monkeypatch: pytest.MonkeyPatch) -> None:
    step = ToolSuccessRate(min_calls=5, open_above_error_rate=0.5)
    step.last = {"a": ToolCalls(10, 4), "b": ToolCalls(10, 4)}
    endpoint = AdminEndpoint("mcp-server", "http://127.0.0.1:1/admin", "t" * 20)
    ctx = users_server_context()
    monkeypatch.setattr(ctx.stack, "server_admin", lambda: [endpoint])
    with pytest.raises(FixFailed, match="spread over the tools"):
        asyncio.run(step.fix(ctx))


def test_a_restore_that_would_be_cancelled_halfway_is_not_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = ServerlessStack(base_backups=["a base backup"])
    ctx = RunbookContext(cast(Stack, stack), restore_timeout_s=1000, clock=FakeClock())
    step = IntegrityViolations(checks=[])
    step_report = report(CheckResult("checksum", frozenset({"n1"}), {"n1": T0}))

    async def found(_: RunbookContext) -> IntegrityReport:
        return step_report

    monkeypatch.setattr(step, "report", found)
    with pytest.raises(FixFailed, match="not restoring: a restore of up to 1000 s"):
        asyncio.run(step.fix(ctx))


def test_the_admin_token_goes_to_loopback_only() -> None:
    elsewhere = AdminEndpoint("mcp-server", "http://10.1.2.3:8000/admin", "secret-token-123456")
    with pytest.raises(AdminRequestFailed, match="loopback only"):
        asyncio.run(admin_request(elsewhere, "GET", "state", timeout_s=1))
    assert "secret-token" not in repr(elsewhere)


@dataclass
class ReplicaStack(ServerlessStack):
    """A stack whose ``rebuild_replica`` is counted, or fails as an attached stack's does."""

    rebuilt: int = 0
    refuse: bool = False
    current_primary_port: int = 5433

    async def rebuild_replica(self) -> float:
        if self.refuse:
            raise StackError("a new replica needs the process that started the stack")
        self.rebuilt += 1
        return 0.5


def replication_fix(
    monkeypatch: pytest.MonkeyPatch, replicas: list[ReplicaLag], stack: ReplicaStack
) -> tuple[ReplicationLag, RunbookContext]:
    step = ReplicationLag()

    async def rows(ctx: RunbookContext) -> list[ReplicaLag]:
        return replicas

    monkeypatch.setattr(step, "replicas", rows)
    return step, RunbookContext(cast(Stack, stack), say=lambda _: None, clock=FakeClock())


def test_no_connected_replica_gets_a_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = ReplicaStack()
    step, ctx = replication_fix(monkeypatch, [], stack)
    done = asyncio.run(step.fix(ctx))
    assert stack.rebuilt == 1 and "new streaming replica" in done and "5433" in done


def test_a_replica_catching_up_is_left_to_catch_up(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = ReplicaStack()
    step, ctx = replication_fix(monkeypatch, [ReplicaLag("r", "catchup", None, None)], stack)
    with pytest.raises(FixFailed, match=r"connected \(r catchup\): wait for it to stream"):
        asyncio.run(step.fix(ctx))
    assert stack.rebuilt == 0


def test_a_lagging_replica_is_left_to_a_person(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = ReplicaStack()
    step, ctx = replication_fix(monkeypatch, [ReplicaLag("r", "streaming", 1e9, 60.0)], stack)
    with pytest.raises(FixFailed, match="would lag the same way"):
        asyncio.run(step.fix(ctx))
    assert stack.rebuilt == 0


def test_a_replica_the_stack_cannot_build_needs_a_person(monkeypatch: pytest.MonkeyPatch) -> None:
    step, ctx = replication_fix(monkeypatch, [], ReplicaStack(refuse=True))
    with pytest.raises(FixFailed, match="could not be built: a new replica needs the process"):
        asyncio.run(step.fix(ctx))
