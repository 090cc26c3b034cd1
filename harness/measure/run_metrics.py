"""A run's figures from its recorded evidence: the one function (``measure_run``) that
turns what the load, the probes, the faults, the restore and the final read of the
database recorded into metrics, phases, a timeline, notes and doubts.

It takes plain data (``Evidence``) and returns its findings (``Measured``); it changes
nothing it is given: a primary kill that the write probe saw fail comes back as an
unconfirmed copy of its fault record. Every figure is computed by the pure functions of
the modules beside it; this module only assembles them (docs/measurements.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from harness.chaos import FaultRecord
from harness.config import LATENCY_METRICS, PRIMARY_CHANGES, Scenario
from harness.load.records import Request, of_kind, of_kinds
from harness.measure.clock import WALL_DRIFT_TOLERANCE_S
from harness.measure.doubts import BOUNDS_KEY, Doubt
from harness.measure.failover import (
    NOT_REACHED_KEY,
    ProbeCadence,
    ServiceProbeSample,
    WriteProbeSample,
    first_service_write_s,
    lost_acks_after,
    verified_samples,
)
from harness.measure.figures import (
    RECOVERY_FIGURES,
    DatabaseFailover,
    Detection,
    RecoveryInputs,
    RequestCounts,
    ServiceRecovery,
    WriterPath,
    database_failover,
    integrity_figures,
    kill_took_effect,
    not_reached,
    request_counts,
    service_recovery,
    writer_path,
)
from harness.measure.histogram import LatencySummary
from harness.measure.integrity import IntegrityReport
from harness.measure.latency import RequestAttempt, expected_interval_ms, latency_per_phase
from harness.measure.ledger import (
    LedgerClassification,
    RecordGaps,
    WriteFigures,
    WriteLedger,
    record_gaps,
)
from harness.measure.phases import Phase, compute_phases
from harness.measure.reconnect import ReconnectFigures, reconnect_metrics
from harness.measure.resources import (
    HARNESS_STALL_LIMIT_S,
    SATURATION_RULE,
    generator_saturation,
    loop_lag_by_second,
    loop_lag_saturation,
    saturation_by_phase,
)
from harness.measure.timeline import build_timeline, connection_opens, reopened_s
from harness.recover import RestoreOutcome, RestorePointMark


class WriteProbeCounts(TypedDict):
    samples: int
    failed: int


class ServiceProbeCounts(TypedDict):
    samples: int
    failed: int
    acknowledged_then_lost: int


class ProbeCounts(TypedDict):
    write: WriteProbeCounts
    service: ServiceProbeCounts


class DatabaseGauges(TypedDict):
    connections_peak: float | None
    max_connections: float | None
    replication_lag_bytes_max: float | None
    replication_lag_s_max: float | None
    pool_waiting_peak: float | None


class ServerGauges(TypedDict):
    sessions_open_peak: float | None


class GeneratorFigures(TypedDict):
    """How busy the load generator was, and the saturation rule judged per phase."""

    users_peak: int
    requests_per_s_mean: float | None
    cpu_cores_mean: float | None
    cpu_cores_max: float | None
    cpu_busiest_process_max: float | None
    cores_available: int
    loop_lag_ms_mean: float | None
    loop_lag_ms_worst_second: float | None
    loop_lagging_fraction: float
    saturated_fraction: float
    saturated: bool
    saturated_by: list[str]
    by_phase: dict[str, dict[str, Any]]
    rule: str


class HarnessLoopFigures(TypedDict):
    loop_lag_ms_mean: float | None
    loop_lag_ms_worst_second: float | None
    loop_stall_ms_max: float | None
    loop_lagging_fraction: float
    loop_lagging: bool


class AroundTheLoad(TypedDict):
    database: DatabaseGauges
    server: ServerGauges
    generator: GeneratorFigures
    harness: HarnessLoopFigures


class Metrics(DatabaseFailover, ServiceRecovery, Detection, AroundTheLoad):
    """result.json's ``metrics``: every figure of a run (the metric table in docs/measurements.md, from
    ``harness.catalog``, says what each one means)."""

    restore: dict[str, Any] | None
    runbook: dict[str, Any] | None
    reconnect: ReconnectFigures
    tools_list_latency_ms: dict[str, LatencySummary]
    tools_list_ok_latency_ms: dict[str, LatencySummary]
    requests: RequestCounts
    writer_path: WriterPath | None
    """After a primary kill: the writer endpoint's move and the errors writes met."""
    probes: ProbeCounts
    writes: WriteFigures | None
    not_reached_within_s: NotRequired[dict[str, float]]
    """Recovery figures never reached: how long after the fault the run could have seen them."""
    bounds: NotRequired[dict[str, list[float]]]
    """``harness.measure.doubts.BOUNDS_KEY``."""


