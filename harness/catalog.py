"""Every figure a run reports, once: its path in result.json's ``metrics``, its unit,
which way is worse, and what it means.

The objectives validator (``config.METRIC_PATHS``), ``compare`` (which way a change is
a regression), the console (units) and the metric table in docs/measurements.md all read this list; a
figure added to the measurement code without an entry here fails the tests. A path may
hold ``{phase}`` (every latency phase, ``all`` and ``fault_window``), ``{percentile}``
or ``{step}`` (a restore's timed steps); ``paths()`` expands them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Unit = Literal["s", "ms", "fraction", "count", "per_s", "bytes", "cores"]
Worse = Literal["higher", "lower", "neither"]
"""Which way of a change is worse; ``neither`` for a figure that describes the load or
the fault (how many clients broke) rather than how well the server coped."""

PHASES = ("ramp", "baseline", "disruption", "storm", "recovered")
LATENCY_SPANS = (*PHASES, "all", "fault_window")
"""Where a latency histogram is kept: each phase, the whole run, and the same span after
the fault in every run (``fault_window``)."""
PERCENTILES = ("p50", "p90", "p95", "p99", "p99_9", "max")
RESTORE_TIMED_STEPS = (
    "stop",
    "restore_base_backup",
    "replay_wal",
    "promote",
    "reattach_server",
    "first_good_write",
    "rebuild_replica",
)
"""A restore's timed steps, in order (docs/restore.md)."""

INTEGRITY_MOMENTS = ("baseline", "before", "after")
"""When the integrity checks' reports are kept: the last before the fault, just before
the damage was found, at the end."""

PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "phase": LATENCY_SPANS,
    "percentile": PERCENTILES,
    "step": RESTORE_TIMED_STEPS,
    "moment": INTEGRITY_MOMENTS,
}
FREE_PLACEHOLDERS = ("check", "error_kind", "damage", "request")
"""Names a run decides (a scenario's integrity checks, the error kinds and damage kinds
that occurred): their figures are catalogued as a pattern, and an objective cannot name
them."""


@dataclass(frozen=True)
class Metric:
    path: str
    unit: Unit
    worse: Worse
    description: str

    def paths(self) -> Iterator[str]:
        """The concrete paths (placeholders expanded); none for a pattern with a name the
        run decides."""
        if not any("{" + name + "}" in self.path for name in FREE_PLACEHOLDERS):
            yield from _expand(self.path)

    def matches(self, path: str) -> bool:
        return re.fullmatch(self._pattern(), path) is not None

    def _pattern(self) -> str:
        pattern = re.escape(self.path)
        for name, values in PLACEHOLDERS.items():
            pattern = pattern.replace(re.escape("{" + name + "}"), f"(?:{'|'.join(values)})")
        for name in FREE_PLACEHOLDERS:
            pattern = pattern.replace(re.escape("{" + name + "}"), r"[^.]+")
        return pattern


def _expand(path: str) -> Iterator[str]:
    for name, values in PLACEHOLDERS.items():
        token = "{" + name + "}"
        if token in path:
            for value in values:
                yield from _expand(path.replace(token, value))
            return
    yield path


def _latency(name: str, what: str) -> tuple[Metric, ...]:
    return (
        Metric(f"{name}.{{phase}}.{{percentile}}", "ms", "higher", f"{what}: a percentile"),
        Metric(f"{name}.{{phase}}.count", "count", "neither", f"{what}: how many"),
    )


