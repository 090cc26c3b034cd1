"""The built-in runbook steps: what an on-call person does first, as steps the stack runs.

Each step is a small dataclass of ``harness.runbook.Step`` with its parameters, usable
alone in a user's own runbook (``Runbook([PrimaryConnectivity(timeout_s=1), ...])``):

- ``PrimaryConnectivity``: a write through the server's own DSN; fix: promote the
  standby, then make each server's pool connect anew (``POST /admin/pool/repoint``).
- ``ReplicationLag``: replay lag of the streaming replica on the primary; fix, only when
  no replica is connected at all: a new one from the primary.
- ``ConnectionRate``: new sessions per second from the servers' ``/metrics`` (a
  reconnection storm); fix: admission control at a set rate (``POST /admin/admission``).
- ``ToolSuccessRate``: tools/call success over the last seconds from ``/metrics``; fix:
  hold open the circuit of each tool failing above a rate (``POST /admin/breaker``).
- ``IntegrityViolations``: the integrity checks on the primary; fix: point-in-time
  restore to just before the earliest damaging commit they date, then a new replica.

The fixes act through real interfaces only: Postgres (promotion, restore), the reference
server's admin endpoint (token-protected, loopback only) and Toxiproxy. A user's server
has no admin endpoint and may have no metrics the harness knows: the steps that need
them say so in their record (``not measured``, ``FixFailed``) instead of pretending.

Every step gets a ``RunbookContext``, built by the caller (the watcher in a run, or the
CLI against a stack that is up); nothing here imports from the run.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from harness.config import RUNBOOK_DEFAULT, IntegrityCheck, Scenario
from harness.measure.exposition import SeriesKey, total
from harness.measure.integrity import IntegrityChecker, IntegrityReport, earliest_new_change
from harness.recover import app_database_dsn
from harness.redaction import redact
from harness.runbook.admin import admin_all
from harness.runbook.context import NO_ADMIN, NOT_MEASURED, RunbookContext
from harness.runbook.counters import (
    CounterHistory,
    CounterWindow,
    MetricsUnavailable,
    history,
    metrics_scraper,
)
from harness.runbook.engine import (
    FixFailed,
    Health,
    Runbook,
    Step,
    load_runbook,
)
from harness.stack import RestoreTarget, StackError
from harness.stack.postgres import DB_ERRORS

PRIMARY_CONNECTIVITY = "primary_connectivity"
REPLICATION_LAG = "replication_lag"
CONNECTION_RATE = "connection_rate"
TOOL_SUCCESS_RATE = "tool_success_rate"
INTEGRITY_VIOLATIONS = "integrity_violations"

MIB = 1024 * 1024
REPLICA_ALLOWANCE_S = 60.0
"""What ``IntegrityViolations`` keeps of its fix's time for the new replica after a restore."""


def _positive(step: str, **values: float | None) -> None:
    for key, value in values.items():
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ValueError(f"{step}: {key} must be a positive number, not {value!r}")


# -- primary database connectivity ------------------------------------------------------

WRITE_SQL = "SELECT current_setting('port')::int, pg_current_xact_id()::text"
"""A write that touches no table: taking a transaction id commits a WAL record, and a
standby refuses it ("cannot assign TransactionIds during recovery")."""


