"""Failover and recovery times from probe samples (DESIGN.md, "Measurements").

Times are seconds relative to the start of the load, all from CLOCK_MONOTONIC.

A probe sample counts for "the first write after" an instant only if it was sent at or
after that instant (when its send time is known): a write in flight at the fault may
have committed before it, and its reply, arriving a few ms after t_fault, would make a
200 ms outage read as 5 ms (seen with ``bench/accuracy.py``). Skipping it costs at most
one probe beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.measure.histogram import LatencyHistogram

NOT_REACHED_KEY = "not_reached_within_s"
"""In ``metrics``: recovery times never reached, with how long after the fault the run kept
watching. A service still down 50 s after the fault missed a 10 s objective: that is a
measurement, not a missing one."""


@dataclass(frozen=True)
class WriteProbeSample:
    """One write of the database probe: when it was acknowledged (or failed), and by which node."""

    seq: int
    t_s: float
    ok: bool
    port: int | None = None
    error: str | None = None
    sent_s: float | None = None
    """When the attempt began (its connect or its insert); None where unknown."""


@dataclass(frozen=True)
class ServiceProbeSample:
    """One ``create_note`` call of the service probe through MCP."""

    t_s: float
    ok: bool
    error: str | None = None
    sent_s: float | None = None
    """When the call (or the handshake before it) was sent; None where unknown."""


def _sent_from(sample: WriteProbeSample | ServiceProbeSample, t_s: float) -> bool:
    """Acknowledged at or after ``t_s``, and not sent before it (where that is known)."""
    return sample.t_s >= t_s and (sample.sent_s is None or sample.sent_s >= t_s)


def first_write_on(
    samples: Sequence[WriteProbeSample], t_fault_s: float, port: int
) -> WriteProbeSample | None:
    """The first write sent after the fault and committed on the node listening on ``port``."""
    for sample in samples:
        if sample.ok and sample.port == port and _sent_from(sample, t_fault_s):
            return sample
    return None


def db_failover_s(
    samples: Sequence[WriteProbeSample], t_fault_s: float, promoted_port: int
) -> float | None:
    """t_fault -> first write committed on the new primary; None if none was seen."""
    first = first_write_on(samples, t_fault_s, promoted_port)
    return None if first is None else first.t_s - t_fault_s


def first_service_write_s(samples: Sequence[ServiceProbeSample], t_fault_s: float) -> float | None:
    """When the first service write sent after the fault succeeded."""
    for sample in samples:
        if sample.ok and _sent_from(sample, t_fault_s):
            return sample.t_s
    return None


def stable_from_s(
    samples: Sequence[ServiceProbeSample],
    t_from_s: float,
    window_s: float,
    run_end_s: float,
    latency: Sequence[tuple[float, float]] = (),
    p99_max_ms: float | None = None,
) -> float | None:
    """The first successful service write sent at or after ``t_from_s`` after which every service
    write succeeds for ``window_s`` (and, if ``p99_max_ms`` is given, tools/list p99 over that
    window stays under it). None when no such window fits before ``run_end_s``.
    """
    ordered = sorted(samples, key=lambda s: s.t_s)
    for index, candidate in enumerate(ordered):
        if not candidate.ok or not _sent_from(candidate, t_from_s):
            continue
        window_end = candidate.t_s + window_s
        if window_end > run_end_s:
            return None
        window = [s for s in ordered[index:] if s.t_s < window_end]
        if not all(s.ok for s in window):
            continue
        if p99_max_ms is not None:
            in_window = [ms for t, ms in latency if candidate.t_s <= t < window_end]
            p99 = LatencyHistogram.of(in_window).percentile_ms(99.0)
            if p99 is None or p99 > p99_max_ms:
                continue
        return candidate.t_s
    return None


def failover_s(
    samples: Sequence[ServiceProbeSample],
    t_fault_s: float,
    window_s: float,
    run_end_s: float,
    search_from_s: float | None = None,
) -> float | None:
    """t_fault -> first successful write tool call after which writes keep succeeding for the
    window. ``search_from_s``: not before then (after a restore: writes that succeeded
    while the data was being damaged do not count as a recovered service)."""
    start = max(t_fault_s, search_from_s) if search_from_s is not None else t_fault_s
    stable = stable_from_s(samples, start, window_s, run_end_s)
    return None if stable is None else stable - t_fault_s


def rto_s(
    samples: Sequence[ServiceProbeSample],
    t_incident_s: float,
    window_s: float,
    run_end_s: float,
    tools_list: Sequence[tuple[float, float]],
    p99_max_ms: float | None,
    search_from_s: float | None = None,
) -> float | None:
    """t_incident -> service objectives met again: writes succeed for the window and
    tools/list p99 over it is back under its objective (when one is set); not before
    ``search_from_s`` (the end of a restore)."""
    start = max(t_incident_s, search_from_s) if search_from_s is not None else t_incident_s
    stable = stable_from_s(samples, start, window_s, run_end_s, tools_list, p99_max_ms)
    return None if stable is None else stable - t_incident_s
