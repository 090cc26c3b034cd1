"""Execute one scenario: the one place where the stack, the load, the probes and
the faults meet.

The time axis of a run starts when the load starts (``t0``, CLOCK_MONOTONIC);
every measurement is relative to it. ``execute`` returns the run's record as
plain data (everything result.json needs but the judged objectives, which
``harness.objectives`` adds); it never raises for a failed run: a stack that
did not come up, a fault that did not take effect or an interrupted run are
facts of the record that make it inconclusive.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg

from harness.config import KillPrimary, Scenario
from harness.load.settings import LoadSettings
from harness.load.swarm import Swarm
from harness.load.wire import note_checksum
from harness.measure.failover import (
    NOT_REACHED_KEY,
    ServiceProbeSample,
    WriteProbeSample,
    db_failover_s,
    failover_s,
    first_service_write_s,
    first_write_on,
    rto_s,
)
from harness.measure.histogram import LatencyHistogram
from harness.measure.ledger import WriteLedger
from harness.measure.phases import PHASE_NAMES, Phase, compute_phases, phase_of
from harness.measure.probes import CREATE_PROBE_TABLE, PROBE_TABLE, ServiceProbe, WriteProbe
from harness.measure.reconnect import reconnect_metrics
from harness.measure.timeline import build_timeline
from harness.stack import Stack, StackError, open_stack
from harness.stack.postgres import APP_DATABASE

log = logging.getLogger(__name__)


class Observer(Protocol):
    """Watches a run (progress display); never changes it."""

    def tick(self, status: dict[str, Any]) -> None: ...

    def event(self, message: str) -> None: ...


class _Quiet:
    def tick(self, status: dict[str, Any]) -> None:
        pass

    def event(self, message: str) -> None:
        log.info(message)


@dataclass
class FaultRecord:
    kind: str
    target: str
    at_s: float
    t_fault_s: float | None = None
    confirmed: bool = False
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "at_s": self.at_s,
            "t_fault_s": self.t_fault_s,
            "confirmed": self.confirmed,
            "detail": self.detail,
        }


@dataclass
class RunRecord:
    """What happened, as plain data; ``result()`` shapes it for result.json."""

    run_id: str
    scenario: Scenario
    started_at: str
    stack_up: bool = False
    complete: bool = False
    interrupted: bool = False
    faults: list[FaultRecord] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def faults_confirmed(self) -> bool:
        return all(f.confirmed for f in self.faults)

    def result(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scenario": self.scenario.model_dump(mode="json"),
            "backend": self.scenario.backend,
            "seed": self.scenario.seed,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "complete": self.complete,
            "interrupted": self.interrupted,
            "faults": [f.as_dict() for f in self.faults],
            "phases": [
                {"name": p.name, "start_s": p.start_s, "end_s": p.end_s} for p in self.phases
            ],
            "metrics": self.metrics,
            "timeline": self.timeline,
            "environment": self.environment,
            "notes": self.notes,
        }


def new_run_id(scenario: Scenario) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{scenario.name}-{secrets.token_hex(2)}"


@dataclass
class _Live:
    """State shared by the tasks of a running scenario."""

    stack: Stack
    t0: float
    ledger: WriteLedger
    records: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)


async def execute(
    scenario: Scenario,
    result_dir: Path,
    *,
    run_id: str,
    pg_bin: str | None = None,
    observer: Observer | None = None,
    environment: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> RunRecord:
    """Bring the stack up, run load + probes + faults, measure, bring it down."""
    observer = observer or _Quiet()
    record = RunRecord(run_id, scenario, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    record.faults = [FaultRecord(f.kind, "primary", f.at) for f in scenario.faults]
    logs_dir = result_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    wall_start = time.monotonic()
    stack: Stack | None = None
    live: _Live | None = None
    try:
        async with asyncio.timeout(scenario.hard_cap_s):
            stack = open_stack(scenario, pg_bin=pg_bin)
            observer.event(
                "bringing the stack up (Postgres primary + replica, Toxiproxy, MCP server)"
            )
            await stack.up()
            record.stack_up = True
            observer.event(
                f"stack up in {time.monotonic() - wall_start:.1f} s; MCP at {stack.endpoints.mcp_url}"
            )
            live = _Live(stack, time.monotonic(), WriteLedger())
            await _run_load(scenario, live, result_dir, record, observer)
            record.complete = True
    except StackError as exc:
        record.notes.append(f"the stack did not come up or failed: {exc}")
        observer.event(f"stack error: {exc}")
    except TimeoutError:
        record.notes.append(f"the run hit its wall-time cap of {scenario.hard_cap_s:g} s")
    except (asyncio.CancelledError, KeyboardInterrupt):
        record.interrupted = True
        record.notes.append("interrupted before the end: partial result")
    finally:
        if stack is not None:
            if live is not None:
                with contextlib.suppress(Exception):
                    await _check_writes(scenario, live, record)
            record.environment = environment(stack.versions()) if environment else stack.versions()
            observer.event("bringing the stack down")
            await asyncio.shield(stack.down())
            _collect_logs(stack, logs_dir)
            (logs_dir / "processes.json").write_text(json.dumps(stack.inventory(), indent=1))
        record.duration_s = time.monotonic() - wall_start
    return record


async def _run_load(
    scenario: Scenario, live: _Live, result_dir: Path, record: RunRecord, observer: Observer
) -> None:
    """Load, probes and faults until the load stops by itself; measured even when interrupted."""
    stack = live.stack
    endpoints = stack.endpoints
    conn = await asyncpg.connect(endpoints.primary_proxy_dsn, timeout=10)
    try:
        await conn.execute(CREATE_PROBE_TABLE)
    finally:
        await conn.close()
    load = scenario.load
    settings = LoadSettings(
        records_path=str(result_dir / "logs" / "load-records.jsonl"),
        mcp_path=scenario.server.path,
        protocol=load.protocol,
        think_time_s=load.think_time,
        tool_mix={str(op): weight for op, weight in load.tool_mix.items()},
        reconnect_policy=load.reconnect.policy,
        backoff_base_s=load.reconnect.base,
        backoff_cap_s=load.reconnect.cap,
        request_timeout_s=load.request_timeout,
        headers=dict(scenario.server.headers),
        id_prefix=f"load-{record.run_id[-4:]}",
        seed=scenario.seed,
    )
    mcp = urlsplit(endpoints.mcp_url)
    swarm = Swarm(
        stack.registry,
        settings,
        base_url=f"{mcp.scheme}://{mcp.netloc}",
        users=load.users,
        spawn_rate=load.spawn_rate,
        run_time_s=load.run_time,
        workers=load.workers,
    )
    tail = swarm.tail()
    stop = asyncio.Event()
    write_probe = WriteProbe(
        endpoints.server_database_url,
        live.t0,
        scenario.probes.write_interval,
        scenario.probes.timeout,
    )
    service_probe = ServiceProbe(
        endpoints.mcp_url,
        live.t0,
        live.ledger,
        scenario.probes.service_interval,
        headers=dict(scenario.server.headers),
        seed=scenario.seed,
    )
    observer.event(f"starting {load.users} MCP clients for {load.run_time:g} s")
    swarm.start()
    live.t0 = time.monotonic()
    write_probe.t0 = service_probe.t0 = live.t0
    tasks = [
        asyncio.create_task(write_probe.run(stop), name="write-probe"),
        asyncio.create_task(service_probe.run(stop), name="service-probe"),
        asyncio.create_task(_fault_schedule(scenario, live, record, observer), name="faults"),
    ]
    try:
        deadline = live.t0 + load.run_time + 60.0
        while swarm.running and time.monotonic() < deadline:
            _ingest(tail.read_new(), live)
            observer.tick(_status(live, record, load.users))
            await asyncio.sleep(1.0)
        if swarm.running:
            record.notes.append(
                "the load did not stop by itself within run_time + 60 s; it was stopped"
            )
    finally:
        stop.set()
        for task in tasks:
            if not task.done() and task.get_name() == "faults":
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, outcome in zip(tasks, results, strict=True):
            if isinstance(outcome, Exception):
                record.notes.append(f"{task.get_name()} failed: {outcome!r}")
        await asyncio.to_thread(swarm.stop)
        _ingest(tail.read_new(), live)
        run_end_s = time.monotonic() - live.t0
        _measure(scenario, live, record, write_probe.samples, service_probe.samples, run_end_s)


async def _fault_schedule(
    scenario: Scenario, live: _Live, record: RunRecord, observer: Observer
) -> None:
    for fault, fault_record in zip(scenario.faults, record.faults, strict=True):
        await asyncio.sleep(max(0.0, live.t0 + fault.at - time.monotonic()))
        if isinstance(fault, KillPrimary):
            killed_port = live.stack.current_primary_port
            result = await live.stack.kill_primary()
            fault_record.t_fault_s = result.t_confirmed - live.t0
            fault_record.confirmed = result.confirmed
            fault_record.detail = (
                f"SIGKILL to {len(result.pids)} processes of the cluster on port {killed_port}"
            )
            live.events.append((fault_record.t_fault_s, "kill_primary"))
            observer.event(
                f"t={fault_record.t_fault_s:.2f}s kill_primary: {fault_record.detail}, confirmed={result.confirmed}"
            )
            delay = scenario.recovery.promote_after
            if delay is not None:
                await asyncio.sleep(delay)
                t_begin = time.monotonic() - live.t0
                await live.stack.promote_replica()
                t_done = time.monotonic() - live.t0
                live.events.append((t_done, "replica promoted"))
                observer.event(f"t={t_done:.2f}s replica promoted (took {t_done - t_begin:.2f} s)")


def _ingest(new_records: list[dict[str, Any]], live: _Live) -> None:
    for rec in new_records:
        if "t" in rec:
            rec["t_s"] = rec["t"] - live.t0
        kind = rec.get("k")
        if kind == "write":
            live.ledger.ack(rec["id"], rec["sum"], rec["t_s"])
        elif kind == "write_attempt":
            live.ledger.attempt(rec["id"])
        live.records.append(rec)


def _status(live: _Live, record: RunRecord, users_target: int) -> dict[str, Any]:
    now_s = time.monotonic() - live.t0
    last = [
        r
        for r in live.records[-20000:]
        if r.get("k") == "req" and now_s - 1.5 <= r["t_s"] < now_s - 0.5
    ]
    users = next((r["n"] for r in reversed(live.records) if r.get("k") == "users"), 0)
    fault = next((f for f in record.faults if f.t_fault_s is not None), None)
    return {
        "t_s": now_s,
        "phase": "baseline" if fault is None else "after fault",
        "users": users,
        "users_target": users_target,
        "requests_per_s": len(last),
        "errors_per_s": sum(1 for r in last if not r["ok"]),
        "events": [label for _, label in live.events],
    }


def _measure(
    scenario: Scenario,
    live: _Live,
    record: RunRecord,
    write_samples: list[WriteProbeSample],
    service_samples: list[ServiceProbeSample],
    run_end_s: float,
) -> None:
    fault = next((f for f in record.faults if f.confirmed and f.t_fault_s is not None), None)
    t_fault = fault.t_fault_s if fault else None
    stability = scenario.windows.stability
    requests = [r for r in live.records if r.get("k") == "req"]
    tools_list = [(r["t_s"], r["ms"]) for r in requests if r["m"] == "tools/list" and r["ok"]]
    sessions = [r["t_s"] for r in requests if r["m"] == "initialize" and r["ok"]]
    steady_from = next((r["t_s"] for r in live.records if r.get("k") == "spawned"), 0.0)
    first_write = first_service_write_s(service_samples, t_fault) if t_fault is not None else None
    record.phases = compute_phases(
        run_end_s=run_end_s,
        t_fault_s=t_fault,
        first_service_write_s=first_write,
        session_starts_s=sessions,
        steady_from_s=steady_from,
        window_s=stability,
    )
    per_phase = {name: LatencyHistogram() for name in PHASE_NAMES}
    everything = LatencyHistogram()
    for t_s, ms in tools_list:
        everything.record_ms(ms)
        name = phase_of(record.phases, t_s)
        if name:
            per_phase[name].record_ms(ms)
    latency = {name: h.summary() for name, h in per_phase.items()}
    latency["all"] = everything.summary()
    errors_by_kind: dict[str, int] = {}
    for r in requests:
        if not r["ok"]:
            errors_by_kind[r.get("err") or "unknown"] = (
                errors_by_kind.get(r.get("err") or "unknown", 0) + 1
            )
    n_errors = sum(errors_by_kind.values())
    p99_target = next(
        (
            o.target
            for o in scenario.objectives
            if o.metric.startswith("tools_list_latency_ms")
            and o.metric.endswith("p99")
            and o.max is not None
        ),
        None,
    )
    promoted_port = live.stack.current_primary_port
    db_failover = (
        db_failover_s(write_samples, t_fault, promoted_port) if t_fault is not None else None
    )
    killed_node_wrote_after = (
        t_fault is not None
        and fault is not None
        and any(s.ok and s.t_s > t_fault and s.port != promoted_port for s in write_samples)
    )
    if killed_node_wrote_after and fault is not None:
        fault.confirmed = False
        record.notes.append(
            "the write probe saw commits on the killed primary after t_fault: the fault did not take effect"
        )
    record.metrics = {
        "db_failover_s": db_failover,
        "failover_s": failover_s(service_samples, t_fault, stability, run_end_s)
        if t_fault is not None
        else None,
        "rto_s": rto_s(service_samples, t_fault, stability, run_end_s, tools_list, p99_target)
        if t_fault is not None
        else None,
        "reconnect": reconnect_metrics(
            sorted(
                (r for r in live.records if r.get("k") in ("broken", "reconnected")),
                key=lambda r: r["t_s"],
            ),
            t_fault,
            scenario.windows.reconnect,
        ),
        "tools_list_latency_ms": latency,
        "requests": {
            "total": len(requests),
            "errors": n_errors,
            "error_rate": (n_errors / len(requests)) if requests else None,
            "errors_by_kind": errors_by_kind,
        },
        "probes": {
            "write": {
                "samples": len(write_samples),
                "failed": sum(1 for s in write_samples if not s.ok),
            },
            "service": {
                "samples": len(service_samples),
                "failed": sum(1 for s in service_samples if not s.ok),
            },
        },
    }
    if t_fault is not None:
        watched = run_end_s - t_fault
        record.metrics[NOT_REACHED_KEY] = {
            name: watched
            for name in ("db_failover_s", "failover_s", "rto_s")
            if record.metrics[name] is None
        }
    first_on_promoted = (
        first_write_on(write_samples, t_fault, promoted_port) if t_fault is not None else None
    )
    record.metrics["probes"]["write"]["first_promoted_seq"] = (
        first_on_promoted.seq if first_on_promoted else None
    )
    record.timeline = build_timeline(live.records, run_end_s, live.events)
    if not tools_list:
        record.notes.append(
            "no successful tools/list was recorded: the load did not reach the server"
        )


async def _check_writes(scenario: Scenario, live: _Live, record: RunRecord) -> None:
    """Read the final primary directly and classify the ledger; verify the probe's first
    post-failover row is on the promoted node itself."""
    dsn = live.stack.current_primary_dsn.rsplit("/", 1)[0] + f"/{APP_DATABASE}"
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT id, title, body FROM notes", timeout=60)
        seq = record.metrics.get("probes", {}).get("write", {}).get("first_promoted_seq")
        if seq is not None:
            present = await conn.fetchval(f"SELECT count(*) FROM {PROBE_TABLE} WHERE seq = $1", seq)
            record.metrics["db_failover_verified_on_promoted_node"] = bool(present)
            if not present:
                record.metrics["db_failover_s"] = None
                record.notes.append(
                    f"probe row {seq} is not on the promoted node: db_failover_s not measured"
                )
    finally:
        await conn.close()
    fault = next((f for f in record.faults if f.confirmed and f.t_fault_s is not None), None)
    record.metrics["writes"] = live.ledger.classify(
        [(r["id"], note_checksum(r["title"], r["body"])) for r in rows],
        fault.t_fault_s if fault else None,
    )


def _collect_logs(stack: Stack, logs_dir: Path) -> None:
    for path in stack.log_paths():
        source = Path(path)
        if source.exists():
            shutil.copy2(source, logs_dir / source.name)