@dataclass
class PrimaryConnectivity(Step[RunbookContext]):
    """A write through the server's own DSN (both proxies, read-write target) commits on
    the node the stack says is primary, within ``timeout_s``.

    Fix: when the primary does not answer even directly (a dead machine, not a broken
    path to it), promote the standby and make each server's pool connect anew; the DSN
    does not change, the read-write target finds the new primary. A primary that still
    answers directly is not promoted over: that would make two primaries."""

    timeout_s: float = 2.0
    name: str = PRIMARY_CONNECTIVITY
    check_timeout_s: float = 10.0
    fix_timeout_s: float = 60.0
    preconditions: Sequence[str] = ()

    def __post_init__(self) -> None:
        _positive(self.name, timeout_s=self.timeout_s)

    async def check(self, ctx: RunbookContext) -> Health:
        stack = ctx.stack
        started = ctx.clock.now()
        try:
            conn = await asyncpg.connect(
                stack.endpoints.server_database_url, timeout=self.timeout_s
            )
        except DB_ERRORS as exc:
            return Health(False, f"no read-write node through the server's DSN: {_why(exc)}")
        try:
            row = await conn.fetchrow(WRITE_SQL, timeout=self.timeout_s)
        except DB_ERRORS as exc:
            return Health(False, f"the write through the server's DSN failed: {_why(exc)}")
        finally:
            await _close(conn)
        port = row[0] if row is not None else None
        took_ms = (ctx.clock.now() - started) * 1000
        if port != stack.current_primary_port:
            return Health(
                False,
                f"the server's DSN writes to the node at port {port}, but the primary is at "
                f"port {stack.current_primary_port}: two primaries? Stop one before going on",
            )
        return Health(True, f"write committed on the primary (port {port}) in {took_ms:.0f} ms")

    async def fix(self, ctx: RunbookContext) -> str:
        stack = ctx.stack
        if await _answers_as_primary(stack.current_primary_dsn, self.timeout_s):
            raise FixFailed(
                f"the primary (port {stack.current_primary_port}) answers directly as a "
                "primary: the server's way to it is the problem, not the primary (the "
                "pg-primary proxy, the network, a DSN reaching another node); promoting now "
                "would make two primaries. Heal the path, or stop the primary and run the "
                "runbook again"
            )
        ctx.say(f"{self.name}: the primary does not answer; promoting the standby")
        started = ctx.clock.now()
        try:
            await stack.promote_replica()
        except StackError as exc:
            raise FixFailed(f"promotion failed: {exc}") from None
        did = (
            f"promoted the standby in {ctx.clock.now() - started:.2f} s "
            f"(now the primary, port {stack.current_primary_port})"
        )
        if not stack.server_admin():
            return (
                f"{did}; {NO_ADMIN}: it must find the new primary itself (its DSN lists "
                "both proxies with target_session_attrs=read-write)"
            )
        repointed = await admin_all(ctx, "POST", "pool/repoint", {})
        pools = ", ".join(f"{e.name} ({r.get('expired', 0)} expired)" for e, r in repointed)
        return f"{did}; pools connect anew: {pools}"


async def _answers_as_primary(dsn: str, timeout_s: float) -> bool:
    """Whether the node behind a direct DSN answers and is not in recovery."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except DB_ERRORS:
        return False
    try:
        return not await conn.fetchval("SELECT pg_is_in_recovery()", timeout=timeout_s)
    except DB_ERRORS:
        return False
    finally:
        await _close(conn)


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=1)
    except DB_ERRORS:
        conn.terminate()


def _why(exc: BaseException) -> str:
    text = redact(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- replication lag --------------------------------------------------------------------

LAG_SQL = """
SELECT application_name, state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS lag_bytes,
       extract(epoch FROM replay_lag)::float8 AS lag_s