@dataclass
class Samples:
    """What the run recorded while the load ran, for measuring once the ledger is checked."""

    write: list[WriteProbeSample]
    service: list[ServiceProbeSample]
    resources: list[dict[str, Any]]
    harness_lag: list[dict[str, float]]
    run_end_s: float
    generator_cores: int


@dataclass(frozen=True)
class ReadBack:
    """What the final primary holds, read once after the run."""

    written: list[tuple[str, str]]
    all_ids: list[str] | None
    probe_seqs: frozenset[int]
    final_integrity: IntegrityReport | None


@dataclass(frozen=True)
class IntegrityEvidence:
    """The integrity watch's rounds: every report, the checks' names, the interval."""

    reports: Sequence[IntegrityReport]
    check_names: list[str]
    interval_s: float


@dataclass(frozen=True)
class Evidence:
    """Everything a run recorded, as plain data."""

    scenario: Scenario
    records: list[dict[str, Any]]
    """The load's records (``k``: req, write, broken, reconnected, users, lag, ...)."""
    events: list[tuple[float, str]]
    faults: list[FaultRecord]
    samples: Samples
    readback: ReadBack | None
    """None when the final read of the database failed."""
    ledger: WriteLedger
    current_primary_port: int
    restore: RestoreOutcome | None = None
    restore_point: RestorePointMark | None = None
    integrity: IntegrityEvidence | None = None
    runbook: dict[str, Any] | None = None
    """What the runbook watcher saw and did (its summary), without the spec."""
    wall_drift_s: float | None = None
    """How far the wall clock moved against the monotonic one during the run."""
    writer_moves_s: list[float] = field(default_factory=list)
    """When the writer endpoint was moved to a promoted node (``topology.writer: endpoint``)."""
    promotions_s: list[float] = field(default_factory=list)
    """When each promotion of a standby began."""


@dataclass
class Measured:
    """What ``measure_run`` found."""

    faults: list[FaultRecord]
    """The fault records, a kill the write probe saw fail unconfirmed."""
    phases: list[Phase]
    metrics: Metrics
    timeline: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    doubts: list[Doubt] = field(default_factory=list)

    @property
    def t_fault_s(self) -> float | None:
        """The incident: the earliest confirmed fault (None without one)."""
        return incident_s(self.faults)


def incident_s(faults: Sequence[FaultRecord]) -> float | None:
    """The earliest confirmed fault's time (None without one)."""
    times = [f.t_fault_s for f in faults if f.confirmed and f.t_fault_s is not None]
    return min(times) if times else None


LEDGER_TOUCHES = ("writes", "db_failover_s", "failover_s", "rto_s", "integrity.after")
"""What rests on the final read of the database: the ledger, and the recoveries judged
only on writes found intact."""


def ledger_unread(exc: BaseException) -> Doubt:
    """The final read of the database failed. The recoveries were then measured on
    acknowledged writes alone; checking them could only have made them later, so they stay
    lower bounds (a primary that was never replaced is still judged a miss)."""
    return Doubt(
        f"the write ledger could not be checked: {exc!r}", LEDGER_TOUCHES, RECOVERY_FIGURES
    )


WALL_CLOCK_TOUCHES = ("writes.rpo_s", "writes.restore_boundary", "restore")
PROBE_TOUCHES = ("db_failover_s", "failover_s", "rto_s", "restore.steps.first_good_write_s")
TASK_TOUCHES = {
    "write-probe": ("db_failover_s",),
    "service-probe": ("failover_s", "rto_s", "restore.steps.first_good_write_s"),
    "integrity-watch": ("time_to_detect_s", "integrity"),
    "resource-sampler": ("generator", "database", "server", *LATENCY_METRICS, "reconnect"),
    "harness-loop-lag": PROBE_TOUCHES,
}
"""What each background task's figures are; a task that failed leaves them in doubt (any
other task, a fault or the runbook, leaves everything in doubt)."""


