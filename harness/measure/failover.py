"""Failover and recovery times from probe samples (docs/measurements.md).

Times are seconds relative to the start of the load, all from CLOCK_MONOTONIC.

A probe sample counts for "the first write after" an instant only if it was sent at or
after that instant (when its send time is known): a write in flight at the fault may
have committed before it, and its reply, arriving a few ms after t_fault, would make a
200 ms outage read as 5 ms (seen with ``bench/accuracy.py``). Skipping it costs at most
one probe beat.

A stability window is taken as evidence of a working service only when it holds
evidence (``stable_from_s``): successes that are ok, enough of them, spread over the whole
window, and (once the final ledger check is done, ``verified_samples``) still intact. A
window holding one success and then a call that hung until the probe timeout holds no
evidence for anything after that success: counted, it read as a 2 s failover for a
service dead for the whole window.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Final

from harness.measure.histogram import LatencyHistogram

NOT_REACHED_KEY: Final = "not_reached_within_s"
"""In ``metrics``: recovery times never reached, with how long after the fault the run kept
watching. A service still down 50 s after the fault missed a 10 s objective: that is a
measurement, not a missing one."""

MIN_WINDOW_SAMPLES = 3
"""Successful service probe writes a stability window must hold, its first included: one
success (or two) followed by silence is not a service seen to stay up."""
LOST_ERROR = "lost"
"""The error of an acknowledged probe write the final ledger check did not find intact."""
DEFAULT_PROBE_INTERVAL_S = 0.1
"""The service probe's interval when a caller does not say (``probes.service_interval``'s
default); callers should pass the run's own."""
DEFAULT_PROBE_TIMEOUT_S = 5.0
"""The service probe's timeout when a caller does not say (``probes.service_timeout``'s
default); callers should pass the run's own."""


@dataclass(frozen=True)
class ProbeCadence:
    """How often the service probe calls (``interval_s`` after each answer) and how long
    one call may take (``timeout_s``): together, the longest a probe that keeps
    succeeding can stay silent."""

    interval_s: float = DEFAULT_PROBE_INTERVAL_S
    timeout_s: float = DEFAULT_PROBE_TIMEOUT_S

    @property
    def longest_silence_s(self) -> float:
        return self.interval_s + self.timeout_s


DEFAULT_CADENCE = ProbeCadence()
_EPSILON_S = 1e-9
"""Slack for float sums in the gap rule: a gap of exactly interval + timeout is allowed."""


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
    write_id: str | None = None
    """The id of the note the call wrote (checked against the final ledger by
    ``verified_samples``); None where unknown or when no write was sent."""


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


def observable_until_s(run_end_s: float, window_s: float) -> float:
    """The latest start of a stability window the run could confirm: a window starting later
    would end after the run. A recovery that began inside the last ``window_s`` of the run
    was not seen to last, which is not the same as not having happened: "not reached
    within N s" must use N = ``observable_until_s - t_fault``, not ``run_end_s - t_fault``."""
    return run_end_s - window_s


def verified_samples(
    samples: Sequence[ServiceProbeSample], intact_ids: frozenset[str] | None
) -> list[ServiceProbeSample]:
    """The samples with every acknowledged probe write the final ledger check did not find
    intact turned into a failure (error ``"lost"``): a write the service acknowledged and
    then lost (a failover onto a replica that never got it, a restore) was not a working
    service, and a stability window resting on it is no recovery. ``intact_ids=None``
    means the writes were not checked: the samples are returned as they are. Samples
    without a ``write_id`` (older records, failed handshakes) cannot be checked and stay."""
    if intact_ids is None:
        return list(samples)
    return [
        replace(s, ok=False, error=LOST_ERROR)
        if s.ok and s.write_id is not None and s.write_id not in intact_ids
        else s
        for s in samples
    ]


def lost_acks_after(
    samples: Sequence[ServiceProbeSample], intact_ids: frozenset[str] | None, t_from_s: float
) -> int:
    """How many probe writes sent at or after ``t_from_s`` were acknowledged and then not
    found intact by the final ledger check (0 when not checked). When ``failover_s`` is
    not reached on ``verified_samples`` but this is not 0, the service answered but lost
    what it acknowledged: say so instead of "still down"."""
    if intact_ids is None:
        return 0
    return sum(
        1
        for s in samples
        if s.ok
        and s.write_id is not None
        and s.write_id not in intact_ids
        and _sent_from(s, t_from_s)
    )


def window_rejection(
    samples: Sequence[ServiceProbeSample],
    start_s: float,
    window_s: float,
    *,
    cadence: ProbeCadence = DEFAULT_CADENCE,
) -> str | None:
    """Why the window [``start_s``, ``start_s + window_s``) is not evidence of a working
    service, or None when it is (the evidence rules of ``stable_from_s``; the latency
    objective is not judged here)."""
    ordered = sorted(samples, key=lambda s: s.t_s)
    return _Evidence(ordered, cadence.longest_silence_s).rejection(start_s, window_s)