FROM pg_stat_replication ORDER BY application_name
"""


@dataclass(frozen=True)
class ReplicaLag:
    """One row of ``pg_stat_replication`` on the primary. ``lag_s`` is None when the
    standby has caught up and no WAL has come since (Postgres stops measuring)."""

    name: str
    state: str
    lag_bytes: float | None
    lag_s: float | None


def lag_health(replicas: Sequence[ReplicaLag], max_bytes: float, max_s: float) -> Health:
    """Healthy when a replica streams and every streaming replica replays within both
    bounds (a replay position not known yet counts as over them)."""
    streaming = [r for r in replicas if r.state == "streaming"]
    others = [f"{r.name or 'replica'} {r.state}" for r in replicas if r.state != "streaming"]
    if not streaming:
        seen = f" (seen: {', '.join(others)})" if others else ""
        return Health(False, f"no replica streams from the primary{seen}")
    parts, healthy = [], True
    for r in streaming:
        within = (
            r.lag_bytes is not None
            and r.lag_bytes <= max_bytes
            and (r.lag_s is None or r.lag_s <= max_s)
        )
        healthy = healthy and within
        size = "unknown" if r.lag_bytes is None else _bytes(r.lag_bytes)
        when = "" if r.lag_s is None else f", {r.lag_s:.2f} s"
        parts.append(f"{r.name or 'replica'} {size}{when}{'' if within else ' (over)'}")
    bound = f"bound {_bytes(max_bytes)}, {max_s:g} s"
    extra = f"; also {', '.join(others)}" if others else ""
    return Health(healthy, f"replay lag {'; '.join(parts)} ({bound}){extra}")


def _bytes(n: float) -> str:
    for unit, size in (("MiB", MIB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


@dataclass
class ReplicationLag(Step[RunbookContext]):
    """The streaming replica replays within ``max_bytes`` of WAL and ``max_s`` seconds,
    read from ``pg_stat_replication`` on the primary.

    Fix, only when no replica is connected at all (after a promotion, or a replica lost): a
    new streaming replica of the current primary, built by the stack's owner; one that is
    connected and catching up is left to catch up. A replica that
    streams but lags is left to a person: a new one would lag the same way (look at its
    disk and at the ``pg-replication`` path)."""

    max_bytes: float = 16 * MIB
    max_s: float = 5.0
    timeout_s: float = 2.0
    name: str = REPLICATION_LAG
    check_timeout_s: float = 10.0
    fix_timeout_s: float = 120.0
    preconditions: Sequence[str] = ()

    def __post_init__(self) -> None:
        _positive(self.name, max_bytes=self.max_bytes, max_s=self.max_s, timeout_s=self.timeout_s)

    async def replicas(self, ctx: RunbookContext) -> list[ReplicaLag]:
        """The primary's ``pg_stat_replication``; raises when the primary does not answer."""
        conn = await asyncpg.connect(ctx.stack.current_primary_dsn, timeout=self.timeout_s)
        try:
            rows = await conn.fetch(LAG_SQL, timeout=self.timeout_s)
        finally:
            await _close(conn)
        return [ReplicaLag(r[0] or "", r[1] or "", r[2], r[3]) for r in rows]

    async def check(self, ctx: RunbookContext) -> Health:
        try:
            replicas = await self.replicas(ctx)
        except DB_ERRORS as exc:
            return Health(False, f"the primary does not answer: {_why(exc)}")
        return lag_health(replicas, self.max_bytes, self.max_s)

    async def fix(self, ctx: RunbookContext) -> str:
        replicas = await self.replicas(ctx)
        if any(r.state == "streaming" for r in replicas):
            raise FixFailed(
                "a replica streams but replays too slowly: a new one would lag the same way; "
                "look at the replica's disk and at the pg-replication path"
            )
        if replicas:  # connected and catching up (after a cut WAL stream, say): let it
            states = ", ".join(f"{r.name or 'replica'} {r.state}" for r in replicas)
            raise FixFailed(f"a replica is connected ({states}): wait for it to stream")
        ctx.say(f"{self.name}: no replica streams; building a new one from the primary")
        try:
            built_s = await ctx.stack.rebuild_replica()
        except StackError as exc:
            raise FixFailed(f"a new replica could not be built: {exc}") from None
        return f"a new streaming replica of the primary (port {ctx.stack.current_primary_port}) in {built_s:.2f} s"


# -- new-session rate (reconnection storm) ----------------------------------------------

INITIALIZE_REQUESTS = "mcp_requests_total"
SHED_TOTAL = "mcp_admission_shed_total"