def measure_run(ev: Evidence) -> Measured:
    """Turn the recorded evidence into the metrics (``harness.measure.figures`` and the
    modules beside it compute every figure); ``t_fault`` is the earliest confirmed fault,
    decided once (after the write probe had its say on a primary kill)."""
    faults = [dataclasses.replace(f) for f in ev.faults]
    notes: list[str] = []
    samples, scenario = ev.samples, ev.scenario
    run_end_s = samples.run_end_s
    database = _database_failover(ev, faults, notes)
    t_fault = incident_s(faults)
    writes, classified = _writes(ev, faults, notes)
    intact = None if classified is None else frozenset(classified.intact)
    verified = verified_samples(samples.service, intact)
    restored_at = ev.restore.t_reattached_s if ev.restore else None
    requests = list(of_kind(ev.records, "req"))
    tools_list = [
        RequestAttempt(r["t_s"], r["ms"], r["ok"]) for r in requests if r["m"] == "tools/list"
    ]
    opens = connection_opens(ev.records)
    phases = compute_phases(
        run_end_s=run_end_s,
        t_fault_s=t_fault,
        first_service_write_s=first_service_write_s(verified, max(t_fault, restored_at or t_fault))
        if t_fault is not None
        else None,
        session_starts_s=[t for t, _, change in opens if change > 0],
        session_reopens_s=reopened_s(opens),
        steady_from_s=next((r["t_s"] for r in of_kind(ev.records, "spawned")), 0.0),
        window_s=scenario.windows.stability,
    )
    window = scenario.windows.reconnect
    reconnect = reconnect_metrics(
        of_kinds(ev.records, "broken", "reconnected", "req"),
        _fault_started_s(faults),
        window,
        sessions=scenario.load.protocol != "2026-07-28",
        run_end_s=run_end_s,
    )
    recovery = _service_recovery(scenario, t_fault, verified, tools_list, run_end_s, restored_at)
    probes = _probe_counts(samples, intact)
    metrics: Metrics = {
        **database,
        **recovery,
        **_integrity(ev, t_fault, classified),
        "restore": _restore(ev.restore, verified),
        "runbook": None
        if ev.runbook is None
        else {"spec": scenario.recovery.runbook, **ev.runbook},
        "reconnect": reconnect,
        "tools_list_latency_ms": latency_per_phase(
            phases,
            tools_list,
            t_fault,
            window,
            expected_interval_ms=expected_interval_ms(
                scenario.load.think_time, {str(op): w for op, w in scenario.load.tool_mix.items()}
            ),
        ),
        "tools_list_ok_latency_ms": latency_per_phase(
            phases, tools_list, t_fault, window, successes_only=True
        ),
        "requests": request_counts(requests),
        "writer_path": _writer_path(ev, faults, database),
        **_around_the_load(ev, phases, t_fault, requests),
        "probes": probes,
        "writes": writes,
    }
    if t_fault is not None:
        metrics[NOT_REACHED_KEY] = {
            **not_reached(
                {**database, **recovery},
                t_fault,
                run_end_s,
                scenario.windows.stability,
                database_measured=_primary_change(faults) is not None,
            ),
            **{f"reconnect.{name}": s for name, s in reconnect["over_window_s"].items()},
        }
        lost_probe_writes = probes["service"]["acknowledged_then_lost"]
        if recovery["failover_s"] is None and lost_probe_writes:
            notes.append(
                f"failover_s not reached: {lost_probe_writes} service probe write(s) were "
                "acknowledged and then missing from the final primary; a window whose writes "
                "were lost is not a recovery"
            )
    bounds = reconnect["success_rate_bounds"]
    if bounds is not None:
        metrics[BOUNDS_KEY] = {"reconnect.success_rate": bounds}
    if ev.restore is not None and ev.restore.error:
        notes.append(ev.restore.error)
    if not any(a.ok for a in tools_list):
        notes.append("no successful tools/list was recorded: the load did not reach the server")
    return Measured(
        faults=faults,
        phases=phases,
        metrics=metrics,
        timeline=build_timeline(ev.records, run_end_s, ev.events, samples.resources),
        notes=notes,
        doubts=_doubts(ev, metrics),
    )


