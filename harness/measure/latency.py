"""tools/list latency per phase, from every attempt the clients made.

Two figures, named so that nobody mistakes one for the other:

- ``tools_list_latency_ms``: every attempt at its duration, failures and time-outs
  included (a time-out is the slowest reply there is, not a missing one), corrected
  for coordinated omission. Simulated clients are a closed loop: one stuck for 10 s on
  a reply sends nothing else meanwhile, so the worst seconds of a fault are the least
  sampled. HdrHistogram's expected-interval correction adds the replies such a client
  would have waited for had it kept its pace (its mean think time, divided by the
  share of tools/list in its mix). We correct the measurement rather than switch the
  load to an open model: the load keeps the shape Locust users know and size, and the
  success-only figure below is kept uncorrected for comparison.
- ``tools_list_ok_latency_ms``: successful replies only, uncorrected (what the
  harness reported before; it leaves out exactly the requests that hurt).

And ``requests.by_type``: every request type's count, failures and latency (every
attempt, uncorrected), the table Locust's own report has.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from harness.catalog import PHASES
from harness.measure.histogram import LatencyHistogram, LatencySummary
from harness.measure.phases import Phase, phase_of


@dataclass(frozen=True)
class RequestAttempt:
    """One request a client made: when its reply (or failure) came, how long it took."""

    t_s: float
    ms: float
    ok: bool

    @property
    def sent_s(self) -> float:
        """When it was sent: a request belongs to the phase it entered. A tools/list sent
        during the storm and answered (404, after queueing behind the herd) seconds later
        measures the storm, not the recovery."""
        return self.t_s - self.ms / 1000.0


def expected_interval_ms(
    think_time_s: tuple[float, float], tool_mix: Mapping[str, float], op: str = "tools/list"
) -> float | None:
    """How often one client sends ``op`` at its intended pace; None when it never does."""
    total = sum(tool_mix.values())
    share = tool_mix.get(op, 0.0) / total if total > 0 else 0.0
    if share <= 0:
        return None
    mean_think_s = (think_time_s[0] + think_time_s[1]) / 2
    return max(mean_think_s, 0.001) / share * 1000.0


def latency_per_phase(
    phases: Sequence[Phase],
    attempts: Iterable[RequestAttempt],
    t_fault_s: float | None,
    fault_window_s: float,
    *,
    expected_interval_ms: float | None = None,
    successes_only: bool = False,
) -> dict[str, LatencySummary]:
    """Summaries per phase (by when each request was sent), for the whole run (``all``) and
    for ``fault_window`` =
    [t_fault, t_fault + the reconnect window): the same span in every run of a scenario, so
    runs compare fairly even when their phases (which follow what happened) differ.

    With ``expected_interval_ms`` every attempt is recorded with the coordinated-omission
    correction; ``successes_only`` keeps the successful replies alone."""
    per_phase = {name: LatencyHistogram() for name in PHASES}
    everything, after_fault = LatencyHistogram(), LatencyHistogram()
    for attempt in attempts:
        if successes_only and not attempt.ok:
            continue
        sent = attempt.sent_s
        histograms = [everything, per_phase.get(phase_of(phases, sent) or "", None)]
        if t_fault_s is not None and t_fault_s <= sent < t_fault_s + fault_window_s:
            histograms.append(after_fault)
        for histogram in histograms:
            if histogram is None:
                continue
            if expected_interval_ms is None:
                histogram.record_ms(attempt.ms)
            else:
                histogram.record_corrected_ms(attempt.ms, expected_interval_ms)
    latency = {name: h.summary() for name, h in per_phase.items()}
    latency["all"] = everything.summary()
    latency["fault_window"] = after_fault.summary()
    return latency


class RequestTypeFigures(LatencySummary):
    """One request type in ``requests.by_type``: the latency summary plus its failures."""

    failures: int
    failure_rate: float | None


def request_type_key(method: str) -> str:
    """A request type as a path segment of result.json (a dot would split the path)."""
    return method.replace(".", "_") or "unknown"


def by_request_type(requests: Iterable[tuple[str, float, bool]]) -> dict[str, RequestTypeFigures]:
    """Per request type (``tools/list``, ``initialize``, a tool's name, the GET stream),
    from (type, ms, ok) of every request: how many, how many failed, and the latency of
    every attempt, failures included, uncorrected (Locust's table, through the same HDR
    histogram as the rest)."""
    histograms: dict[str, LatencyHistogram] = defaultdict(LatencyHistogram)
    failures: dict[str, int] = defaultdict(int)
    for method, ms, ok in requests:
        key = request_type_key(method)
        histograms[key].record_ms(ms)
        failures[key] += 0 if ok else 1
    figures: dict[str, RequestTypeFigures] = {}
    for key in sorted(histograms):
        summary = histograms[key].summary()
        count = summary["count"]
        figures[key] = {
            **summary,
            "failures": failures[key],
            "failure_rate": failures[key] / count if count else None,
        }
    return figures