@dataclass
class ConnectionRate(Step[RunbookContext]):
    """The servers take at most ``max_new_per_s`` new sessions per second (initialize
    requests answered, summed over the instances, over up to ``window_s``).

    Fix: admission control on every instance at ``admission_rate`` new sessions per
    second each: the rest wait in a bounded queue (``queue`` places, at most
    ``max_wait_s``) and past it get 503 with Retry-After. ``burst``, ``queue`` and
    ``max_wait_s`` left None keep the server's settings. Shed sessions never reach the
    server's MCP layer, so once admission holds the rate the check is healthy again
    (the detail counts them). The sessionless protocol (2026-07-28) has no initialize:
    this check does not see its new connections."""

    max_new_per_s: float = 100.0
    admission_rate: float = 50.0
    burst: int | None = None
    queue: int | None = None
    max_wait_s: float | None = None
    window_s: float = 5.0
    name: str = CONNECTION_RATE
    check_timeout_s: float = 10.0
    fix_timeout_s: float = 30.0
    preconditions: Sequence[str] = ()
    history: CounterHistory = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _positive(
            self.name,
            max_new_per_s=self.max_new_per_s,
            admission_rate=self.admission_rate,
            window_s=self.window_s,
        )
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"{self.name}: burst must be >= 1, not {self.burst!r}")
        if self.queue is not None and self.queue < 0:
            raise ValueError(f"{self.name}: queue must be >= 0, not {self.queue!r}")
        if self.max_wait_s is not None and self.max_wait_s < 0:
            raise ValueError(f"{self.name}: max_wait_s must be >= 0, not {self.max_wait_s!r}")
        self.history = history(self.window_s)

    async def check(self, ctx: RunbookContext) -> Health:
        try:
            window = await self.history.window(ctx.clock, metrics_scraper(ctx))
        except MetricsUnavailable as exc:
            return Health(False, f"{NOT_MEASURED}: {exc}")
        return session_rate_health(window, self.max_new_per_s)

    def admission_body(self) -> dict[str, float | int]:
        body: dict[str, float | int] = {"rate": self.admission_rate}
        for key, value in (("burst", self.burst), ("queue", self.queue)):
            if value is not None:
                body[key] = value
        if self.max_wait_s is not None:
            body["max_wait"] = self.max_wait_s
        return body

    async def fix(self, ctx: RunbookContext) -> str:
        replies = await admin_all(ctx, "POST", "admission", self.admission_body())
        self.history.forget()
        after = replies[0][1].get("after", {})
        was = {
            e.name: (f"{r['before']['rate']:g}/s" if r.get("before", {}).get("enabled") else "off")
            for e, r in replies
        }
        return (
            f"admission control on at {self.admission_rate:g} new sessions/s per instance "
            f"(burst {after.get('burst')}, queue {after.get('queue')}, max wait "
            f"{after.get('max_wait')} s) on {', '.join(f'{n} (was {w})' for n, w in was.items())}"
        )


def session_rate_health(window: CounterWindow, max_new_per_s: float) -> Health:
    """Healthy when the new sessions the servers took (initialize) stay at the bound."""
    taken = total(window.increase, INITIALIZE_REQUESTS, method="initialize")
    shed = total(window.increase, SHED_TOTAL)
    rate = taken / window.span_s
    refused = f", {shed:.0f} shed by admission" if shed else ""
    return Health(
        rate <= max_new_per_s,
        f"{rate:.1f} new sessions/s over {window.span_s:.1f} s ({taken:.0f} taken{refused}; "
        f"bound {max_new_per_s:g}/s){window.note()}",
    )


# -- tool call success rate -------------------------------------------------------------

TOOL_CALLS = "mcp_requests_total"
TOOL_ERRORS = "mcp_request_errors_total"
REFUSED_BY_PROTECTION = ("mcp_breaker_rejected_total", "mcp_deferred_total")
"""Calls a protection refused at once (an open circuit, a deferral in a storm): they count
as errors in mcp_request_errors_total, but no tool ran, so they are left out of the rate."""
UNKNOWN_TOOL = "unknown"
"""The server's label for calls of tools it does not have (a client's mistake)."""


@dataclass(frozen=True)
class ToolCalls:
    """One tool's calls in a window: ``calls`` and ``errors`` as /metrics counts them,
    ``refused`` of them refused at once by a protection."""

    calls: float
    errors: float
    refused: float = 0.0

    @property
    def ran(self) -> float:
        return max(0.0, self.calls - self.refused)

    @property
    def failed(self) -> float:
        return max(0.0, min(self.errors - self.refused, self.ran))

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.ran if self.ran else None


def tool_calls(increase: Mapping[SeriesKey, float]) -> dict[str, ToolCalls]:
    """Per tool, from the growth of the server's counters (unknown tools left out)."""
    tools = {
        dict(labels).get("tool", "")
        for name, labels in increase
        if name == TOOL_CALLS and dict(labels).get("method") == "tools/call"
    }
    tools.discard("")
    tools.discard(UNKNOWN_TOOL)
    return {
        tool: ToolCalls(
            total(increase, TOOL_CALLS, method="tools/call", tool=tool),
            total(increase, TOOL_ERRORS, method="tools/call", tool=tool),
            sum(total(increase, name, tool=tool) for name in REFUSED_BY_PROTECTION),
        )
        for tool in sorted(tools)
    }


