"""The built-in runbook steps on a real stack: real Postgres (streaming replica, WAL archive,
point-in-time restore), real Toxiproxy, the reference server over real MCP and its real
admin endpoint. All on 127.0.0.1.

One stack for the module; the tests run in order and each leaves the stack usable for the
next: replication lag (a throttled WAL stream: reported, not rebuilt), a failing tool (its circuit opened), a
reconnection storm (admission on), damaged data (restored, replica rebuilt), and last the
primary killed (standby promoted, writes go on, a new standby built).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
import httpx2
import pytest

from harness.config import Scenario
from harness.mcp_client.async_client import call_tool_once, open_session, send
from harness.mcp_client.wire import McpSession
from harness.recover import app_database_dsn
from harness.runbook import Action, ActionOutcome, Runbook, StepOutcome
from harness.runbook.admin import admin_request
from harness.runbook.context import RunbookContext
from harness.runbook.steps import (
    ConnectionRate,
    IntegrityViolations,
    PrimaryConnectivity,
    ReplicationLag,
    ToolSuccessRate,
)
from harness.stack.local import LocalStack
from tests.integration.test_server_admin_live import flood_initialize

T = TypeVar("T")
KIB = 1024


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    scenario = Scenario.model_validate(
        {
            "name": "runbook-live",
            "recovery": {
                "promote_after": None,
                "restore": {"target": "earliest_damage", "timeout": 120},
            },
        }
    )
    stack = LocalStack(scenario)
    run(stack.up())  # with recovery.restore it takes a base backup too
    try:
        yield stack
    finally:
        run(stack.down())
        stack.remove_run_dir()


def context(stack: LocalStack, said: list[str] | None = None) -> RunbookContext:
    return RunbookContext.for_scenario(
        stack, stack.scenario, say=(said if said is not None else []).append
    )


async def execute(step: Any, ctx: RunbookContext) -> Any:
    return await Runbook([step]).execute(ctx)


async def sql(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(query, *args, timeout=30))
    finally:
        await conn.close()


async def admin_state(stack: LocalStack) -> dict[str, Any]:
    (endpoint,) = stack.server_admin()
    return await admin_request(endpoint, "GET", "state", timeout_s=5)


def test_a_lagging_replica_is_reported_not_rebuilt(stack: LocalStack) -> None:
    started = time.monotonic()
    step = ReplicationLag(max_bytes=256 * KIB, max_s=30)
    healthy = run(step.check(context(stack)))
    assert healthy.healthy, healthy.detail
    primary_app = app_database_dsn(stack.current_primary_dsn)
    run(sql(primary_app, "CREATE TABLE lag_probe (id int, pad text)"))
    stack.toxiproxy.add_toxic(
        "pg-replication", "bandwidth", name="slow_wal", attributes={"rate": 4}
    )  # KB/s: the WAL of the insert below takes minutes at that rate
    try:
        run(
            sql(
                primary_app,
                "INSERT INTO lag_probe SELECT i, repeat('x', 1000) FROM generate_series(1, 2000) i",
            )
        )
        record = run(execute(step, context(stack)))
        (outcome,) = record.steps
        # A replica that streams but lags is not rebuilt: a new one would lag the same way.
        assert outcome.outcome == StepOutcome.FIX_FAILED, outcome.detail
        assert "would lag the same way" in outcome.detail
        check = next(a for a in record.actions if a.action == Action.CHECK)
        assert "(over)" in check.detail and "MiB" in check.detail
    finally:
        stack.toxiproxy.remove_toxic("pg-replication", "slow_wal")

    async def caught_up() -> str:
        deadline = time.monotonic() + 20
        while True:
            health = await step.check(context(stack))
            if health.healthy or time.monotonic() > deadline:
                return health.detail if health.healthy else f"still lagging: {health.detail}"
            await asyncio.sleep(0.2)

    assert not run(caught_up()).startswith("still lagging")
    run(sql(primary_app, "DROP TABLE lag_probe"))
    assert time.monotonic() - started < 30


@contextlib.asynccontextmanager
async def tool_traffic(url: str, failing_share: int = 2) -> AsyncIterator[dict[str, int]]:
    """One session calling get_note for ids that do not exist (a tool error every time) and
    search_notes (fine), in turn, until the block ends; counts the replies by kind."""
    seen = {"ok": 0, "error": 0}
    stop = asyncio.Event()

    async def loop() -> None:
        session = McpSession()
        async with httpx2.AsyncClient(timeout=10) as http:
            assert (await open_session(http, url, session)).ok
            turn = 0
            while not stop.is_set():
                turn += 1
                request = (
                    session.tools_call("get_note", {"id": f"missing-{turn}"})
                    if turn % failing_share
                    else session.tools_call("search_notes", {"query": "x"})
                )
                outcome, _ = await send(http, url, request)
                seen["ok" if outcome.ok else "error"] += 1
                await asyncio.sleep(0.01)

    task = asyncio.create_task(loop())
    try:
        yield seen
    finally:
        stop.set()
        await task


def test_failing_tool_gets_its_circuit_opened(stack: LocalStack) -> None:
    started = time.monotonic()
    step = ToolSuccessRate(window_s=5, min_success=0.9, open_above_error_rate=0.5, min_calls=10)

    async def scenario() -> tuple[Any, dict[str, int]]:
        ctx = context(stack)
        async with tool_traffic(stack.endpoints.mcp_url) as seen:
            record = await execute(step, ctx)
        return record, seen

    record, seen = run(scenario())
    (outcome,) = record.steps
    check, fix, recheck = record.actions
    assert seen["ok"] > 10 and seen["error"] > 10
    assert check.outcome == ActionOutcome.UNHEALTHY and "get_note" in check.detail
    assert outcome.outcome == StepOutcome.FIXED, record.as_dict()
    assert "circuit held open on every instance for get_note" in fix.detail
    assert "search_notes" not in fix.detail
    # The re-check ran with get_note still called: its refusals are not counted against it.
    assert recheck.outcome == ActionOutcome.HEALTHY and "refused" in recheck.detail
    state = run(admin_state(stack))
    assert state["breakers"]["tools"]["get_note"]["mode"] == "open"
    assert state["breakers"]["tools"]["search_notes"]["mode"] == "auto"
    (endpoint,) = stack.server_admin()
    body = {"tool": "get_note", "state": "auto"}
    run(admin_request(endpoint, "POST", "breaker", body, timeout_s=5))
    assert time.monotonic() - started < 20


def test_reconnection_storm_turns_admission_on(stack: LocalStack) -> None:
    started = time.monotonic()
    step = ConnectionRate(max_new_per_s=50, admission_rate=20)
    assert not run(admin_state(stack))["admission"]["enabled"]

    async def scenario() -> tuple[Any, Any, list[int]]:
        ctx = context(stack)
        quiet = await step.check(ctx)  # what a watcher's earlier run leaves: a sample
        statuses = await flood_initialize(stack.endpoints.mcp_url, 300)
        return quiet, await execute(step, ctx), statuses

    quiet, record, statuses = run(scenario())
    assert quiet.healthy, quiet.detail
    assert statuses.count(200) == 300
    (outcome,) = record.steps
    check, fix, recheck = record.actions
    assert check.outcome == ActionOutcome.UNHEALTHY and "300 taken" in check.detail
    assert outcome.outcome == StepOutcome.FIXED, record.as_dict()
    assert fix.detail.startswith("admission control on at 20 new sessions/s per instance")
    assert "mcp-server (was off)" in fix.detail
    assert recheck.outcome == ActionOutcome.HEALTHY
    admission = run(admin_state(stack))["admission"]
    assert admission["enabled"] is True and admission["rate"] == 20
    (endpoint,) = stack.server_admin()
    run(admin_request(endpoint, "POST", "admission", {"rate": 0}, timeout_s=5))
    assert time.monotonic() - started < 20


def note(note_id: str, title: str, body: str) -> tuple[str, str, str, str]:
    checksum = hashlib.sha256(f"{title}\n{body}".encode()).hexdigest()
    return note_id, title, body, checksum


def test_damaged_rows_are_restored_to_before_the_damage(stack: LocalStack) -> None:
    started = time.monotonic()
    server_dsn = stack.endpoints.server_database_url
    prefix = uuid.uuid4().hex[:8]
    good = [note(f"{prefix}-{i}", f"title {i}", f"body {i}") for i in range(3)]
    for row in good:
        run(
            sql(
                server_dsn,
                "INSERT INTO notes (id, title, body, checksum) VALUES ($1, $2, $3, $4)",
                *row,
            )
        )
    time.sleep(0.05)  # the damage commits strictly later than the good rows
    damaged = good[1][0]
    run(sql(server_dsn, "UPDATE notes SET body = body || ' (altered)' WHERE id = $1", damaged))
    step = IntegrityViolations()
    found = run(step.check(context(stack)))
    assert not found.healthy and "checksum 1" in found.detail and damaged in found.detail

    said: list[str] = []
    record = run(execute(step, context(stack, said)))
    (outcome,) = record.steps
    assert outcome.outcome == StepOutcome.FIXED, record.as_dict()
    assert "restored to before" in outcome.detail and "new replica in" in outcome.detail
    assert any("restoring to before" in line for line in said)
    rows = run(
        sql(server_dsn, "SELECT id, body FROM notes WHERE id LIKE $1 ORDER BY id", f"{prefix}-%")
    )
    assert [(r["id"], r["body"]) for r in rows] == [(i, b) for i, _, b, _ in good]
    lag = run(ReplicationLag().check(context(stack)))
    assert lag.healthy, lag.detail  # the rebuilt replica streams
    assert time.monotonic() - started < 45


def test_killed_primary_is_replaced_and_writes_go_on(stack: LocalStack) -> None:
    started = time.monotonic()
    step = PrimaryConnectivity(timeout_s=2)
    before = run(step.check(context(stack)))
    assert before.healthy, before.detail
    killed = run(stack.kill_primary())
    assert killed.confirmed
    down = run(step.check(context(stack)))
    assert not down.healthy and "no read-write node" in down.detail

    said: list[str] = []
    record = run(execute(step, context(stack, said)))
    (outcome,) = record.steps
    assert outcome.outcome == StepOutcome.FIXED, record.as_dict()
    fix = next(a for a in record.actions if a.action == Action.FIX)
    assert "promoted the standby" in fix.detail and "pools connect anew: mcp-server" in fix.detail
    assert said == ["primary_connectivity: the primary does not answer; promoting the standby"]

    rows = run(
        sql(
            stack.endpoints.server_database_url,
            "SELECT pg_is_in_recovery(), pg_current_xact_id()::text",
        )
    )
    assert rows[0][0] is False
    note_id = f"after-failover-{uuid.uuid4().hex[:8]}"
    _, title, body, checksum = note(note_id, "after failover", "written through MCP")
    arguments = {"id": note_id, "title": title, "body": body, "checksum": checksum}
    created = run(call_tool_once(stack.endpoints.mcp_url, "create_note", arguments))
    assert created.ok and created.result.get("isError") is not True, created
    stored = run(
        sql(
            app_database_dsn(stack.current_primary_dsn),
            "SELECT body FROM notes WHERE id = $1",
            note_id,
        )
    )
    assert [r["body"] for r in stored] == [body]

    # The old replica is the primary now and nothing streams from it: a new standby.
    lag = ReplicationLag()
    alone = run(lag.check(context(stack)))
    assert not alone.healthy and "no replica streams" in alone.detail, alone.detail
    record = run(execute(lag, context(stack)))
    (outcome,) = record.steps
    assert outcome.outcome == StepOutcome.FIXED, record.as_dict()
    assert "new streaming replica" in outcome.detail
    streaming = run(sql(stack.current_primary_dsn, "SELECT state FROM pg_stat_replication"))
    assert [r["state"] for r in streaming] == ["streaming"]
    # and the server still writes: its DSN leads to the primary, not to the new standby
    healthy = run(step.check(context(stack)))
    assert healthy.healthy, healthy.detail
    _, title, body, checksum = note(f"{note_id}-2", "after rebuild", "written through MCP")
    arguments = {"id": f"{note_id}-2", "title": title, "body": body, "checksum": checksum}
    created = run(call_tool_once(stack.endpoints.mcp_url, "create_note", arguments))
    assert created.ok and created.result.get("isError") is not True, created
    assert time.monotonic() - started < 40