CATALOG: tuple[Metric, ...] = (
    # recovery
    Metric(
        "db_failover_s",
        "s",
        "higher",
        "primary killed or switchover asked → first write sent after it that committed on "
        "the promoted node",
    ),
    Metric(
        "db_failover_first_seq",
        "count",
        "neither",
        "the write probe's sequence number of that first write on the promoted node",
    ),
    Metric(
        "writer_path.detection_s",
        "s",
        "higher",
        "primary killed or switchover asked → the promotion began (the scripted delay, a "
        "runbook's or a failover manager's detection; a switchover's demotion)",
    ),
    Metric(
        "writer_path.promotion_s",
        "s",
        "higher",
        "the promotion began → db_failover_s's write committed on the promoted node",
    ),
    Metric(
        "writer_path.endpoint_moved_s",
        "s",
        "higher",
        "primary killed → the writer endpoint led to the promoted node (topology.writer: endpoint)",
    ),
    Metric(
        "writer_path.first_write_after_move_s",
        "s",
        "higher",
        "writer endpoint moved → db_failover_s's write committed: what the server's path "
        "(its pool, a pooler) added after the move",
    ),
    Metric(
        "writer_path.write_errors_by_kind.{error_kind}",
        "count",
        "neither",
        "the write probe's failures from the kill to that write, by error class and SQLSTATE "
        "(25006: read-only transaction)",
    ),
    Metric(
        "failover_s",
        "s",
        "higher",
        "fault → first MCP write after which writes kept succeeding for the stability window",
    ),
    Metric(
        "rto_s",
        "s",
        "higher",
        "fault → service objectives met again (writes stable, tools/list p99 back under its objective)",
    ),
    Metric(
        "time_to_detect_s", "s", "higher", "damage committed → the integrity checker flagged it"
    ),
    # reconnection
    Metric("reconnect.clients_broken", "count", "neither", "clients whose session the fault broke"),
    Metric(
        "reconnect.clients_reconnected",
        "count",
        "neither",
        "…of them back within the reconnect window",
    ),
    Metric(
        "reconnect.clients_not_reconnected",
        "count",
        "higher",
        "…of them not back within the window",
    ),
    Metric(
        "reconnect.clients_unobserved",
        "count",
        "neither",
        "…of them whose window the run did not see whole",
    ),
    Metric(
        "reconnect.episodes",
        "count",
        "neither",
        "breaks from the fault's start, each client's every break",
    ),
    Metric(
        "reconnect.episodes_reconnected",
        "count",
        "neither",
        "breaks followed by a reconnect within the window",
    ),
    Metric(
        "reconnect.episodes_not_reconnected",
        "count",
        "higher",
        "breaks with no reconnect within the window",
    ),
    Metric(
        "reconnect.episodes_unobserved",
        "count",
        "neither",
        "breaks whose window the run did not see whole",
    ),
    Metric(
        "reconnect.success_rate",
        "fraction",
        "lower",
        "observed breaks followed by a reconnect within the window",
    ),
    Metric(
        "reconnect.time_to_reconnect_s.p50",
        "s",
        "higher",
        "time to reconnect, a break not back counting as over the window",
    ),
    Metric("reconnect.time_to_reconnect_s.p95", "s", "higher", "time to reconnect (p95)"),
    Metric("reconnect.time_to_reconnect_s.p99", "s", "higher", "time to reconnect (p99)"),
    Metric("reconnect.time_to_reconnect_s.max", "s", "higher", "time to reconnect (slowest)"),
    Metric("reconnect.all_reconnected_s", "s", "higher", "fault → the last broken client back"),
    Metric("reconnect.attempts.mean", "count", "higher", "attempts a reconnect took (mean)"),
    Metric("reconnect.attempts.p50", "count", "higher", "attempts a reconnect took (p50)"),
    Metric("reconnect.attempts.p99", "count", "higher", "attempts a reconnect took (p99)"),
    Metric("reconnect.attempts.max", "count", "higher", "attempts a reconnect took (most)"),
    Metric(
        "reconnect.never_back", "count", "higher", "observed breaks never followed by a reconnect"
    ),
    Metric(
        "reconnect.initialize_per_s_peak",
        "per_s",
        "neither",
        "the storm's peak of new sessions per second",
    ),
    # latency
    *_latency(
        "tools_list_latency_ms", "every tools/list attempt, corrected for coordinated omission"
    ),
    *_latency("tools_list_ok_latency_ms", "successful tools/list replies alone, uncorrected"),
    # the write ledger
    Metric("writes.acknowledged", "count", "neither", "writes the server acknowledged"),
    Metric("writes.attempted", "count", "neither", "writes sent"),
    Metric("writes.intact", "count", "neither", "acknowledged writes read back with their content"),
    Metric("writes.altered", "count", "higher", "acknowledged writes read back with other content"),
    Metric("writes.lost", "count", "higher", "acknowledged writes missing on the final primary"),
    Metric(
        "writes.lost_unintended",
        "count",
        "higher",
        "lost writes no restore or injected fault meant to lose",
    ),
    Metric(
        "writes.lost_discarded_by_restore",
        "count",
        "neither",
        "lost writes a restore discarded by design",
    ),
    Metric(
        "writes.lost_deleted_by_fault",
        "count",
        "neither",
        "lost writes the injected fault said it deleted",
    ),
    Metric(
        "writes.lost_after_incident", "count", "higher", "lost writes sent at or after the incident"
    ),
    Metric(
        "writes.altered_after_incident",
        "count",
        "higher",
        "altered writes sent at or after the incident",
    ),
    Metric("writes.phantom", "count", "higher", "rows no client ever sent"),
    Metric(
        "writes.unacknowledged_present",
        "count",
        "neither",
        "writes never acknowledged yet committed",
    ),
    Metric("writes.duplicate", "count", "higher", "ids present more than once"),
    Metric("writes.rows_read", "count", "neither", "rows the final read-back returned"),
    Metric(
        "writes.rpo_rows",
        "count",
        "higher",
        "writes sent before the incident and lost or altered beyond a restore's window",
    ),
    Metric(
        "writes.rpo_s",
        "s",
        "higher",
        "age at the incident of the oldest write lost, or a restore's window",
    ),
    Metric(
        "writes.restore_boundary.violations",
        "count",
        "higher",
        "writes on the wrong side of a restore's target",
    ),
    Metric(
        "writes.restore_boundary.acked_before",
        "count",
        "neither",
        "writes acknowledged before the restore point: each must be present",
    ),
    Metric(
        "writes.restore_boundary.acked_before_missing",
        "count",
        "higher",
        "…of them missing after the restore",
    ),
    Metric(
        "writes.restore_boundary.started_after",
        "count",
        "neither",
        "writes first sent after the restore point (and not again after the restore began): each must be absent",
    ),
    Metric(
        "writes.restore_boundary.started_after_present",
        "count",
        "higher",
        "…of them present after the restore",
    ),
    Metric(
        "writes.restore_boundary.in_flight",
        "count",
        "neither",
        "writes in flight at the restore point: either is right",
    ),
    Metric(
        "writes.restore_boundary.after_restore",
        "count",
        "neither",
        "writes sent once the restore began: new history",
    ),
    # integrity
    Metric(
        "integrity.{moment}.violations",
        "count",
        "higher",
        "rows the checks flag (baseline: the last check before the fault; before: just before the damage was found; after: at the end)",
    ),
    Metric("integrity.{moment}.t_s", "s", "neither", "when that check ran"),
    Metric(
        "integrity.{moment}.checks.{check}.violations", "count", "higher", "rows one check flags"
    ),
    Metric("integrity.missed", "count", "higher", "damaged rows the checks did not flag"),
    Metric(
        "integrity.injected.{damage}",
        "count",
        "neither",
        "rows the injected fault says it damaged, by kind",
    ),
    Metric(
        "integrity.detected.{damage}",
        "count",
        "neither",
        "of those, rows the checks flagged, by kind",
    ),
    Metric(
        "integrity.ledger_agrees.altered_expected",
        "count",
        "neither",
        "acknowledged writes the fault altered",
    ),
    Metric(
        "integrity.ledger_agrees.altered_found",
        "count",
        "neither",
        "…that the ledger read back altered",
    ),
    Metric(
        "integrity.ledger_agrees.lost_expected",
        "count",
        "neither",
        "acknowledged writes the fault deleted",
    ),
    Metric("integrity.ledger_agrees.lost_found", "count", "neither", "…that the ledger found lost"),
    Metric("integrity.rounds", "count", "neither", "integrity check rounds run"),
    Metric(
        "integrity.rounds_unmeasured",
        "count",
        "higher",
        "rounds with a check that failed or timed out",
    ),
    Metric("integrity.interval_s", "s", "neither", "time between two rounds"),
    # restore
    Metric("restore.total_s", "s", "higher", "a point-in-time restore, first step to last"),
    Metric("restore.steps.{step}_s", "s", "higher", "one timed step of a restore"),
    Metric("restore.t_trigger_s", "s", "neither", "when the restore was triggered"),
    Metric("restore.started_s", "s", "neither", "when its first step began"),
    Metric("restore.target.t_s", "s", "neither", "the time it restored to"),
    # requests
    Metric("requests.total", "count", "neither", "requests the clients sent"),
    Metric("requests.errors", "count", "higher", "requests that failed"),
    Metric("requests.error_rate", "fraction", "higher", "failed requests over all requests"),
    Metric(
        "requests.errors_by_kind.{error_kind}",
        "count",
        "higher",
        "failed requests of one kind (connect_reset, http_404, tool_error, ...)",
    ),
    Metric(
        "requests.by_type.{request}.{percentile}",
        "ms",
        "higher",
        "one request type's latency (an MCP method, a tool, the GET stream; every attempt, "
        "uncorrected): a percentile",
    ),
    Metric("requests.by_type.{request}.count", "count", "neither", "requests of one type"),
    Metric("requests.by_type.{request}.failures", "count", "higher", "failed requests of one type"),
    Metric(
        "requests.by_type.{request}.failure_rate",
        "fraction",
        "higher",
        "failed requests of one type over all of that type",
    ),
    # the probes
    Metric("probes.write.samples", "count", "neither", "write probe writes"),
    Metric("probes.write.failed", "count", "higher", "write probe writes that failed"),
    Metric("probes.service.samples", "count", "neither", "service probe calls"),
    Metric("probes.service.failed", "count", "higher", "service probe calls that failed"),
    Metric(
        "probes.service.acknowledged_then_lost",
        "count",
        "higher",
        "service probe writes acknowledged, then not found intact",
    ),
    # the stack
    Metric(
        "database.connections_peak", "count", "neither", "client connections to the primary at most"
    ),
    Metric("database.max_connections", "count", "neither", "the primary's max_connections"),
    Metric(
        "database.replication_lag_bytes_max",
        "bytes",
        "higher",
        "replica's replay lag at most (bytes)",
    ),
    Metric(
        "database.replication_lag_s_max", "s", "higher", "replica's replay lag at most (seconds)"
    ),
    Metric(
        "database.pool_waiting_peak",
        "count",
        "higher",
        "server pool waiters at most (the reference server)",
    ),
    Metric("server.sessions_open_peak", "count", "neither", "MCP sessions open at most"),
    # the load generator
    Metric("generator.users_peak", "count", "neither", "simulated clients at most"),
    Metric("generator.requests_per_s_mean", "per_s", "neither", "requests per second, mean"),
    Metric("generator.cpu_cores_mean", "cores", "neither", "CPU the Locust processes used, mean"),
    Metric("generator.cpu_cores_max", "cores", "neither", "CPU the Locust processes used, most"),
    Metric(
        "generator.cpu_busiest_process_max",
        "cores",
        "higher",
        "the busiest Locust process's CPU, most",
    ),
    Metric(
        "generator.saturated_fraction", "fraction", "higher", "seconds the generator was saturated"
    ),
    Metric("generator.cores_available", "count", "neither", "cores the Locust processes may use"),
    Metric("generator.loop_lag_ms_mean", "ms", "higher", "Locust event loops late by, mean"),
    Metric(
        "generator.loop_lag_ms_worst_second",
        "ms",
        "higher",
        "Locust event loops late by, worst second",
    ),
    Metric(
        "generator.loop_lagging_fraction", "fraction", "higher", "seconds the Locust loops lagged"
    ),
    Metric("generator.by_phase.{phase}.seconds", "count", "neither", "seconds sampled in a phase"),
    # the harness itself
    Metric("harness.loop_lag_ms_mean", "ms", "higher", "the harness's event loop late by, mean"),
    Metric("harness.loop_lag_ms_worst_second", "ms", "higher", "…worst second"),
    Metric("harness.loop_stall_ms_max", "ms", "higher", "…longest single stall"),
    Metric(
        "harness.loop_lagging_fraction", "fraction", "higher", "seconds the harness's loop lagged"
    ),
)