def success_rate(tools: Mapping[str, ToolCalls]) -> tuple[float | None, float]:
    """(share of the calls that ran and succeeded, how many ran); None when none ran."""
    ran = sum(t.ran for t in tools.values())
    failed = sum(t.failed for t in tools.values())
    return ((ran - failed) / ran if ran else None), ran


def tools_to_open(
    tools: Mapping[str, ToolCalls], above_error_rate: float, min_calls: float
) -> list[str]:
    """Tools that ran at least ``min_calls`` times and failed above the rate, by name."""
    return [
        name
        for name, t in sorted(tools.items())
        if t.ran >= min_calls and (t.error_rate or 0.0) > above_error_rate
    ]


def describe_tools(tools: Mapping[str, ToolCalls]) -> str:
    parts = []
    for name, t in sorted(tools.items()):
        rate = "" if t.error_rate is None else f" {t.error_rate:.0%} failed"
        refused = f", {t.refused:.0f} refused" if t.refused else ""
        parts.append(f"{name} {t.ran:.0f} ran{rate}{refused}")
    return "; ".join(parts)


@dataclass
class ToolSuccessRate(Step[RunbookContext]):
    """At least ``min_success`` of the tool calls that ran over up to ``window_s`` succeed
    (from the servers' /metrics, summed over the instances); with fewer than
    ``min_calls`` calls there is too little to judge and the check passes.

    Fix: hold open the circuit (``POST /admin/breaker``) of every tool that ran at least
    ``min_calls`` times with an error rate above ``open_above_error_rate``: its calls
    then fail at once instead of holding connections, and the others go on. Calls an
    open circuit refused are not counted as failures of the tool afterwards. A person
    gives the circuit back (``state: auto``) once the cause is gone."""

    window_s: float = 10.0
    min_success: float = 0.9
    open_above_error_rate: float = 0.5
    min_calls: int = 10
    name: str = TOOL_SUCCESS_RATE
    check_timeout_s: float = 10.0
    fix_timeout_s: float = 30.0
    preconditions: Sequence[str] = ()
    history: CounterHistory = field(init=False, repr=False)
    last: dict[str, ToolCalls] = field(init=False, repr=False, default_factory=dict)
    """Per-tool calls of the last check's window: what the fix decides on."""

    def __post_init__(self) -> None:
        _positive(self.name, window_s=self.window_s, min_calls=self.min_calls)
        for key in ("min_success", "open_above_error_rate"):
            value = getattr(self, key)
            if not 0 <= value <= 1:
                raise ValueError(f"{self.name}: {key} is a fraction 0..1, not {value!r}")
        self.history = history(self.window_s)

    async def check(self, ctx: RunbookContext) -> Health:
        try:
            window = await self.history.window(ctx.clock, metrics_scraper(ctx))
        except MetricsUnavailable as exc:
            self.last = {}
            return Health(False, f"{NOT_MEASURED}: {exc}")
        self.last = tool_calls(window.increase)
        rate, ran = success_rate(self.last)
        span = f"over {window.span_s:.1f} s"
        if rate is None or ran < self.min_calls:
            return Health(True, f"{ran:.0f} tool calls ran {span}: too few to judge{window.note()}")
        return Health(
            rate >= self.min_success,
            f"{rate:.1%} of {ran:.0f} tool calls succeeded {span} (bound "
            f"{self.min_success:.0%}): {describe_tools(self.last)}{window.note()}",
        )

    async def fix(self, ctx: RunbookContext) -> str:
        if not ctx.stack.server_admin():
            raise FixFailed(
                f"{NO_ADMIN}: open the circuit of the failing tools in your server by hand, "
                "or roll back the release that broke them"
            )
        failing = tools_to_open(self.last, self.open_above_error_rate, self.min_calls)
        if not failing:
            raise FixFailed(
                f"no tool fails above {self.open_above_error_rate:.0%} with at least "
                f"{self.min_calls} calls ({describe_tools(self.last) or 'no calls'}): the "
                "failures are spread over the tools; look at the server's log and the database"
            )
        opened: list[str] = []
        for tool in failing:
            try:
                await admin_all(ctx, "POST", "breaker", {"tool": tool, "state": "open"})
            except FixFailed as exc:
                raise FixFailed(f"{exc}; opened before it: {', '.join(opened) or 'none'}") from None
            opened.append(tool)
        self.history.forget()
        described = ", ".join(
            f"{t} ({(self.last[t].error_rate or 0.0):.0%} of {self.last[t].ran:.0f} failed)"
            for t in failing
        )
        return (
            f"circuit held open on every instance for {described}; give it back with "
            'POST /admin/breaker {"tool": ..., "state": "auto"} once the cause is fixed'
        )


