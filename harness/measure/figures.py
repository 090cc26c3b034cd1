"""The run's figures, assembled from recorded evidence by pure functions.

``harness.run`` collects the evidence (probe samples, load records, integrity reports,
rows read back from the final primary) and hands it over here as plain data; every
function returns figures for result.json's ``metrics`` and never reads a clock, a
socket or the database. Each is unit-tested on histories known to be bad.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from harness.measure.failover import (
    ProbeCadence,
    ServiceProbeSample,
    WriteProbeSample,
    failover_s,
    observable_until_s,
    rto_s,
)
from harness.measure.integrity import IntegrityReport, first_detection
from harness.measure.latency import RequestTypeFigures, by_request_type

RECOVERY_FIGURES = ("db_failover_s", "failover_s", "rto_s")


class DatabaseFailover(TypedDict):
    db_failover_s: float | None
    db_failover_first_seq: int | None
    db_failover_verified_on_promoted_node: bool | None


class ServiceRecovery(TypedDict):
    failover_s: float | None
    rto_s: float | None


class RequestCounts(TypedDict):
    total: int
    errors: int
    error_rate: float | None
    errors_by_kind: dict[str, int]
    by_type: dict[str, RequestTypeFigures]


class IntegrityFigures(TypedDict):
    """``metrics.integrity``: what the checks saw before, during and after the incident."""

    checks: list[str]
    interval_s: float
    rounds: int
    rounds_unmeasured: int
    baseline: dict[str, Any] | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    injected: dict[str, int] | None
    detected: dict[str, int] | None
    missed: int | None
    ledger_agrees: NotRequired[dict[str, Any] | None]
    """Without a restore: whether the ledger found exactly the damage a tool reported."""


class Detection(TypedDict):
    time_to_detect_s: float | None
    integrity: IntegrityFigures | None


def kill_took_effect(
    samples: Sequence[WriteProbeSample], t_kill_s: float, killed_port: int
) -> bool:
    """False when the write probe saw a write *sent* after the kill commit on the killed
    node: the primary survived. A reply sent before the kill and stamped after it proves
    nothing (it may have committed before), so it is judged by its send time."""
    for sample in samples:
        if not sample.ok or sample.port != killed_port:
            continue
        sent = sample.sent_s if sample.sent_s is not None else sample.t_s
        if sent > t_kill_s:
            return False
    return True


def database_failover(
    samples: Sequence[WriteProbeSample],
    t_kill_s: float,
    promoted_port: int,
    present_seqs: frozenset[int] | None,
) -> DatabaseFailover:
    """t_kill -> the first probe write sent after the kill and committed on the promoted
    node, among those read back from it (``present_seqs``; None: not checked). A write
    acknowledged there and then lost is not the new primary taking writes."""
    for sample in samples:
        sent = sample.sent_s if sample.sent_s is not None else sample.t_s
        if not sample.ok or sample.port != promoted_port or sent < t_kill_s:
            continue
        if present_seqs is not None and sample.seq not in present_seqs:
            continue
        return {
            "db_failover_s": sample.t_s - t_kill_s,
            "db_failover_first_seq": sample.seq,
            "db_failover_verified_on_promoted_node": present_seqs is not None,
        }
    return {
        "db_failover_s": None,
        "db_failover_first_seq": None,
        "db_failover_verified_on_promoted_node": None,
    }


class WriterPath(TypedDict):
    """``metrics.writer_path`` after a primary kill: how the writer endpoint and the
    parts behind it (a pooler) brought the first write to the promoted node."""

    detection_s: float | None
    """Fault -> the promotion began (whoever promotes: the scripted delay, a runbook)."""
    promotion_s: float | None
    """The promotion began -> db_failover_s's write committed on the promoted node (the
    promotion itself, the endpoint's move, the server's path)."""
    endpoint_moved_s: float | None
    """Fault -> the writer endpoint led to the promoted node; None without an endpoint."""
    first_write_after_move_s: float | None
    """Endpoint moved -> the first write committed on the promoted node (db_failover_s's
    write): what the server's own path (its pool, a pooler) added after the move."""
    write_errors_by_kind: dict[str, int]
    """The write probe's failures from the fault to that write, by error (class, and
    SQLSTATE where Postgres or a pooler sent one: 25006 is a read-only transaction)."""


def writer_path(
    samples: Sequence[WriteProbeSample],
    t_kill_s: float,
    first_write_s: float | None,
    moves_s: Sequence[float],
    promotions_s: Sequence[float] = (),
) -> WriterPath:
    """The writer path's figures from the probe's samples, the endpoint's moves and when
    promotions began (times from the start of the load); ``first_write_s`` is when
    db_failover_s's write was acknowledged (None: never). A move or promotion before the
    kill is not this failover's."""
    moved = next((t for t in sorted(moves_s) if t >= t_kill_s), None)
    promoted = next((t for t in sorted(promotions_s) if t >= t_kill_s), None)
    errors = Counter(
        s.error or "unknown"
        for s in samples
        if not s.ok
        and (s.sent_s if s.sent_s is not None else s.t_s) >= t_kill_s
        and (first_write_s is None or s.t_s <= first_write_s)
    )
    return {
        "detection_s": None if promoted is None else promoted - t_kill_s,
        "promotion_s": None
        if promoted is None or first_write_s is None
        else first_write_s - promoted,
        "endpoint_moved_s": None if moved is None else moved - t_kill_s,
        "first_write_after_move_s": None
        if moved is None or first_write_s is None
        else first_write_s - moved,
        "write_errors_by_kind": dict(sorted(errors.items())),
    }


