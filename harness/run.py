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
import datetime as dt
import json
import logging
import os
import secrets
import shutil
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg

from harness.chaos import FaultRecord, run_fault
from harness.config import PHASES, Scenario
from harness.load.swarm import Swarm, settings_for
from harness.load.wire import WriteTemplate
from harness.measure.clock import WALL_DRIFT_TOLERANCE_S, RunClock
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
from harness.measure.integrity import IntegrityChecker, IntegrityReport, first_detection
from harness.measure.ledger import LedgerClassification, WriteLedger
from harness.measure.phases import Phase, compute_phases, phase_of
from harness.measure.probes import CREATE_PROBE_TABLE, PROBE_TABLE, ServiceProbe, WriteProbe
from harness.measure.readback import read_all_ids, read_written
from harness.measure.reconnect import reconnect_metrics
from harness.measure.resources import (
    SATURATION_RULE,
    ResourceSampler,
    generator_saturation,
    loop_lag_by_second,
    loop_lag_saturation,
)
from harness.measure.timeline import build_timeline, connection_opens
from harness.recover import (
    IntegrityWatch,
    RestoreOutcome,
    RestorePointMark,
    Restorer,
    app_dsn,
    create_restore_point,
)
from harness.runbook import RunbookLoadError, RunbookWatch
from harness.runbook_steps import RunbookContext, runbook_for
from harness.stack import RestoreTarget, Stack, StackError, open_stack

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
    doubts: list[str] = field(default_factory=list)
    """Reasons a figure could be wrong (a saturated generator, ...): they make the run inconclusive."""
    duration_s: float = 0.0

    @property
    def faults_confirmed(self) -> bool:
        return all(f.confirmed for f in self.faults)

    @property
    def t_fault_s(self) -> float | None:
        """The incident: the earliest confirmed fault (None without one)."""
        times = [f.t_fault_s for f in self.faults if f.confirmed and f.t_fault_s is not None]
        return min(times) if times else None

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
            "notes": self.notes + self.doubts,
            "doubts": self.doubts,
        }


SPLIT_MIN_CORES_AUTO = 4


