"""One row per second of the run: what a person reads first in a report."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from harness.measure.histogram import LatencyHistogram


def build_timeline(
    records: Iterable[dict[str, Any]],
    run_end_s: float,
    events: Sequence[tuple[float, str]] = (),
) -> list[dict[str, Any]]:
    """``records`` are the load's records with ``t_s`` relative to the start.

    Per second: requests/s, errors/s by kind, tools/list p50/p99 (ms), sessions
    open at the end of the second (users whose last session event was a
    successful initialize), and the events (faults, promotions) in it.
    """
    seconds = max(1, math.ceil(run_end_s))
    requests = [0] * seconds
    errors: list[dict[str, int]] = [defaultdict(int) for _ in range(seconds)]
    latency = [LatencyHistogram() for _ in range(seconds)]
    session_delta = [0] * seconds
    open_users: set[int] = set()
    for record in sorted(records, key=lambda r: r["t_s"]):
        second = int(record["t_s"])
        if not 0 <= second < seconds:
            continue
        kind = record["k"]
        user = int(record.get("u", -1))
        if kind == "req":
            requests[second] += 1
            if not record["ok"]:
                errors[second][record.get("err") or "unknown"] += 1
            if record["m"] == "tools/list" and record["ok"]:
                latency[second].record_ms(record["ms"])
            if record["m"] == "initialize" and record["ok"] and user not in open_users:
                open_users.add(user)
                session_delta[second] += 1
        elif kind == "broken" and user in open_users:
            open_users.discard(user)
            session_delta[second] -= 1
    by_second: dict[int, list[str]] = defaultdict(list)
    for t_s, label in events:
        by_second[min(max(int(t_s), 0), seconds - 1)].append(label)
    rows = []
    sessions = 0
    for second in range(seconds):
        sessions += session_delta[second]
        rows.append(
            {
                "t_s": second,
                "requests_per_s": requests[second],
                "errors_per_s": dict(errors[second]),
                "tools_list_p50_ms": latency[second].percentile_ms(50),
                "tools_list_p99_ms": latency[second].percentile_ms(99),
                "sessions_open": sessions,
                "events": by_second.get(second, []),
            }
        )
    return rows