BY_PATH: dict[str, Metric] = {path: m for m in CATALOG for path in m.paths()}
METRIC_PATHS: tuple[str, ...] = tuple(BY_PATH)
"""Every metric an objective may name (dotted paths into result.json's ``metrics``)."""


KEY_FIGURES: tuple[str, ...] = (
    "failover_s",
    "rto_s",
    "db_failover_s",
    "time_to_detect_s",
    "restore.total_s",
    "reconnect.clients_broken",
    "reconnect.success_rate",
    "reconnect.time_to_reconnect_s.p50",
    "reconnect.time_to_reconnect_s.p99",
    "reconnect.all_reconnected_s",
    "reconnect.attempts.p99",
    "reconnect.initialize_per_s_peak",
    "tools_list_latency_ms.fault_window.p99",
    "tools_list_latency_ms.fault_window.p50",
    "tools_list_latency_ms.storm.p99",
    "tools_list_latency_ms.recovered.p99",
    "tools_list_latency_ms.all.p99",
    "requests.error_rate",
    "writes.lost",
    "writes.lost_unintended",
    "writes.duplicate",
    "writes.rpo_rows",
    "server.sessions_open_peak",
    "generator.requests_per_s_mean",
    "generator.cpu_cores_mean",
)
"""The figures a comparison shows and metrics.prom exports (with every objective's)."""


def metric(path: str) -> Metric | None:
    """The entry of a figure's path (a pattern's entry for a name the run decides)."""
    found = BY_PATH.get(path)
    if found is None:
        found = next((m for m in CATALOG if m.matches(path)), None)
    return found


UNIT_SUFFIX: dict[Unit, str] = {
    "s": " s",
    "ms": " ms",
    "fraction": "",
    "count": "",
    "per_s": "/s",
    "bytes": " B",
    "cores": " cores",
}


def unit_suffix(path: str) -> str:
    """What follows a figure of ``path`` when it is printed (`` s``, `` ms``, ...)."""
    found = BY_PATH.get(path)
    return "" if found is None else UNIT_SUFFIX[found.unit]


def markdown_table() -> str:
    """The metric table of docs/measurements.md, from this catalog."""
    rows = ["| metric | unit | worse when | what it is |", "|---|---|---|---|"]
    for m in CATALOG:
        worse = {"higher": "higher", "lower": "lower", "neither": "—"}[m.worse]
        rows.append(f"| `{m.path}` | {m.unit} | {worse} | {m.description} |")
    return "\n".join(rows) + "\n"