def cpu_split(policy: str) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """(stack CPUs, load generator CPUs): halves of this process's CPUs, or no pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    wanted = policy == "on" or (policy == "auto" and len(cpus) >= SPLIT_MIN_CORES_AUTO)
    if not wanted or len(cpus) < 2:
        return None, None
    half = len(cpus) // 2
    return frozenset(cpus[:half]), frozenset(cpus[half:])


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
    clock: RunClock | None = None
    watch: IntegrityWatch | None = None
    restore_point: RestorePointMark | None = None
    restore: RestoreOutcome | None = None
    runbook: RunbookWatch[RunbookContext] | None = None


@dataclass(frozen=True)
class PlannedRun:
    """One run of a series: its id and the directory its result goes to."""

    run_id: str
    result_dir: Path


SERIES_START_POINT = "mcp-harness-series-start"
"""The restore point every run of a repeated series starts from."""


async def execute(
    scenario: Scenario,
    result_dir: Path,
    *,
    run_id: str,
    pg_bin: str | None = None,
    observer: Observer | None = None,
    environment: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    allow_remote: bool = False,
) -> RunRecord:
    """Bring the stack up, run load + probes + faults, measure, bring it down."""
    (record,) = await execute_series(
        scenario,
        [PlannedRun(run_id, result_dir)],
        logs_dir=result_dir / "logs",
        pg_bin=pg_bin,
        observer=observer,
        environment=environment,
        allow_remote=allow_remote,
    )
    return record


async def execute_series(
    scenario: Scenario,
    runs: list[PlannedRun],
    *,
    logs_dir: Path,
    pg_bin: str | None = None,
    observer: Observer | None = None,
    environment: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    allow_remote: bool = False,
) -> list[RunRecord]:
    """Runs of one scenario on one stack (``--repeat``): it comes up once and, between
    runs, is restored to the state it started in (point-in-time restore to a restore
    point taken before the first run, a fresh replica, every toxic removed), so every
    run meets the same stack and the same data. The stack's logs go to ``logs_dir``.

    A failure (the stack, the wall-time cap, Ctrl-C) ends the series: the run it hit
    says why, the runs after it are reported as not run.
    """
    observer = observer or _Quiet()
    records = [_planned_record(scenario, run.run_id) for run in runs]
    logs_dir.mkdir(parents=True, exist_ok=True)
    stack: Stack | None = None
    current = records[0]
    try:
        if scenario.recovery.runbook is not None:
            runbook_for(scenario.recovery.runbook, scenario)  # imported before anything starts
        stack_cpus, generator_cpus = cpu_split(scenario.load.cpu_split)
        stack = open_stack(scenario, pg_bin=pg_bin, cpus=stack_cpus)
        for index, (run, record) in enumerate(zip(runs, records, strict=True)):
            current = record
            await _one_run(
                scenario,
                stack,
                run,
                record,
                index,
                len(runs),
                observer,
                generator_cpus,
                allow_remote,
            )
    except RunbookLoadError as exc:
        current.notes.append(f"recovery.runbook: {exc}; nothing was started")
        observer.event(f"runbook error: {exc}")
    except StackError as exc:
        current.notes.append(f"the stack did not come up or failed: {exc}")
        observer.event(f"stack error: {exc}")
    except TimeoutError:
        current.notes.append(f"the run hit its wall-time cap of {scenario.hard_cap_s:g} s")
    except (asyncio.CancelledError, KeyboardInterrupt):
        current.interrupted = True
        current.notes.append("interrupted before the end: partial result")
    except Exception as exc:  # a failed run still reports, stops everything and says why
        (logs_dir / "harness-error.log").write_text(traceback.format_exc())
        current.notes.append(f"the run failed: {exc!r} (traceback in logs/harness-error.log)")
        observer.event(f"run failed: {exc!r}")
    finally:
        for record in records[records.index(current) + 1 :]:
            record.notes.append(f"not run: {current.run_id} ended the series")
        if stack is not None:
            versions = environment(stack.versions()) if environment else stack.versions()
            for record in records:
                record.environment = versions
            observer.event("bringing the stack down")
            await _to_completion(stack.down())
            _collect_logs(stack, logs_dir)
            (logs_dir / "processes.json").write_text(json.dumps(stack.inventory(), indent=1))
            stack.remove_run_dir()
    return records


def _planned_record(scenario: Scenario, run_id: str) -> RunRecord:
    record = RunRecord(run_id, scenario, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    record.faults = [FaultRecord.planned(f) for f in scenario.faults]
    return record


async def _one_run(
    scenario: Scenario,
    stack: Stack,
    run: PlannedRun,
    record: RunRecord,
    index: int,
    count: int,
    observer: Observer,
    generator_cpus: frozenset[int] | None,
    allow_remote: bool,
) -> None:
    """The stack up (first run) or back to the series start (later ones), then the load,
    probes and faults, then the ledger checked on the final primary."""
    record.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    (run.result_dir / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    live: _Live | None = None
    try:
        async with asyncio.timeout(scenario.hard_cap_s):
            if index == 0:
                await _bring_up(stack, observer, series=count > 1)
            else:
                await _back_to_series_start(stack, scenario, observer, record)
            record.stack_up = True
            if count > 1:
                observer.event(f"run {index + 1} of {count}: {run.run_id}")
            live = _Live(stack, time.monotonic(), WriteLedger())
            await _run_load(
                scenario, live, run.result_dir, record, observer, generator_cpus, allow_remote
            )
            record.complete = True
    finally:
        if live is not None:
            try:
                await _to_completion(_check_writes(scenario, live, record))
            except Exception as exc:
                record.notes.append(f"the write ledger could not be checked: {exc!r}")
        record.duration_s = time.monotonic() - started


async def _bring_up(stack: Stack, observer: Observer, *, series: bool) -> None:
    started = time.monotonic()
    observer.event("bringing the stack up (Postgres primary + replica, Toxiproxy, MCP server)")
    await stack.up()
    if series:
        if not stack.base_backups:
            await stack.take_base_backup()
        await stack.create_restore_point(SERIES_START_POINT)
    observer.event(
        f"stack up in {time.monotonic() - started:.1f} s; MCP at {stack.endpoints.mcp_url}"
    )


async def _back_to_series_start(
    stack: Stack, scenario: Scenario, observer: Observer, record: RunRecord
) -> None:
    """Every toxic off and every proxy on, the database restored to the series start,
    the server (re)started in its own release, a fresh replica."""
    started = time.monotonic()
    observer.event("restoring the stack to the state the series started in")
    await asyncio.to_thread(stack.toxiproxy.reset)
    timeout = scenario.recovery.restore.timeout if scenario.recovery.restore else 300.0
    await stack.restore(RestoreTarget("restore_point", SERIES_START_POINT), timeout)
    await stack.rebuild_replica()
    took = time.monotonic() - started
    record.notes.append(
        f"ran on the stack of the series, restored to its start first ({took:.1f} s: "
        "point-in-time restore, replica rebuilt, toxics removed)"
    )
    observer.event(f"stack restored to the series start in {took:.1f} s")


async def _to_completion(awaitable: Any) -> Any:
    """Await cleanup to its end: a cancellation (Ctrl-C) arriving meanwhile is absorbed,
    so a stopping run never leaves its stack half down."""
    task = asyncio.ensure_future(awaitable)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()


async def _run_load(
    scenario: Scenario,
    live: _Live,
    result_dir: Path,
    record: RunRecord,
    observer: Observer,
    generator_cpus: frozenset[int] | None,
    allow_remote: bool,
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
    settings = settings_for(
        scenario, result_dir / "logs" / "load-records.jsonl", f"load-{record.run_id[-4:]}"
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
        worker_cpus=set(generator_cpus) if generator_cpus else None,
        remote_workers=load.remote_workers,
        master_bind_host=load.master_bind_host,
        allow_remote=allow_remote,
    )
    tail = swarm.tail()
    stop = asyncio.Event()
    observer.event(f"starting {load.users} MCP clients for {load.run_time:g} s")
    swarm.start()
    record.notes.extend(swarm.affinity_notes)
    if load.remote_workers:
        observer.event(
            f"waiting for {load.remote_workers} remote worker(s); on each machine run:\n"
            f"  {swarm.remote_worker_command()}"
        )
    live.t0 = await _load_started(swarm, tail, live, EXPECT_WORKERS_WAIT_S + 15.0)
    clock = live.clock = RunClock(live.t0)
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
        timeout_s=scenario.probes.service_timeout,
        headers=scenario.server.resolved_headers(),
        seed=scenario.seed,
        protocol=load.protocol,
        write=WriteTemplate(
            scenario.ledger.tool, tuple(scenario.ledger.arguments.items()), scenario.ledger.content
        ),
    )
    sampler = ResourceSampler(
        primary_dsn=lambda: stack.current_primary_dsn,
        metrics_urls=stack.server_metrics_urls(),
        generator_pids=swarm.pids,
        t0=live.t0,
    )
    checks = scenario.integrity_checks
    if checks:
        live.watch = IntegrityWatch(
            IntegrityChecker(checks, scenario.integrity.timeout),
            stack,
            clock,
            scenario.integrity.interval,
            incident=lambda: record.t_fault_s,
        )
    restore = scenario.recovery.restore
    first_fault = min(
        range(len(scenario.faults)), key=lambda i: scenario.faults[i].at, default=None
    )

    point_made = asyncio.Event()

    async def mark_restore_point() -> None:
        try:
            live.restore_point = await create_restore_point(
                stack, clock, f"mcp-harness-{record.run_id[-4:]}-before-fault"
            )
            live.events.append((live.restore_point.t_end_s, "restore point created"))
        finally:
            point_made.set()

    async def after_restore_point() -> None:
        await point_made.wait()

    with_point = restore is not None and restore.target == "restore_point"
    restoring = asyncio.Event()
    tasks = [
        asyncio.create_task(write_probe.run(stop), name="write-probe"),
        asyncio.create_task(service_probe.run(stop), name="service-probe"),
        asyncio.create_task(sampler.run(stop), name="resource-sampler"),
        *(
            asyncio.create_task(
                run_fault(
                    fault,
                    index,
                    record.faults[index],
                    stack,
                    live.t0,
                    scenario,
                    live.events,
                    observer.event,
                    before=(mark_restore_point if index == first_fault else after_restore_point)
                    if with_point
                    else None,
                ),
                name=f"fault-{index}-{fault.kind}",
            )
            for index, fault in enumerate(scenario.faults)
        ),
    ]
    if live.watch is not None:
        tasks.append(asyncio.create_task(live.watch.run(stop), name="integrity-watch"))
    restore_task = None
    if restore is not None:
        restorer = Restorer(
            restore,
            stack,
            clock,
            live.watch,
            live.ledger,
            scenario.ledger,
            lambda: live.restore_point,
            observer.event,
        )
        restore_task = asyncio.create_task(
            restorer.run(restoring),
            name="restore",
        )
    if scenario.recovery.runbook is not None:
        live.runbook = _runbook_watch(scenario, live, observer, restoring, restore_task)
        tasks.append(asyncio.create_task(live.runbook.run(stop), name=RUNBOOK_WATCH_TASK))
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
        if restore_task is not None:
            await _finish_restore(restore_task, restoring, live, record)
        stop.set()
        for task in tasks:
            if not task.done() and _cancel_at_end(task, live):
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        run_end_s = time.monotonic() - live.t0
        for task, outcome in zip(tasks, results, strict=True):
            if isinstance(outcome, Exception):
                record.doubts.append(
                    f"{task.get_name()} failed, its figures are incomplete: {outcome!r}"
                )
        await asyncio.to_thread(swarm.stop)
        _ingest(tail.read_new(), live)
        if tail.skipped_lines:
            record.notes.append(f"{tail.skipped_lines} malformed load record line(s) were skipped")
        if load.remote_workers:
            record.notes.append(
                "remote workers' CPU is not sampled: the saturation rule covers local Locust processes only"
            )
        samples = _Samples(write_probe.samples, service_probe.samples, sampler.samples)
        cores = len(generator_cpus) if generator_cpus else len(os.sched_getaffinity(0))
        _measure(scenario, live, record, samples, run_end_s, cores)


RUNBOOK_WATCH_TASK = "runbook-watch"


def _runbook_watch(
    scenario: Scenario,
    live: _Live,
    observer: Observer,
    restoring: asyncio.Event,
    restore_task: asyncio.Task[RestoreOutcome] | None,
) -> RunbookWatch[RunbookContext]:
    """The runbook the scenario names, watching the stack from now on; it does not look
    while a restore is under way (the stack is down on purpose)."""
    assert scenario.recovery.runbook is not None

    def event(t_s: float, line: str) -> None:
        live.events.append((t_s, line))
        observer.event(f"t={t_s:.2f}s {line}")

    return RunbookWatch(
        runbook_for(scenario.recovery.runbook, scenario),
        RunbookContext.for_scenario(live.stack, scenario, observer.event),
        scenario.recovery.watch_interval,
        live.t0,
        paused=lambda: restoring.is_set() and restore_task is not None and not restore_task.done(),
        event=event,
    )


def _cancel_at_end(task: asyncio.Task[Any], live: _Live) -> bool:
    """Fault tasks still waiting, and the runbook watcher unless a fix of it is under way
    (cut off half done it could leave a promotion or a restore unfinished; its own
    timeouts bound it)."""
    if task.get_name() == RUNBOOK_WATCH_TASK:
        return live.runbook is None or not live.runbook.executing
    return task.get_name().startswith("fault-")


async def _finish_restore(
    task: asyncio.Task[RestoreOutcome], restoring: asyncio.Event, live: _Live, record: RunRecord
) -> None:
    """A restore under way is awaited to its end (its own timeout bounds it), never cut
    off half done, even by Ctrl-C (which then still counts: the run is interrupted); one
    still waiting for its trigger or its delay is called off."""
    if not task.done() and not restoring.is_set():
        task.cancel()
        record.notes.append("the restore had not started when the load ended: it was called off")
    try:
        live.restore = await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.cancelled():
            return
        live.restore = await _to_completion(task)
        raise
    except Exception as exc:
        record.doubts.append(f"the restore failed unexpectedly: {exc!r}")


EXPECT_WORKERS_WAIT_S = 30.0
"""How long the Locust master waits for its workers (its --expect-workers-max-wait)."""


async def _load_started(swarm: Swarm, tail: Any, live: _Live, timeout_s: float) -> float:
    """The moment the load really began: the master's first record, written when every
    worker has connected and the test starts (same CLOCK_MONOTONIC on this machine).
    Every fault time and sample is relative to it, not to the start of the processes."""
    deadline = time.monotonic() + timeout_s
    early: list[dict[str, Any]] = []
    while time.monotonic() < deadline and swarm.running:
        early.extend(tail.read_new())
        started = next((r["t"] for r in early if r.get("k") == "users"), None)
        if started is not None:
            live.t0 = started
            _ingest(early, live)
            return float(started)
        await asyncio.sleep(0.02)
    raise StackError(
        f"the load did not start within {timeout_s:g} s (Locust workers did not connect). "
        f"Master log:\n{swarm.master.log_tail() if swarm.master else ''}"
    )


def _ingest(new_records: list[dict[str, Any]], live: _Live) -> None:
    for rec in new_records:
        if "t" in rec:
            rec["t_s"] = rec["t"] - live.t0
        kind = rec.get("k")
        if kind == "write":
            live.ledger.ack(rec["id"], rec["sum"], rec["t_s"])
        elif kind == "write_attempt":
            # A remote worker's instants are rebased by the message's transit: not exact
            # enough to say on which side of a restore point a write began.
            live.ledger.attempt(rec["id"], None if rec.get("remote") else rec["t_s"])
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


@dataclass
class _Samples:
    write: list[WriteProbeSample]
    service: list[ServiceProbeSample]
    resources: list[dict[str, Any]]


def _measure(
    scenario: Scenario,
    live: _Live,
    record: RunRecord,
    samples: _Samples,
    run_end_s: float,
    generator_cores: int,
) -> None:
    """Turn the samples into the metrics of DESIGN.md; ``t_fault`` is the earliest confirmed
    fault, decided once (after the write probe had its say on a primary kill)."""
    write_samples, service_samples = samples.write, samples.service
    database = _database_failover(record, live, write_samples)
    t_fault = record.t_fault_s
    restored_at = live.restore.t_reattached_s if live.restore else None
    requests = [r for r in live.records if r.get("k") == "req"]
    tools_list = [(r["t_s"], r["ms"]) for r in requests if r["m"] == "tools/list" and r["ok"]]
    record.phases = compute_phases(
        run_end_s=run_end_s,
        t_fault_s=t_fault,
        first_service_write_s=first_service_write_s(
            service_samples, max(t_fault, restored_at or t_fault)
        )
        if t_fault is not None
        else None,
        session_starts_s=[t for t, _, change in connection_opens(live.records) if change > 0],
        steady_from_s=next((r["t_s"] for r in live.records if r.get("k") == "spawned"), 0.0),
        window_s=scenario.windows.stability,
    )
    record.metrics = {
        **database,
        **_service_recovery(scenario, t_fault, service_samples, tools_list, run_end_s, restored_at),
        **_integrity(live, record, t_fault),
        "restore": _restore(live, service_samples),
        "runbook": _runbook(scenario, live),
        "reconnect": reconnect_metrics(
            (r for r in live.records if r.get("k") in ("broken", "reconnected", "req")),
            t_fault,
            scenario.windows.reconnect,
            sessions=scenario.load.protocol != "2026-07-28",
            run_end_s=run_end_s,
        ),
        "tools_list_latency_ms": _latency_per_phase(
            record.phases, tools_list, t_fault, scenario.windows.reconnect
        ),
        "requests": _request_counts(requests),
        **_around_the_load(live, requests, samples.resources, generator_cores),
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
            and (name != "db_failover_s" or _kill_primary(record) is not None)
        }
    record.timeline = build_timeline(live.records, run_end_s, live.events, samples.resources)
    if live.clock is not None and abs(live.clock.drift_s()) > WALL_DRIFT_TOLERANCE_S:
        record.doubts.append(
            f"the wall clock moved {live.clock.drift_s():+.3f} s against the monotonic clock "
            "during the run: wall-clock restore targets and rpo_s may be wrong"
        )
    if live.restore is not None and live.restore.error:
        record.notes.append(live.restore.error)
    generator = record.metrics["generator"]
    if generator["saturated"]:
        record.doubts.append(
            f"the load generator was saturated ({SATURATION_RULE}): CPU in "
            f"{generator['saturated_fraction']:.0%} of seconds, event loop late in "
            f"{generator['loop_lagging_fraction']:.0%}; the figures may measure the generator, "
            "not the server"
        )
    if not tools_list:
        record.notes.append(
            "no successful tools/list was recorded: the load did not reach the server"
        )


def _kill_primary(record: RunRecord) -> FaultRecord | None:
    return next((f for f in record.faults if f.kind == "kill_primary" and f.confirmed), None)


def _database_failover(
    record: RunRecord, live: _Live, write_samples: list[WriteProbeSample]
) -> dict[str, Any]:
    """db_failover_s, measured only when a primary was killed; a kill that the write probe
    saw the old primary survive (commits on it after t_fault) is not confirmed."""
    kill = _kill_primary(record)
    if kill is None or kill.t_fault_s is None:
        return {"db_failover_s": None, "db_failover_first_seq": None}
    t_kill = kill.t_fault_s
    if any(s.ok and s.t_s > t_kill and s.port == kill.killed_port for s in write_samples):
        kill.confirmed = False
        record.notes.append(
            "the write probe saw commits on the killed primary after t_fault: the fault did not take effect"
        )
        return {"db_failover_s": None, "db_failover_first_seq": None}
    promoted_port = live.stack.current_primary_port
    first = first_write_on(write_samples, t_kill, promoted_port)
    return {
        "db_failover_s": db_failover_s(write_samples, t_kill, promoted_port),
        "db_failover_first_seq": first.seq if first else None,
    }


def _service_recovery(
    scenario: Scenario,
    t_fault: float | None,
    service_samples: list[ServiceProbeSample],
    tools_list: list[tuple[float, float]],
    run_end_s: float,
    restored_at: float | None,
) -> dict[str, float | None]:
    if t_fault is None:
        return {"failover_s": None, "rto_s": None}
    if scenario.recovery.restore is not None and restored_at is None:
        # Damaged data does not stop writes: without the restore the scenario calls for,
        # the service never recovered, whatever the write probe saw.
        return {"failover_s": None, "rto_s": None}
    p99_targets = {
        o.path: o.target
        for o in scenario.objectives
        if o.path.startswith("tools_list_latency_ms.")
        and o.path.endswith(".p99")
        and o.max is not None
    }
    p99_target = p99_targets.get(
        "tools_list_latency_ms.recovered.p99", p99_targets.get("tools_list_latency_ms.all.p99")
    )
    window = scenario.windows.stability
    return {
        "failover_s": failover_s(service_samples, t_fault, window, run_end_s, restored_at),
        "rto_s": rto_s(
            service_samples, t_fault, window, run_end_s, tools_list, p99_target, restored_at
        ),
    }


DAMAGE_CHECKS = {"updated": "checksum", "invariant_broken": "title_not_blank"}
"""Which of the reference invariants (``REFERENCE_INTEGRITY_CHECKS``) must find each kind
of damage the reference server's ``compact_notes`` reports (deleted rows are found by
the ledger, as lost writes). Checks of other names are not compared."""


def _integrity(live: _Live, record: RunRecord, t_fault: float | None) -> dict[str, Any]:
    """time_to_detect_s and the integrity checks during the run: the last check before the
    incident, the last before the restore (or the run's end), and what a corrupting tool
    said it damaged against what the checks found."""
    watch = live.watch
    if watch is None:
        return {"time_to_detect_s": None, "integrity": None}
    reports = watch.reports
    detected = first_detection(reports, t_fault) if t_fault is not None else None
    restore_start = live.restore.t_start_s if live.restore else None
    baseline = [r for r in reports if t_fault is None or r.t_s < t_fault]
    before = [r for r in reports if restore_start is None or r.t_s < restore_start]
    injected: dict[str, list[str]] = {}
    for fault in record.faults:
        for kind, ids in (fault.damage or {}).items():
            injected.setdefault(kind, []).extend(ids)
    found: dict[str, int] = {}
    if before and injected:
        by_check = {c.name: c.ids for r in before for c in r.checks if c.error is None}
        found = {
            kind: len(set(ids) & by_check.get(check, frozenset()))
            for kind, ids in injected.items()
            if (check := DAMAGE_CHECKS.get(kind)) in by_check
        }
    return {
        "time_to_detect_s": None if detected is None or t_fault is None else detected - t_fault,
        "integrity": {
            "checks": [c.name for c in watch.checker.checks],
            "interval_s": watch.interval_s,
            "rounds": len(reports),
            "rounds_unmeasured": sum(1 for r in reports if not r.measured),
            "baseline": _report_summary(baseline[-1]) if baseline else None,
            "before": _report_summary(before[-1]) if before else None,
            "after": None,
            "injected": {kind: len(ids) for kind, ids in injected.items()} or None,
            "detected": found or None,
            "missed": sum(len(injected[kind]) - n for kind, n in found.items()) if found else None,
        },
    }


def _report_summary(report: IntegrityReport) -> dict[str, Any]:
    return {"t_s": round(report.t_s, 3), **report.summary()}


def _restore(live: _Live, service_samples: list[ServiceProbeSample]) -> dict[str, Any] | None:
    """Each restore step's duration, the first good write through MCP after it, the target."""
    outcome = live.restore
    if outcome is None or live.clock is None:
        return None
    first_good = None
    if outcome.t_reattached_s is not None:
        at = first_service_write_s(service_samples, outcome.t_reattached_s)
        first_good = None if at is None else at - outcome.t_reattached_s
    return outcome.summary(first_good)


def _runbook(scenario: Scenario, live: _Live) -> dict[str, Any] | None:
    """What the runbook watcher saw and did; None without a runbook."""
    if live.runbook is None:
        return None
    return {"spec": scenario.recovery.runbook, **live.runbook.summary()}


def _latency_per_phase(
    phases: list[Phase],
    tools_list: list[tuple[float, float]],
    t_fault: float | None,
    fault_window_s: float,
) -> dict[str, dict[str, float | int | None]]:
    """Per phase, for the whole run, and for ``fault_window`` = [t_fault, t_fault + the
    reconnect window): the same span in every run of a scenario, so runs compare fairly
    even when their phases (which follow what happened) differ in length."""
    per_phase = {name: LatencyHistogram() for name in PHASES}
    everything, after_fault = LatencyHistogram(), LatencyHistogram()
    for t_s, ms in tools_list:
        everything.record_ms(ms)
        name = phase_of(phases, t_s)
        if name:
            per_phase[name].record_ms(ms)
        if t_fault is not None and t_fault <= t_s < t_fault + fault_window_s:
            after_fault.record_ms(ms)
    latency = {name: h.summary() for name, h in per_phase.items()}
    latency["all"] = everything.summary()
    latency["fault_window"] = after_fault.summary()
    return latency


def _around_the_load(
    live: _Live, requests: list[dict[str, Any]], resources: list[dict[str, Any]], cores: int
) -> dict[str, Any]:
    """Peaks of the database, the server and the load generator over the run."""

    def peak(key: str) -> float | None:
        values = [r[key] for r in resources if r.get(key) is not None]
        return max(values) if values else None

    measured = [r for r in resources if r.get("generator_cpu_cores") is not None]
    cpu = [r["generator_cpu_cores"] for r in measured]
    cpu_saturated, fraction = generator_saturation(
        cpu, [r["generator_cpu_busiest_process"] for r in measured], cores
    )
    lag = loop_lag_by_second([r for r in live.records if r.get("k") == "lag" and r["t_s"] >= 0])
    lagging, lag_fraction = loop_lag_saturation(lag)
    span = (requests[-1]["t_s"] - requests[0]["t_s"]) if len(requests) > 1 else 0.0
    return {
        "database": {
            "connections_peak": peak("db_connections"),
            "max_connections": peak("db_max_connections"),
            "replication_lag_bytes_max": peak("replication_lag_bytes"),
            "replication_lag_s_max": peak("replication_lag_s"),
            "pool_waiting_peak": peak("server_db_pool_waiting"),
        },
        "server": {"sessions_open_peak": peak("server_sessions_open")},
        "generator": {
            "users_peak": max((r["n"] for r in live.records if r.get("k") == "users"), default=0),
            "requests_per_s_mean": (len(requests) / span) if span > 0 else None,
            "cpu_cores_mean": (sum(cpu) / len(cpu)) if cpu else None,
            "cpu_cores_max": max(cpu) if cpu else None,
            "cpu_busiest_process_max": max(
                (r["generator_cpu_busiest_process"] for r in measured), default=None
            ),
            "cores_available": cores,
            "loop_lag_ms_mean": (1000 * sum(lag) / len(lag)) if lag else None,
            "loop_lag_ms_worst_second": (1000 * max(lag)) if lag else None,
            "loop_lagging_fraction": lag_fraction,
            "saturated_fraction": fraction,
            "saturated": cpu_saturated or lagging,
            "saturated_by": [
                name for name, hit in (("cpu", cpu_saturated), ("loop_lag", lagging)) if hit
            ],
            "rule": SATURATION_RULE,
        },
    }


def _request_counts(requests: list[dict[str, Any]]) -> dict[str, Any]:
    errors_by_kind = Counter(r.get("err") or "unknown" for r in requests if not r["ok"])
    n_errors = sum(errors_by_kind.values())
    return {
        "total": len(requests),
        "errors": n_errors,
        "error_rate": (n_errors / len(requests)) if requests else None,
        "errors_by_kind": dict(errors_by_kind),
    }


async def _check_writes(scenario: Scenario, live: _Live, record: RunRecord) -> None:
    """Read the final primary directly: classify the ledger, check the invariants once more,
    test a restore to a restore point against it, and verify the probe's first
    post-failover row is on the promoted node itself."""
    conn = await asyncpg.connect(app_dsn(live.stack.current_primary_dsn), timeout=10)
    try:
        written = await read_written(conn, scenario.ledger, sorted(live.ledger.attempted))
        all_ids = await read_all_ids(conn, scenario.ledger)
        seq = record.metrics.get("db_failover_first_seq")
        if seq is not None:
            present = await conn.fetchval(f"SELECT count(*) FROM {PROBE_TABLE} WHERE seq = $1", seq)
            record.metrics["db_failover_verified_on_promoted_node"] = bool(present)
            if not present:
                record.metrics["db_failover_s"] = None
                record.notes.append(
                    f"probe row {seq} is not on the promoted node: db_failover_s not measured"
                )
        integrity = record.metrics.get("integrity")
        if live.watch is not None and integrity is not None:
            final = await live.watch.checker.run(conn, time.monotonic() - live.t0)
            integrity["after"] = _report_summary(final)
    finally:
        await conn.close()
    if record.faults and record.t_fault_s is None:
        record.notes.append(
            "no fault was confirmed: writes are classified without an incident time"
        )
    restore = live.restore
    target_s = restore.target_t_s if restore is not None and restore.report is not None else None
    classified = live.ledger.classify(
        written, record.t_fault_s, all_ids=all_ids, restore_target_s=target_s
    )
    record.metrics["writes"] = classified.summary()
    integrity = record.metrics.get("integrity")
    if integrity is not None and restore is None:
        integrity["ledger_agrees"] = _ledger_agrees(record, live.ledger, classified)
    mark = live.restore_point
    if mark is not None and restore is not None and restore.report is not None:
        boundary = live.ledger.restore_boundary(
            {row_id for row_id, _ in written}, mark.t_start_s, mark.t_end_s, restore.t_start_s
        )
        record.metrics["writes"]["restore_boundary"] = boundary.summary()
        if not boundary.ok:
            record.notes.append(
                f"the restore to the restore point does not match the ledger: {boundary.summary()}"
            )


def _ledger_agrees(
    record: RunRecord, ledger: WriteLedger, classified: LedgerClassification
) -> dict[str, Any] | None:
    """Does the ledger find exactly the acknowledged writes a corrupting tool says it
    damaged: its updates as altered, its deletions as lost (without a failover or a
    restore, nothing else alters or loses a write)?"""
    damage: dict[str, set[str]] = {}
    for fault in record.faults:
        for kind, ids in (fault.damage or {}).items():
            damage.setdefault(kind, set()).update(ids)
    if not damage:
        return None
    acked = set(ledger.acked)
    expected_altered = (
        damage.get("updated", set()) | damage.get("invariant_broken", set())
    ) & acked
    expected_lost = damage.get("deleted", set()) & acked
    return {
        "altered_expected": len(expected_altered),
        "altered_found": len(classified.altered),
        "lost_expected": len(expected_lost),
        "lost_found": len(classified.lost),
        "exact": expected_altered == set(classified.altered)
        and expected_lost == set(classified.lost),
    }


def _collect_logs(stack: Stack, logs_dir: Path) -> None:
    for path in stack.log_paths():
        source = Path(path)
        if source.exists():
            shutil.copy2(source, logs_dir / source.name)
