"""Reconnect figures: of the clients whose session broke after the fault, how many
listed tools again within the reconnect window, how long it took them, how many tries,
and how hard session setup was hit (the peak rate of initialize requests)."""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from harness.measure.histogram import LatencyHistogram


def _percentile(values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile of small integer samples (attempt counts)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def reconnect_metrics(
    records: Iterable[dict[str, Any]],
    t_fault_s: float | None,
    window_s: float,
    *,
    sessions: bool = True,
    run_end_s: float | None = None,
) -> dict[str, Any]:
    """``records`` are the load's records with ``t_s`` (relative seconds), in any order.

    A client counts once: its first break after the fault, and the first ``reconnected``
    after that break. Durations come from the worker (``duration_s``), never from
    instants across machines. Rates are None when no client broke (nothing to measure).
    A client still out when the run ended before its reconnect window closed was not
    observed long enough: it counts in ``clients_unobserved``, not against the rate.
    ``sessions`` is False in the sessionless revision: there is no initialize, and its
    figures are None.
    """
    ordered = sorted(records, key=lambda r: r["t_s"])
    broken_at: dict[int, float] = {}
    done: dict[int, tuple[float, int]] = {}
    initialize_per_s: Counter[int] = Counter()
    for record in ordered:
        kind = record["k"]
        if kind == "req" and record.get("m") == "initialize":
            initialize_per_s[int(record["t_s"])] += 1
        if t_fault_s is None:
            continue
        user = int(record.get("u", -1))
        if kind == "broken" and record["t_s"] >= t_fault_s and user not in broken_at:
            broken_at[user] = record["t_s"]
        elif kind == "reconnected" and user in broken_at and user not in done:
            done[user] = (float(record["duration_s"]), int(record["attempts"]))
    within = {u: d for u, d in done.items() if d[0] <= window_s}
    unobserved = {
        u
        for u, t in broken_at.items()
        if u not in within and run_end_s is not None and t + window_s > run_end_s
    }
    for user in unobserved:
        del broken_at[user]
    times = LatencyHistogram.of(d * 1000.0 for d, _ in within.values())
    attempts = [a for _, a in within.values()]
    broken = len(broken_at)
    return {
        "clients_broken": broken,
        "clients_reconnected": len(within),
        "clients_not_reconnected": broken - len(within),
        "clients_unobserved": len(unobserved),
        "success_rate": (len(within) / broken) if broken else None,
        "time_to_reconnect_s": {
            name: (None if value is None else value / 1000.0)
            for name, value in (
                ("p50", times.percentile_ms(50)),
                ("p95", times.percentile_ms(95)),
                ("p99", times.percentile_ms(99)),
                ("max", times.summary()["max"]),
            )
        },
        "all_reconnected_s": max((d for d, _ in within.values()), default=None)
        if broken and len(within) == broken
        else None,
        "attempts": {
            "mean": (sum(attempts) / len(attempts)) if attempts else None,
            "p50": _percentile(attempts, 0.50),
            "p99": _percentile(attempts, 0.99),
            "max": max(attempts) if attempts else None,
        },
        "initialize_per_s_peak": (max(initialize_per_s.values(), default=0) if sessions else None),
        "histogram": reconnect_histogram([d for d, _ in within.values()]),
    }


RECONNECT_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)


def reconnect_histogram(durations_s: list[float]) -> list[list[float | int]] | None:
    """Clients per time-to-reconnect bucket: ``[upper bound s, count]``, the last bucket
    open-ended (``inf`` bound written as the largest duration); None when none came back."""
    if not durations_s:
        return None
    counts = [0] * (len(RECONNECT_BUCKETS_S) + 1)
    for duration in durations_s:
        counts[bisect.bisect_left(RECONNECT_BUCKETS_S, duration)] += 1
    bounds = [*RECONNECT_BUCKETS_S, max(durations_s)]
    return [[bound, count] for bound, count in zip(bounds, counts, strict=True) if count]