# -- data integrity ---------------------------------------------------------------------


@dataclass(frozen=True)
class RestorePlan:
    """Where an integrity restore stops, and the evidence for it."""

    target: RestoreTarget
    earliest_damage: dt.datetime
    undated: int
    """Violating rows no check dates: the restore may leave them as they are."""


def plan_restore(report: IntegrityReport) -> RestorePlan:
    """Just before the earliest commit among the rows the checks flag and date (their
    ``changed_at``); FixFailed when none is dated."""
    if not report.violations:
        raise FixFailed("the checks find no violation now: nothing to restore")
    earliest = earliest_new_change(report, {})
    undated = sum(len(c.ids - set(c.changed_at)) for c in report.checks if c.error is None)
    if earliest is None:
        raise FixFailed(
            f"{report.violations} violation(s), none dated: no last good time to restore "
            "to. Give each check a second column changed_at (pg_xact_commit_timestamp(xmin)),"
            " or restore to a time you choose"
        )
    return RestorePlan(RestoreTarget.before(earliest), earliest, undated)


def integrity_health(report: IntegrityReport) -> Health:
    failed = [f"{c.name}: {c.error}" for c in report.checks if c.error is not None]
    flagged = [f"{c.name} {len(c.ids)}" for c in report.checks if c.ids]
    if failed:
        seen = f"; found {', '.join(flagged)}" if flagged else ""
        return Health(False, f"{NOT_MEASURED}: {'; '.join(failed)}{seen}")
    if flagged:
        return Health(
            False,
            f"{report.violations} violation(s): {', '.join(flagged)}; sample "
            f"{', '.join(sorted(report.violating_ids)[:5])}",
        )
    return Health(True, f"{len(report.checks)} integrity check(s), no violation")