def _probe_counts(samples: Samples, intact: frozenset[str] | None) -> ProbeCounts:
    return {
        "write": {
            "samples": len(samples.write),
            "failed": sum(1 for s in samples.write if not s.ok),
        },
        "service": {
            "samples": len(samples.service),
            "failed": sum(1 for s in samples.service if not s.ok),
            "acknowledged_then_lost": lost_acks_after(samples.service, intact, -math.inf),
        },
    }


def _fault_started_s(faults: Sequence[FaultRecord]) -> float | None:
    """When the injector began the earliest confirmed fault: clients it breaks may break
    before the fault is confirmed, and those breaks belong to it."""
    starts = [
        f.t_started_s if f.t_started_s is not None else f.t_fault_s
        for f in faults
        if f.confirmed and f.t_fault_s is not None
    ]
    return min((s for s in starts if s is not None), default=None)


def _saturation_touches(span: str) -> tuple[str, ...]:
    """The figures the load generator measured during ``span`` (a phase, ``all`` or
    ``fault_window``): a saturated generator measured itself there."""
    touched: tuple[str, ...] = tuple(f"{figure}.{span}" for figure in LATENCY_METRICS)
    if span in ("disruption", "storm", "fault_window", "all"):
        touched += ("reconnect",)
    if span == "all":
        touched += ("requests",)
    return touched


def _doubts(ev: Evidence, metrics: Metrics) -> list[Doubt]:
    """Each reason a figure could be wrong, with the figures it touches."""
    doubts: list[Doubt] = []
    drift = ev.wall_drift_s
    if drift is not None and abs(drift) > WALL_DRIFT_TOLERANCE_S:
        doubts.append(
            Doubt(
                f"the wall clock moved {drift:+.3f} s against the monotonic "
                "clock during the run: wall-clock restore targets and rpo_s may be wrong",
                WALL_CLOCK_TOUCHES,
            )
        )
    generator = metrics["generator"]
    for span, judged in generator["by_phase"].items():
        if judged["saturated"]:
            doubts.append(
                Doubt(
                    f"the load generator was saturated during {span} "
                    f"({', '.join(judged['saturated_by'])}; rule: {SATURATION_RULE}): the "
                    f"figures measured then may measure the generator, not the server",
                    _saturation_touches(span),
                )
            )
    harness_lag = metrics["harness"]
    if harness_lag["loop_lagging"]:
        doubts.append(
            Doubt(
                f"the harness's own event loop stalled (over {HARNESS_STALL_LIMIT_S * 1000:.0f} ms "
                f"at once in {harness_lag['loop_lagging_fraction']:.0%} of the seconds): the "
                "probe samples it stamped may be late by as much",
                PROBE_TOUCHES,
            )
        )
    gaps = _ledger_record_gaps(ev.records)
    if gaps.any:
        doubts.append(
            Doubt(
                f"ledger records are missing from the load ({gaps.describe()}): acknowledged "
                "writes may have gone unrecorded",
                ("writes",),
            )
        )
    return doubts


def _ledger_record_gaps(records: list[dict[str, Any]]) -> RecordGaps:
    seqs: dict[str, list[int]] = {}
    final: dict[str, int | None] = {}
    for rec in records:
        kind = rec.get("k")
        if kind in ("write", "write_attempt") and "w" in rec:
            seqs.setdefault(rec["w"], []).append(int(rec["seq"]))
            final.setdefault(rec["w"], None)
        elif kind == "ledger_end":
            final[rec["w"]] = int(rec["n"])
    return record_gaps(seqs, final)


def _primary_change(faults: Sequence[FaultRecord]) -> FaultRecord | None:
    """The confirmed fault after which another node is the primary (a kill, a switchover)."""
    return next((f for f in faults if f.kind in PRIMARY_CHANGES and f.confirmed), None)


def _writer_path(
    ev: Evidence, faults: list[FaultRecord], database: DatabaseFailover
) -> WriterPath | None:
    """Only after a change of primary that took effect (``database`` measured it)."""
    change = _primary_change(faults)
    if change is None or change.t_fault_s is None:
        return None
    failover = database["db_failover_s"]
    first_write = None if failover is None else change.t_fault_s + failover
    return writer_path(
        ev.samples.write, change.t_fault_s, first_write, ev.writer_moves_s, ev.promotions_s
    )