@dataclass(frozen=True)
class RecoveryInputs:
    """What the service recovery is judged on, beside the probe samples."""

    t_fault_s: float
    run_end_s: float
    window_s: float
    cadence: ProbeCadence
    restore_required: bool
    restored_at_s: float | None
    tools_list: Sequence[tuple[float, float]]
    """(t_s, ms) of every tools/list attempt, for RTO's latency condition."""
    p99_target_ms: float | None


def service_recovery(
    verified: Sequence[ServiceProbeSample], inputs: RecoveryInputs
) -> ServiceRecovery:
    """failover_s and rto_s over probe samples already checked against the ledger
    (``failover.verified_samples``). Damaged data does not stop writes: without the
    restore the scenario calls for, the service never recovered, whatever the probe saw."""
    if inputs.restore_required and inputs.restored_at_s is None:
        return {"failover_s": None, "rto_s": None}
    evidence = {"cadence": inputs.cadence}
    return {
        "failover_s": failover_s(
            verified,
            inputs.t_fault_s,
            inputs.window_s,
            inputs.run_end_s,
            inputs.restored_at_s,
            **evidence,
        ),
        "rto_s": rto_s(
            verified,
            inputs.t_fault_s,
            inputs.window_s,
            inputs.run_end_s,
            inputs.tools_list,
            inputs.p99_target_ms,
            inputs.restored_at_s,
            **evidence,
        ),
    }


def not_reached(
    figures: Mapping[str, Any],
    t_fault_s: float,
    run_end_s: float,
    window_s: float,
    *,
    database_measured: bool,
) -> dict[str, float]:
    """For each recovery figure that was never reached: how long after the fault the run
    could have confirmed it. A recovery needs a whole stability window after it, so the
    service figures are judged up to ``run_end - window`` only: a recovery inside the last
    window is unobservable, and its objective is then not measured rather than missed."""
    horizons = {
        "db_failover_s": run_end_s - t_fault_s,
        "failover_s": observable_until_s(run_end_s, window_s) - t_fault_s,
        "rto_s": observable_until_s(run_end_s, window_s) - t_fault_s,
    }
    return {
        name: horizon
        for name, horizon in horizons.items()
        if figures.get(name) is None
        and horizon > 0
        and (name != "db_failover_s" or database_measured)
    }


def request_counts(requests: Iterable[Mapping[str, Any]]) -> RequestCounts:
    """Every request the clients made, and the failed ones by kind (``tool_error`` counts
    a failure a server reported inside a normal result)."""
    total = 0
    errors_by_kind: Counter[str] = Counter()
    typed: list[tuple[str, float, bool]] = []
    for request in requests:
        total += 1
        if not request["ok"]:
            errors_by_kind[request.get("err") or "unknown"] += 1
        typed.append((str(request.get("m") or ""), float(request["ms"]), bool(request["ok"])))
    errors = sum(errors_by_kind.values())
    return {
        "total": total,
        "errors": errors,
        "error_rate": (errors / total) if total else None,
        "errors_by_kind": dict(errors_by_kind),
        "by_type": by_request_type(typed),
    }


DAMAGE_CHECKS = {"updated": "checksum", "invariant_broken": "title_not_blank"}
"""Which of the reference invariants must find each kind of damage the reference server's
``compact_notes`` reports (deleted rows are found by the ledger, as lost writes). Checks of
other names are not compared."""


def _report_summary(report: IntegrityReport) -> dict[str, Any]:
    return {"t_s": round(report.t_s, 3), **report.summary()}


def integrity_figures(
    reports: Sequence[IntegrityReport],
    check_names: Sequence[str],
    interval_s: float,
    t_fault_s: float | None,
    restore_start_s: float | None,
    injected: Mapping[str, Sequence[str]],
    final: IntegrityReport | None,
) -> Detection:
    """time_to_detect_s and the integrity checks: the last check before the incident, the
    last before the restore (or the run's end), the final check on the final primary
    (``final``; None when it could not run: not measured), and what a corrupting tool said
    it damaged against what the checks found."""
    detected = first_detection(reports, t_fault_s) if t_fault_s is not None else None
    baseline = [r for r in reports if t_fault_s is None or r.t_s < t_fault_s]
    before = [r for r in reports if restore_start_s is None or r.t_s < restore_start_s]
    found: dict[str, int] = {}
    if before and injected:
        by_check = {c.name: c.ids for r in before for c in r.checks if c.error is None}
        found = {
            kind: len(set(ids) & by_check.get(check, frozenset()))
            for kind, ids in injected.items()
            if (check := DAMAGE_CHECKS.get(kind)) in by_check
        }
    return {
        "time_to_detect_s": None if detected is None or t_fault_s is None else detected - t_fault_s,
        "integrity": {
            "checks": list(check_names),
            "interval_s": interval_s,
            "rounds": len(reports),
            "rounds_unmeasured": sum(1 for r in reports if not r.measured),
            "baseline": _report_summary(baseline[-1]) if baseline else None,
            "before": _report_summary(before[-1]) if before else None,
            "after": _report_summary(final) if final is not None else None,
            "injected": {kind: len(ids) for kind, ids in injected.items()} or None,
            "detected": found or None,
            "missed": sum(len(injected[kind]) - n for kind, n in found.items()) if found else None,
        },
    }