class _Evidence:
    """The samples ordered by ack time, with what the evidence rules look up."""

    def __init__(self, ordered: Sequence[ServiceProbeSample], max_gap_s: float) -> None:
        self.ordered = ordered
        self.acks = [s.t_s for s in ordered]
        self.failed_sends = sorted(s.sent_s for s in ordered if not s.ok and s.sent_s is not None)
        self.max_gap_s = max_gap_s

    def rejection(self, start_s: float, window_s: float) -> str | None:
        end_s = start_s + window_s
        window = self.ordered[bisect_left(self.acks, start_s) : bisect_left(self.acks, end_s)]
        if not all(s.ok for s in window):
            return "failed"
        sent_in = bisect_left(self.failed_sends, start_s)
        if sent_in < len(self.failed_sends) and self.failed_sends[sent_in] < end_s:
            return "failed"
        if len(window) < MIN_WINDOW_SAMPLES:
            return "too_few"
        ends = [start_s, *(s.t_s for s in window), end_s]
        if any(b - a > self.max_gap_s + _EPSILON_S for a, b in pairwise(ends)):
            return "gap"
        return None


def stable_from_s(
    samples: Sequence[ServiceProbeSample],
    t_from_s: float,
    window_s: float,
    run_end_s: float,
    latency: Sequence[tuple[float, float]] = (),
    p99_max_ms: float | None = None,
    *,
    cadence: ProbeCadence = DEFAULT_CADENCE,
) -> float | None:
    """The ack time c of the first successful service write sent at or after ``t_from_s``
    whose window [c, c + ``window_s``) is evidence of a working service (and, if
    ``p99_max_ms`` is given, tools/list p99 over that window stays under it). None when
    no such window fits before ``run_end_s`` (c after ``observable_until_s``).

    The evidence rules, each because a window without them was taken for a recovery:

    - every sample acknowledged in the window is ok, and no failed sample was sent in it
      (a call sent inside the window that failed after it, e.g. hung until the timeout,
      was a write of the window that did not succeed);
    - it holds at least ``MIN_WINDOW_SAMPLES`` successes: silence is not success;
    - the successes are spread: between consecutive successes' ack times, counting c and
      c + ``window_s`` as the two ends, no gap is longer than
      ``cadence.longest_silence_s`` (the probe's interval + timeout), the longest a probe that keeps succeeding can stay silent (the
      next call is sent at most an interval after an answer and answered within the
      timeout). A longer silence is a probe stuck on a service that did not answer.

    Pass ``verified_samples`` to count only writes the final ledger found intact.
    """
    ordered = sorted(samples, key=lambda s: s.t_s)
    evidence = _Evidence(ordered, cadence.longest_silence_s)
    for candidate in ordered:
        if not candidate.ok or not _sent_from(candidate, t_from_s):
            continue
        window_end = candidate.t_s + window_s
        if window_end > run_end_s:  # candidate.t_s after observable_until_s(...)
            return None
        if evidence.rejection(candidate.t_s, window_s) is not None:
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
    *,
    cadence: ProbeCadence = DEFAULT_CADENCE,
) -> float | None:
    """t_fault -> first successful write tool call after which writes keep succeeding for the
    window, with the evidence ``stable_from_s`` requires. ``search_from_s``: not before then
    (after a restore: writes that succeeded while the data was being damaged do not count
    as a recovered service)."""
    start = max(t_fault_s, search_from_s) if search_from_s is not None else t_fault_s
    stable = stable_from_s(
        samples,
        start,
        window_s,
        run_end_s,
        cadence=cadence,
    )
    return None if stable is None else stable - t_fault_s


def rto_s(
    samples: Sequence[ServiceProbeSample],
    t_incident_s: float,
    window_s: float,
    run_end_s: float,
    tools_list: Sequence[tuple[float, float]],
    p99_max_ms: float | None,
    search_from_s: float | None = None,
    *,
    cadence: ProbeCadence = DEFAULT_CADENCE,
) -> float | None:
    """t_incident -> service objectives met again: writes succeed for the window (with the
    evidence ``stable_from_s`` requires) and tools/list p99 over it is back under its
    objective (when one is set); not before ``search_from_s`` (the end of a restore)."""
    start = max(t_incident_s, search_from_s) if search_from_s is not None else t_incident_s
    stable = stable_from_s(
        samples,
        start,
        window_s,
        run_end_s,
        tools_list,
        p99_max_ms,
        cadence=cadence,
    )
    return None if stable is None else stable - t_incident_s