def _database_failover(
    ev: Evidence, faults: list[FaultRecord], notes: list[str]
) -> DatabaseFailover:
    """db_failover_s, measured only when the primary changed (a kill, a switchover); a kill
    that the write probe saw the old primary survive (a write sent after t_fault committed
    on it) is not confirmed. A switchover's old primary takes writes until it steps down."""
    change = _primary_change(faults)
    if change is None or change.t_fault_s is None:
        return database_failover([], 0.0, 0, None)
    if (
        change.kind == "kill_primary"
        and change.killed_port is not None
        and not kill_took_effect(ev.samples.write, change.t_fault_s, change.killed_port)
    ):
        change.confirmed = False  # on the copy measure_run returns
        notes.append(
            "the write probe saw writes sent after t_fault commit on the killed primary: "
            "the fault did not take effect"
        )
        return database_failover([], 0.0, 0, None)
    figures = database_failover(
        ev.samples.write,
        change.t_fault_s,
        ev.current_primary_port,
        None if ev.readback is None else ev.readback.probe_seqs,
    )
    return figures


def _service_recovery(
    scenario: Scenario,
    t_fault: float | None,
    verified: list[ServiceProbeSample],
    tools_list: list[RequestAttempt],
    run_end_s: float,
    restored_at: float | None,
) -> ServiceRecovery:
    if t_fault is None:
        return {"failover_s": None, "rto_s": None}
    p99_targets = {
        o.path: o.target
        for o in scenario.objectives
        if o.path.startswith("tools_list_latency_ms.")
        and o.path.endswith(".p99")
        and o.max is not None
    }
    inputs = RecoveryInputs(
        t_fault_s=t_fault,
        run_end_s=run_end_s,
        window_s=scenario.windows.stability,
        cadence=ProbeCadence(scenario.probes.service_interval, scenario.service_timeout_s),
        restore_required=scenario.recovery.restore is not None,
        restored_at_s=restored_at,
        tools_list=[(a.t_s, a.ms) for a in tools_list],
        p99_target_ms=p99_targets.get(
            "tools_list_latency_ms.recovered.p99", p99_targets.get("tools_list_latency_ms.all.p99")
        ),
    )
    return service_recovery(verified, inputs)


def _injected_damage(faults: Sequence[FaultRecord]) -> dict[str, list[str]]:
    """What damaging faults say they did, id lists by kind."""
    injected: dict[str, list[str]] = {}
    for fault in faults:
        for kind, ids in (fault.damage or {}).items():
            injected.setdefault(kind, []).extend(ids)
    return injected


def _integrity(
    ev: Evidence, t_fault: float | None, classified: LedgerClassification | None
) -> Detection:
    """The integrity checks' figures and, without a restore, whether the ledger agrees with
    the damage a corrupting tool reported."""
    watch = ev.integrity
    if watch is None:
        return {"time_to_detect_s": None, "integrity": None}
    figures = integrity_figures(
        watch.reports,
        watch.check_names,
        watch.interval_s,
        t_fault,
        ev.restore.t_start_s if ev.restore else None,
        _injected_damage(ev.faults),
        None if ev.readback is None else ev.readback.final_integrity,
    )
    integrity = figures["integrity"]
    if integrity is not None and ev.restore is None and classified is not None:
        integrity["ledger_agrees"] = _ledger_agrees(ev, classified)
    return figures


def _restore(
    outcome: RestoreOutcome | None, service_samples: list[ServiceProbeSample]
) -> dict[str, Any] | None:
    """Each restore step's duration, the first good write through MCP after it, the target."""
    if outcome is None:
        return None
    first_good = None
    if outcome.t_reattached_s is not None:
        at = first_service_write_s(service_samples, outcome.t_reattached_s)
        first_good = None if at is None else at - outcome.t_reattached_s
    return outcome.summary(first_good)