@dataclass
class IntegrityViolations(Step[RunbookContext]):
    """The integrity checks (``checks``, else the context's) find no violation on the
    primary. Fix: point-in-time restore to just before the earliest commit among the
    rows they flag and date, then a new replica (``rebuild_replica``). The restore
    stops the servers for its duration and drops every write after its target.
    ``restore_timeout_s`` None takes the context's; ``fix_timeout_s`` must leave room
    for the replica after it."""

    checks: Sequence[IntegrityCheck] | None = None
    query_timeout_s: float = 5.0
    restore_timeout_s: float | None = None
    rebuild_replica: bool = True
    name: str = INTEGRITY_VIOLATIONS
    check_timeout_s: float = 30.0
    fix_timeout_s: float = 600.0
    preconditions: Sequence[str] = ()

    def __post_init__(self) -> None:
        _positive(
            self.name,
            query_timeout_s=self.query_timeout_s,
            restore_timeout_s=self.restore_timeout_s,
        )
        if self.restore_timeout_s is not None:
            problem = self.too_long(self.restore_timeout_s)
            if problem:
                raise ValueError(f"{self.name}: {problem}")

    def too_long(self, restore_timeout_s: float) -> str | None:
        """Why a restore this long does not fit in the fix (the runbook would cancel it
        halfway), or None."""
        if restore_timeout_s + REPLICA_ALLOWANCE_S <= self.fix_timeout_s:
            return None
        return (
            f"a restore of up to {restore_timeout_s:g} s and the new replica after it "
            f"({REPLICA_ALLOWANCE_S:g} s) do not fit in fix_timeout_s ({self.fix_timeout_s:g}):"
            " raise fix_timeout_s or lower the restore timeout"
        )

    async def report(self, ctx: RunbookContext) -> IntegrityReport | str:
        """The checks' results on the primary now, or why they could not run."""
        checks = list(self.checks if self.checks is not None else ctx.integrity_checks)
        if not checks:
            return (
                "no integrity checks to run (give integrity.checks in the scenario, or "
                "checks= to this step)"
            )
        try:
            conn = await asyncpg.connect(
                app_database_dsn(ctx.stack.current_primary_dsn), timeout=self.query_timeout_s
            )
        except DB_ERRORS as exc:
            return f"the primary does not answer: {_why(exc)}"
        try:
            return await IntegrityChecker(checks, self.query_timeout_s).run(conn, ctx.clock.now())
        finally:
            await _close(conn)

    async def check(self, ctx: RunbookContext) -> Health:
        report = await self.report(ctx)
        if isinstance(report, str):
            return Health(False, f"{NOT_MEASURED}: {report}")
        return integrity_health(report)

    async def fix(self, ctx: RunbookContext) -> str:
        stack = ctx.stack
        report = await self.report(ctx)
        if isinstance(report, str):
            raise FixFailed(f"cannot look for the damage: {report}")
        plan = plan_restore(report)
        if not stack.base_backups:
            raise FixFailed(
                "no base backup to restore from: set recovery.restore in the scenario (the "
                "stack then takes one when it comes up) or take one before the damage"
            )
        timeout_s = self.restore_timeout_s or ctx.restore_timeout_s
        problem = self.too_long(timeout_s)
        if problem:
            raise FixFailed(f"not restoring: {problem}")
        ctx.say(
            f"{self.name}: restoring to before {plan.earliest_damage.isoformat()} "
            f"(earliest dated damage), at most {timeout_s:g} s"
        )
        try:
            restored = await stack.restore(plan.target, timeout_s)
        except StackError as exc:
            raise FixFailed(
                f"restore to {plan.target.value} failed: {exc}. The servers may be stopped: "
                "see the stack's logs, then restore by hand"
            ) from None
        steps = ", ".join(f"{s.name} {s.duration_s:.2f} s" for s in restored.steps)
        did = (
            f"restored to before {plan.earliest_damage.isoformat()} (earliest dated damage; "
            f"replayed to {restored.stopped_at_lsn}): {steps}"
        )
        if plan.undated:
            did += f"; {plan.undated} undated violating row(s) may remain"
        if not self.rebuild_replica:
            return did
        ctx.say(f"{self.name}: restored; building a new replica")
        try:
            rebuilt_s = await stack.rebuild_replica()
        except Exception as exc:  # the data is restored: the replica is the next gap
            return f"{did}; the new replica failed: {_why(exc)} (rebuild it by hand)"
        return f"{did}; new replica in {rebuilt_s:.2f} s"


def default_runbook(checks: Sequence[IntegrityCheck] | None = None) -> Runbook[RunbookContext]:
    """The built-in steps in the order a person would go: the primary first (the others
    read or act through it), then replication, the storm, failing tools, the data.
    ``checks`` None: the context's integrity checks."""
    after_primary = (PRIMARY_CONNECTIVITY,)
    return Runbook(
        [
            PrimaryConnectivity(),
            ReplicationLag(preconditions=after_primary),
            ConnectionRate(),
            ToolSuccessRate(preconditions=after_primary),
            IntegrityViolations(checks=checks, preconditions=after_primary),
        ]
    )


DEFAULT_RUNBOOK = default_runbook()
"""``harness.runbook.steps:DEFAULT_RUNBOOK`` for a scenario or ``--runbook``. Its rate
steps keep the samples of their recent checks; build one per stack with
``default_runbook()`` when several run in one process."""


def runbook_for(spec: str, scenario: Scenario) -> Runbook[Any]:
    """The runbook a scenario's ``recovery.runbook`` names: ``default`` builds the built-in
    steps anew with the scenario's integrity checks (their rate samples are this run's
    own); ``pkg.module:NAME`` imports it (``RunbookLoadError`` says why it cannot)."""
    if spec == RUNBOOK_DEFAULT:
        return default_runbook(checks=scenario.integrity_checks)
    return load_runbook(spec)
