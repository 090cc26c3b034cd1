"""Phases of a run, exactly as docs/measurements.md defines them.

``ramp`` = [start, spawning complete); ``baseline`` = [spawning complete,
t_fault); ``disruption`` = [t_fault, first successful service write);
``storm`` = from there until the rate of new sessions stays under twice the
baseline rate for the stability window; ``recovered`` = the rest. Times are
seconds relative to the start of the load.

The ramp is its own phase because every new user opens a session and lists the
tools at once: on a small machine those bursts alone move the baseline's tail
latency by hundreds of milliseconds, which says nothing about the steady state
an objective on the baseline means. A fault that strikes before spawning
completed leaves no baseline, and baseline figures are then unmeasured.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MIN_STORM_THRESHOLD_PER_S = 1.0


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float

    def contains(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s


def baseline_session_rate(
    session_starts_s: Sequence[float], steady_from_s: float, t_fault_s: float
) -> float:
    """New sessions per second in the steady part of the baseline.

    Spawning opens one session per user, so the baseline rate is measured from
    the moment spawning completed (``steady_from_s``) to the fault; with no
    steady part the whole baseline is used.
    """
    start = steady_from_s if steady_from_s < t_fault_s else 0.0
    span = t_fault_s - start
    if span <= 0:
        return 0.0
    return sum(1 for t in session_starts_s if start <= t < t_fault_s) / span


def storm_end_s(
    session_starts_s: Iterable[float],
    storm_start_s: float,
    run_end_s: float,
    threshold_per_s: float,
    window_s: float,
) -> float | None:
    """First whole-second boundary from which every second of ``window_s`` has at most
    ``threshold_per_s`` new sessions; None if the run ends before that is seen."""
    per_second = Counter(math.floor(t) for t in session_starts_s if t >= storm_start_s)
    first = math.floor(storm_start_s)
    window = max(1, math.ceil(window_s))
    second = first
    while second + window <= run_end_s + 1e-9:
        if all(per_second.get(s, 0) <= threshold_per_s for s in range(second, second + window)):
            return max(float(second), storm_start_s)
        second += 1
    return None


def compute_phases(
    *,
    run_end_s: float,
    t_fault_s: float | None,
    first_service_write_s: float | None,
    session_starts_s: Sequence[float],
    steady_from_s: float,
    window_s: float,
    session_reopens_s: Sequence[float] | None = None,
) -> list[Phase]:
    """The phases that happened. Without a fault everything after the ramp is baseline; a
    phase whose end was never observed runs to the end of the run; an empty phase is left
    out.

    The storm's threshold comes from the baseline's rate of *re*-opened sessions
    (``session_reopens_s``: opens after a break; None: every open counts): a client's
    first session belongs to the ramp however late it opens, and against a slow server
    the ramp's sessions keep opening well into the baseline. Counted there, they raised
    the threshold above the herd's own rate and the storm vanished (seen in a real run:
    the storm objective went unmeasured and the herd's tail was judged as recovered)."""
    baseline_end = run_end_s if t_fault_s is None else t_fault_s
    ramp_end = min(max(steady_from_s, 0.0), baseline_end)
    phases = [Phase("ramp", 0.0, ramp_end), Phase("baseline", ramp_end, baseline_end)]
    if t_fault_s is not None:
        disruption_end = run_end_s if first_service_write_s is None else first_service_write_s
        phases.append(Phase("disruption", t_fault_s, disruption_end))
    if t_fault_s is not None and first_service_write_s is not None:
        reopens = session_starts_s if session_reopens_s is None else session_reopens_s
        rate = baseline_session_rate(reopens, steady_from_s, t_fault_s)
        threshold = max(2.0 * rate, MIN_STORM_THRESHOLD_PER_S)
        end = storm_end_s(session_starts_s, first_service_write_s, run_end_s, threshold, window_s)
        storm_end = run_end_s if end is None else end
        phases += [
            Phase("storm", first_service_write_s, storm_end),
            Phase("recovered", storm_end, run_end_s),
        ]
    return [phase for phase in phases if phase.end_s > phase.start_s]


def phase_of(phases: Sequence[Phase], t_s: float) -> str | None:
    for phase in phases:
        if phase.contains(t_s):
            return phase.name
    return None
