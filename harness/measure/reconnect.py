"""Reconnect figures: of the clients whose session broke after the fault, how many
listed tools again within the reconnect window, and how long it took them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.measure.histogram import LatencyHistogram


def reconnect_metrics(
    records: Iterable[dict[str, Any]], t_fault_s: float | None, window_s: float
) -> dict[str, Any]:
    """``records`` carry ``t_s`` (relative seconds) and the load's ``broken`` / ``reconnected``
    fields. Durations come from the worker (``duration_s``), never from instants across
    machines. Rates are None when no client broke (nothing to measure)."""
    broken_at: dict[int, float] = {}
    done: dict[int, tuple[float, int]] = {}
    for record in records:
        if t_fault_s is None:
            break
        user = record["u"]
        if record["k"] == "broken" and record["t_s"] >= t_fault_s and user not in broken_at:
            broken_at[user] = record["t_s"]
        elif record["k"] == "reconnected" and user in broken_at and user not in done:
            done[user] = (float(record["duration_s"]), int(record["attempts"]))
    within = {u: d for u, d in done.items() if d[0] <= window_s}
    times = LatencyHistogram.of(d * 1000.0 for d, _ in within.values())
    attempts = [a for _, a in within.values()]
    broken = len(broken_at)
    return {
        "clients_broken": broken,
        "clients_reconnected": len(within),
        "clients_not_reconnected": broken - len(within),
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
        "attempts": {
            "mean": (sum(attempts) / len(attempts)) if attempts else None,
            "max": max(attempts) if attempts else None,
        },
    }
