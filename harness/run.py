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
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg

from harness.chaos import FaultContext, FaultRecord, run_fault
from harness.config import LoadConfig, Scenario
from harness.load.mix import mix_for_server
from harness.load.records import of_kind
from harness.load.swarm import RecordTail, Swarm, SwarmShape, settings_for
from harness.mcp_client.async_client import list_tools_once
from harness.mcp_client.writes import WriteTemplate
from harness.measure.clock import RunClock
from harness.measure.integrity import IntegrityChecker
from harness.measure.ledger import WriteLedger
from harness.measure.phases import Phase
from harness.measure.pooler import pooler_events, server_connection_changes
from harness.measure.probes import CREATE_PROBE_TABLE, PROBE_TABLE, ServiceProbe, WriteProbe
from harness.measure.readback import read_all_ids, read_written
from harness.measure.resources import (
    LoopLagProbe,
    ResourceSampler,
)
from harness.measure.run_metrics import (
    TASK_TOUCHES,
    Evidence,
    IntegrityEvidence,
    Measured,
    ReadBack,
    Samples,
    incident_s,
    ledger_unread,
    measure_run,
)
from harness.objectives import Doubt
from harness.recover import (
    IntegrityWatch,
    RestoreOutcome,
    RestorePointMark,
    Restorer,
    app_database_dsn,
    create_restore_point,
)
from harness.redaction import copy_redacted, redact
from harness.runbook import RunbookLoadError, RunbookWatch
from harness.runbook.context import RunbookContext
from harness.runbook.steps import runbook_for
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
    metrics: Mapping[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    doubts: list[Doubt] = field(default_factory=list)
    """Reasons figures could be wrong (a saturated generator, ...), each with the figures it
    touches: objectives on those are not measured."""
    duration_s: float = 0.0

    @property
    def faults_confirmed(self) -> bool:
        return all(f.confirmed for f in self.faults)

    @property
    def t_fault_s(self) -> float | None:
        """The incident: the earliest confirmed fault (None without one)."""
        return incident_s(self.faults)

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
            # notes and doubts carry exception texts and log tails: no secret may go out
            "notes": [redact(note) for note in self.notes + [d.reason for d in self.doubts]],
            "doubts": [redact(d.reason) for d in self.doubts],
            "doubt_scopes": [{**d.as_dict(), "reason": redact(d.reason)} for d in self.doubts],
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
    samples: Samples | None = None


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
            series = _Series(scenario, stack, observer, generator_cpus, allow_remote, len(runs))
            await _one_run(series, run, record, index)
    except RunbookLoadError as exc:
        current.notes.append(f"recovery.runbook: {exc}; nothing was started")
        observer.event(f"runbook error: {exc}")
    except ScenarioDoesNotFitServer as exc:
        current.notes.append(str(exc))
        observer.event(f"scenario error: {exc}")
    except StackError as exc:
        current.notes.append(f"the stack did not come up or failed: {exc}")
        observer.event(f"stack error: {exc}")
    except TimeoutError:
        current.notes.append(f"the run hit its wall-time cap of {scenario.hard_cap_s:g} s")
    except (asyncio.CancelledError, KeyboardInterrupt):
        current.interrupted = True
        current.notes.append("interrupted before the end: partial result")
    except Exception as exc:  # a failed run still reports, stops everything and says why
        (logs_dir / "harness-error.log").write_text(redact(traceback.format_exc()))
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
            await to_completion(stack.down())
            _collect_logs(stack, logs_dir)
            (logs_dir / "processes.json").write_text(json.dumps(stack.inventory(), indent=1))
            stack.remove_run_dir()
    return records


def _planned_record(scenario: Scenario, run_id: str) -> RunRecord:
    record = RunRecord(run_id, scenario, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    record.faults = [FaultRecord.planned(f) for f in scenario.faults]
    return record


@dataclass(frozen=True)
class _Series:
    """What every run of a series shares."""

    scenario: Scenario
    stack: Stack
    observer: Observer
    generator_cpus: frozenset[int] | None
    allow_remote: bool
    count: int


async def _one_run(series: _Series, run: PlannedRun, record: RunRecord, index: int) -> None:
    """The stack up (first run) or back to the series start (later ones), then the load,
    probes and faults, then the ledger checked on the final primary."""
    scenario, stack, observer = series.scenario, series.stack, series.observer
    record.started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    (run.result_dir / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    live: _Live | None = None
    try:
        async with asyncio.timeout(scenario.hard_cap_s):
            if index == 0:
                await _bring_up(stack, observer, series=series.count > 1)
            else:
                await _back_to_series_start(stack, scenario, observer, record)
            record.stack_up = True
            if series.count > 1:
                observer.event(f"run {index + 1} of {series.count}: {run.run_id}")
            live = _Live(stack, time.monotonic(), WriteLedger())
            await _run_load(series, live, run.result_dir, record)
            record.complete = True
    finally:
        if live is not None:
            readback = None
            try:
                readback = await to_completion(_read_back(scenario, live))
            except Exception as exc:
                record.doubts.append(ledger_unread(exc))
            if live.samples is not None:
                _take(record, measure_run(_evidence(scenario, live, record, readback)))
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


async def to_completion(
    awaitable: Any, *, cancel_first: bool = False, again: Callable[[], None] | None = None
) -> Any:
    """Await to the end, absorbing every cancellation (Ctrl-C) that arrives meanwhile, so a
    stopping run never leaves its stack half down. With ``cancel_first`` the first one
    cancels the awaited task (a run then cleans up and returns its partial record);
    ``again`` is told of each later one."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return task.result()
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if cancel_first and not cancelled:
                task.cancel()
                cancelled = True
            elif again is not None:
                again()


async def _run_load(series: _Series, live: _Live, result_dir: Path, record: RunRecord) -> None:
    """Load, probes and faults until the load stops by itself; measured even when interrupted."""
    scenario, observer = series.scenario, series.observer
    await _create_probe_table(live.stack)
    swarm, tail = await _start_load(series, live, result_dir, record)
    observers = _Observers.start(scenario, live, record, swarm)
    stop = asyncio.Event()
    restoring = asyncio.Event()
    tasks = observers.tasks(stop) + _fault_tasks(scenario, live, record, observer)
    restore_task = _restore_task(scenario, live, observer, restoring)
    if scenario.recovery.runbook is not None:
        live.runbook = _runbook_watch(scenario, live, observer, restoring, restore_task)
        tasks.append(asyncio.create_task(live.runbook.run(stop), name=RUNBOOK_WATCH_TASK))
    try:
        await _follow_load(swarm, tail, live, record, observer, scenario.load)
    finally:
        if restore_task is not None:
            await _finish_restore(restore_task, restoring, live, record)
        stop.set()
        run_end_s = await _stop_tasks(tasks, live, record)
        await asyncio.to_thread(swarm.stop)
        _ingest(tail.read_new(), live)
        if tail.skipped_lines:
            record.notes.append(f"{tail.skipped_lines} malformed load record line(s) were skipped")
        if scenario.load.remote_workers:
            record.notes.append(
                "remote workers' CPU is not sampled: the saturation rule covers local Locust processes only"
            )
        cpus = series.generator_cpus
        live.samples = observers.samples(
            run_end_s, len(cpus) if cpus else len(os.sched_getaffinity(0))
        )


class ScenarioDoesNotFitServer(Exception):
    """The scenario names what the server under test does not have; nothing was loaded."""


async def _mix_for_the_server(scenario: Scenario, stack: Stack, record: RunRecord) -> Scenario:
    """A user's server's tools/list decides the mix the clients send (``load.mix``); the
    record's resolved scenario says what ran. The reference server has every tool."""
    if not (scenario.server.command or scenario.server.url):
        return scenario
    outcome, tools = await list_tools_once(
        stack.endpoints.mcp_url,
        protocol=scenario.load.protocol,
        headers=scenario.server.resolved_headers(),
    )
    if tools is None:
        record.notes.append(
            f"load.tool_mix not checked: the server's tools/list failed ({outcome.detail or outcome.error_kind})"
        )
        return scenario
    listed = [str(t["name"]) for t in tools]
    decision = mix_for_server(
        scenario.load.tool_mix,
        explicit="tool_mix" in scenario.load.model_fields_set,
        listed=listed,
        write_tool=scenario.ledger.tool,
    )
    if decision.unknown:
        raise ScenarioDoesNotFitServer(
            f"load.tool_mix names {', '.join(decision.unknown)}, which the server does not "
            f"list (its tools: {', '.join(listed) or 'none'}); nothing was loaded. Fix the "
            "mix (mcp-harness init writes one from the server's tools)"
        )
    if decision.left_out:
        record.notes.append(
            f"load.tool_mix: the default mix's {', '.join(decision.left_out)} are not tools of "
            "this server and were left out"
        )
        load = scenario.load.model_copy(update={"tool_mix": decision.mix})
        scenario = scenario.model_copy(update={"load": load})
        record.scenario = scenario
    return scenario


async def _create_probe_table(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.endpoints.primary_proxy_dsn, timeout=10)
    try:
        await conn.execute(CREATE_PROBE_TABLE)
    finally:
        await conn.close()


async def _start_load(
    series: _Series, live: _Live, result_dir: Path, record: RunRecord
) -> tuple[Swarm, RecordTail]:
    """The Locust processes started; returns once the load has begun (``live.t0`` and
    ``live.clock`` are its start)."""
    scenario, observer, load = series.scenario, series.observer, series.scenario.load
    scenario = await _mix_for_the_server(scenario, live.stack, record)
    settings = settings_for(
        scenario, result_dir / "logs" / "load-records.jsonl", f"load-{record.run_id[-4:]}"
    )
    mcp = urlsplit(live.stack.endpoints.mcp_url)
    swarm = Swarm(
        live.stack.registry,
        settings,
        SwarmShape.of(load, f"{mcp.scheme}://{mcp.netloc}", series.generator_cpus),
        allow_remote=series.allow_remote,
    )
    tail = swarm.tail()
    observer.event(f"starting {load.users} MCP clients for {load.run_time:g} s")
    swarm.start()
    record.notes.extend(swarm.affinity_notes)
    if load.remote_workers:
        observer.event(
            f"waiting for {load.remote_workers} remote worker(s); on each machine run:\n"
            f"  {swarm.remote_worker_command()}"
        )
    live.t0 = await _load_started(swarm, tail, live, EXPECT_WORKERS_WAIT_S + 15.0)
    live.clock = RunClock(live.t0)
    return swarm, tail


@dataclass
class _Observers:
    """What watches the run beside the load: the write and service probes, the resource
    sampler, the harness's own loop lag, and the integrity watch (``live.watch``)."""

    write_probe: WriteProbe
    service_probe: ServiceProbe
    sampler: ResourceSampler
    loop_lag: LoopLagProbe
    watch: IntegrityWatch | None

    @classmethod
    def start(cls, scenario: Scenario, live: _Live, record: RunRecord, swarm: Swarm) -> _Observers:
        stack, probes, ledger = live.stack, scenario.probes, scenario.ledger
        assert live.clock is not None, "the load has not started"
        service_probe = ServiceProbe(
            stack.endpoints.mcp_url,
            live.t0,
            live.ledger,
            probes.service_interval,
            timeout_s=scenario.service_timeout_s,
            headers=scenario.server.resolved_headers(),
            seed=scenario.seed,
            protocol=scenario.load.protocol,
            success_when=ledger.success_when,
            write=WriteTemplate(ledger.tool, tuple(ledger.arguments.items()), ledger.content),
        )
        sampler = ResourceSampler(
            primary_dsn=lambda: stack.current_primary_dsn,
            metrics_urls=stack.server_metrics_urls(),
            generator_pids=swarm.pids,
            t0=live.t0,
        )
        if scenario.integrity_checks:
            live.watch = IntegrityWatch(
                IntegrityChecker(scenario.integrity_checks, scenario.integrity.timeout),
                stack,
                live.clock,
                scenario.integrity.interval,
                incident=lambda: record.t_fault_s,
            )
        write_probe = WriteProbe(
            stack.endpoints.server_database_url, live.t0, probes.write_interval, probes.timeout
        )
        return cls(write_probe, service_probe, sampler, LoopLagProbe(live.t0), live.watch)

    def tasks(self, stop: asyncio.Event) -> list[asyncio.Task[Any]]:
        runs = [
            (self.loop_lag.run(stop), "harness-loop-lag"),
            (self.write_probe.run(stop), "write-probe"),
            (self.service_probe.run(stop), "service-probe"),
            (self.sampler.run(stop), "resource-sampler"),
        ]
        if self.watch is not None:
            runs.append((self.watch.run(stop), "integrity-watch"))
        return [asyncio.create_task(run, name=name) for run, name in runs]

    def samples(self, run_end_s: float, generator_cores: int) -> Samples:
        return Samples(
            self.write_probe.samples,
            self.service_probe.samples,
            self.sampler.samples,
            self.loop_lag.seconds,
            run_end_s,
            generator_cores,
        )


def _fault_tasks(
    scenario: Scenario, live: _Live, record: RunRecord, observer: Observer
) -> list[asyncio.Task[None]]:
    """One task per scheduled fault. A restore to the restore point needs that point made
    just before the first fault fires, and no fault before it is made."""
    restore = scenario.recovery.restore
    first_fault = min(
        range(len(scenario.faults)), key=lambda i: scenario.faults[i].at, default=None
    )
    point_made = asyncio.Event()

    async def mark_restore_point() -> None:
        assert live.clock is not None
        try:
            live.restore_point = await create_restore_point(
                live.stack, live.clock, f"mcp-harness-{record.run_id[-4:]}-before-fault"
            )
            live.events.append((live.restore_point.t_end_s, "restore point created"))
        finally:
            point_made.set()

    async def after_restore_point() -> None:
        await point_made.wait()

    with_point = restore is not None and restore.target == "restore_point"
    return [
        asyncio.create_task(
            run_fault(
                fault,
                record.faults[index],
                FaultContext(live.stack, scenario, live.t0, index, live.events, observer.event),
                before=(mark_restore_point if index == first_fault else after_restore_point)
                if with_point
                else None,
            ),
            name=f"fault-{index}-{fault.kind}",
        )
        for index, fault in enumerate(scenario.faults)
    ]


def _restore_task(
    scenario: Scenario, live: _Live, observer: Observer, restoring: asyncio.Event
) -> asyncio.Task[RestoreOutcome] | None:
    restore = scenario.recovery.restore
    if restore is None:
        return None
    assert live.clock is not None
    restorer = Restorer(
        restore,
        live.stack,
        live.clock,
        live.watch,
        live.ledger,
        scenario.ledger,
        lambda: live.restore_point,
        observer.event,
    )
    return asyncio.create_task(restorer.run(restoring), name="restore")


async def _follow_load(
    swarm: Swarm,
    tail: RecordTail,
    live: _Live,
    record: RunRecord,
    observer: Observer,
    load: LoadConfig,
) -> None:
    """Read the load's records every second until it stops by itself (or 60 s late)."""
    deadline = live.t0 + load.run_time + 60.0
    while swarm.running and time.monotonic() < deadline:
        _ingest(tail.read_new(), live)
        observer.tick(_status(live, record, load.users))
        await asyncio.sleep(1.0)
    if swarm.running:
        record.notes.append(
            "the load did not stop by itself within run_time + 60 s; it was stopped"
        )


async def _stop_tasks(tasks: list[asyncio.Task[Any]], live: _Live, record: RunRecord) -> float:
    """Every task stopped (or left to finish, ``_cancel_at_end``); a task that failed is a
    doubt on the figures it feeds. Returns the end of the run (s from t0)."""
    for task in tasks:
        if not task.done() and _cancel_at_end(task, live):
            task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    run_end_s = time.monotonic() - live.t0
    for task, outcome in zip(tasks, results, strict=True):
        if isinstance(outcome, Exception):
            record.doubts.append(
                Doubt(
                    f"{task.get_name()} failed, its figures are incomplete: {outcome!r}",
                    TASK_TOUCHES.get(task.get_name(), ("*",)),
                )
            )
    return run_end_s


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
        live.restore = await to_completion(task)
        raise
    except Exception as exc:
        record.doubts.append(Doubt(f"the restore failed unexpectedly: {exc!r}"))


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
        started = next((r["t"] for r in of_kind(early, "users")), None)
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
    users = next((r["n"] for r in of_kind(reversed(live.records), "users")), 0)
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


def _pooler_events(live: _Live, record: RunRecord) -> list[tuple[float, str]]:
    """When the pooler lost its server connections and connected again, from its log."""
    log, t_fault = live.stack.pooler_log, incident_s(record.faults)
    if log is None or t_fault is None or live.clock is None or not log.exists():
        return []
    changes = server_connection_changes(log.read_text(errors="replace").splitlines())
    moves_s = [m.at - live.t0 for m in live.stack.writer_moves]
    return pooler_events(changes, live.clock.t_of, t_fault, moves_s)


def _evidence(
    scenario: Scenario, live: _Live, record: RunRecord, readback: ReadBack | None
) -> Evidence:
    """What the run recorded, as the plain data ``measure_run`` takes."""
    assert live.samples is not None
    watch = live.watch
    moves = [
        (m.at - live.t0, f"writer endpoint moved to {m.node} (port {m.port})")
        for m in live.stack.writer_moves
    ]
    for p in live.stack.promotions:  # the harness's own promotions are events already
        if p.by != "harness":
            moves.append((p.started - live.t0, f"{p.by}: the standby took the leader lock"))
            moves.append((p.done - live.t0, f"{p.by}: the standby promoted, taking writes"))
    moves += [
        (r.at - live.t0, f"patroni: {r.node} rejoined as a replica") for r in live.stack.rejoins
    ]
    moves += _pooler_events(live, record)
    return Evidence(
        scenario=scenario,
        records=live.records,
        events=sorted([*live.events, *moves]),
        faults=record.faults,
        samples=live.samples,
        readback=readback,
        ledger=live.ledger,
        current_primary_port=live.stack.current_primary_port,
        restore=live.restore,
        restore_point=live.restore_point,
        integrity=None
        if watch is None
        else IntegrityEvidence(
            watch.reports, [c.name for c in watch.checker.checks], watch.interval_s
        ),
        runbook=None if live.runbook is None else live.runbook.summary(),
        wall_drift_s=None if live.clock is None else live.clock.drift_s(),
        writer_moves_s=[m.at - live.t0 for m in live.stack.writer_moves],
        promotions_s=[p.started - live.t0 for p in live.stack.promotions],
    )


def _take(record: RunRecord, measured: Measured) -> None:
    """The figures and findings into the record (after the doubts and notes the run
    itself found)."""
    record.faults = measured.faults
    record.phases = measured.phases
    record.metrics = measured.metrics
    record.timeline = measured.timeline
    record.notes.extend(measured.notes)
    record.doubts.extend(measured.doubts)


async def _read_back(scenario: Scenario, live: _Live) -> ReadBack:
    """Read the final primary directly: the ledger's rows, every id, the write probe's rows
    and the invariants once more."""
    samples = live.samples
    candidates = [s.seq for s in samples.write if s.ok] if samples is not None else []
    conn = await asyncpg.connect(app_database_dsn(live.stack.current_primary_dsn), timeout=10)
    try:
        written = await read_written(conn, scenario.ledger, sorted(live.ledger.attempted))
        all_ids = await read_all_ids(conn, scenario.ledger)
        rows = await conn.fetch(
            f"SELECT seq FROM {PROBE_TABLE} WHERE seq = ANY($1::bigint[])", candidates
        )
        final = None
        if live.watch is not None:
            final = await live.watch.checker.run(conn, time.monotonic() - live.t0)
    finally:
        await conn.close()
    return ReadBack(written, all_ids, frozenset(int(r[0]) for r in rows), final)


def _collect_logs(stack: Stack, logs_dir: Path) -> None:
    """Every process log into the results, each line redacted while it is copied."""
    for path in stack.log_paths():
        source = Path(path)
        if source.exists():
            copy_redacted(source, logs_dir / source.name)