def _around_the_load(
    ev: Evidence, phases: list[Phase], t_fault: float | None, requests: list[Request]
) -> AroundTheLoad:
    """Peaks of the database, the server and the load generator over the run, and the
    saturation rule judged over the whole run and over each phase."""
    samples = ev.samples
    resources, cores = samples.resources, samples.generator_cores

    def peak(key: str) -> float | None:
        values = [r[key] for r in resources if r.get(key) is not None]
        return max(values) if values else None

    measured = [r for r in resources if r.get("generator_cpu_cores") is not None]
    cpu = [r["generator_cpu_cores"] for r in measured]
    cpu_saturated, fraction = generator_saturation(
        cpu, [r["generator_cpu_busiest_process"] for r in measured], cores
    )
    lag_records = [r for r in of_kind(ev.records, "lag") if r["t_s"] >= 0]
    lag = loop_lag_by_second(lag_records)
    lagging, lag_fraction = loop_lag_saturation(lag)
    spans = [(p.name, p.start_s, p.end_s) for p in phases]
    if t_fault is not None:
        spans.append(("fault_window", t_fault, t_fault + ev.scenario.windows.reconnect))
    by_phase = {
        judged.phase: judged.as_dict()
        for judged in saturation_by_phase(spans, resources, lag_records, cores)
    }
    by_phase["all"] = {
        "seconds": len(measured),
        "saturated": cpu_saturated or lagging,
        "saturated_by": [n for n, hit in (("cpu", cpu_saturated), ("loop_lag", lagging)) if hit],
    }
    harness_lag = loop_lag_by_second(samples.harness_lag)
    harness_stalls = loop_lag_by_second(samples.harness_lag, "max")
    harness_lagging, harness_fraction = loop_lag_saturation(harness_stalls, HARNESS_STALL_LIMIT_S)
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
            "users_peak": max((r["n"] for r in of_kind(ev.records, "users")), default=0),
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
            "saturated_by": by_phase["all"]["saturated_by"],
            "by_phase": by_phase,
            "rule": SATURATION_RULE,
        },
        "harness": {
            "loop_lag_ms_mean": (1000 * sum(harness_lag) / len(harness_lag))
            if harness_lag
            else None,
            "loop_lag_ms_worst_second": (1000 * max(harness_lag)) if harness_lag else None,
            "loop_stall_ms_max": (1000 * max(harness_stalls)) if harness_stalls else None,
            "loop_lagging_fraction": harness_fraction,
            "loop_lagging": harness_lagging,
        },
    }


def _writes(
    ev: Evidence, faults: list[FaultRecord], notes: list[str]
) -> tuple[WriteFigures | None, LedgerClassification | None]:
    """The ledger against the final primary: every acknowledged write classified, a restore
    to a restore point tested against it, and the corrupting tool's damage compared."""
    readback = ev.readback
    if readback is None:
        return None, None
    t_fault = incident_s(faults)
    if faults and t_fault is None:
        notes.append("no fault was confirmed: writes are classified without an incident time")
    restore = ev.restore
    restored = restore is not None and restore.report is not None
    injected = _injected_damage(faults)
    classified = ev.ledger.classify(
        readback.written,
        t_fault,
        all_ids=readback.all_ids,
        restore_target_s=restore.target_t_s if restored and restore is not None else None,
        restore_began_s=restore.t_start_s if restored and restore is not None else None,
        restore_detached_s=restore.t_detached_s if restored and restore is not None else None,
        intended_lost=frozenset(injected.get("deleted", ())),
    )
    summary = classified.summary()
    mark = ev.restore_point
    if mark is not None and restored and restore is not None:
        boundary = ev.ledger.restore_boundary(
            {row_id for row_id, _ in readback.written},
            mark.t_start_s,
            mark.t_end_s,
            restore.t_start_s,
        )
        summary["restore_boundary"] = boundary.summary()
        if not boundary.ok:
            notes.append(
                f"the restore to the restore point does not match the ledger: {boundary.summary()}"
            )
    return summary, classified


def _ledger_agrees(ev: Evidence, classified: LedgerClassification) -> dict[str, Any] | None:
    """Does the ledger find exactly the acknowledged writes a corrupting tool says it
    damaged: its updates as altered, its deletions as lost (without a failover or a
    restore, nothing else alters or loses a write)?"""
    damage = {kind: set(ids) for kind, ids in _injected_damage(ev.faults).items()}
    if not damage:
        return None
    acked = set(ev.ledger.acked)
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
