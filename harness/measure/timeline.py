"""One row per second of the run: what a person reads first in a report."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from harness.measure.histogram import LatencyHistogram


def connection_opens(records: Iterable[dict[str, Any]]) -> list[tuple[float, int, int]]:
    """(t_s, user, +1 | -1) each time a client's session opens or breaks, in time order.

    A session opens at a client's first successful request after its start or its last
    break: the initialize in 2025-11-25, the first good request in the sessionless
    2026-07-28 (where a "session" is a working connection). It closes at a break.
    """
    open_users: set[int] = set()
    changes = []
    for record in sorted(records, key=lambda r: r["t_s"]):
        user = int(record.get("u", -1))
        if record["k"] == "req" and record["ok"] and user not in open_users:
            open_users.add(user)
            changes.append((record["t_s"], user, 1))
        elif record["k"] == "broken" and user in open_users:
            open_users.discard(user)
            changes.append((record["t_s"], user, -1))
    return changes


def reopened_s(changes: Iterable[tuple[float, int, int]]) -> list[float]:
    """When sessions opened again after a break (``connection_opens``): every open but each
    client's first."""
    seen: set[int] = set()
    times = []
    for t_s, user, change in changes:
        if change > 0:
            if user in seen:
                times.append(t_s)
            seen.add(user)
    return times


def build_timeline(
    records: Iterable[dict[str, Any]],
    run_end_s: float,
    events: Sequence[tuple[float, str]] = (),
    resources: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """``records`` are the load's records with ``t_s`` relative to the start; ``resources``
    are the once-a-second samples of the database, the server and the generator, merged
    into the row of their second (their keys as sampled).

    Per second: requests/s, errors/s by kind, tools/list p50/p99 (ms), successful
    initializes (new sessions), sessions open at the end of the second (users whose last
    session event was a successful initialize), and the events (faults, promotions) in it.
    """
    seconds = max(1, math.ceil(run_end_s))
    requests = [0] * seconds
    initializes = [0] * seconds
    errors: list[dict[str, int]] = [defaultdict(int) for _ in range(seconds)]
    latency = [LatencyHistogram() for _ in range(seconds)]
    session_delta = [0] * seconds
    records = list(records)
    for record in records:
        second = int(record["t_s"])
        if record["k"] != "req" or not 0 <= second < seconds:
            continue
        requests[second] += 1
        if not record["ok"]:
            errors[second][record.get("err") or "unknown"] += 1
        if record["m"] == "tools/list" and record["ok"]:
            latency[second].record_ms(record["ms"])
        elif record["m"] == "initialize" and record["ok"]:
            initializes[second] += 1
    for t_s, _, change in connection_opens(records):
        if 0 <= int(t_s) < seconds:
            session_delta[int(t_s)] += change
    by_second: dict[int, list[str]] = defaultdict(list)
    for t_s, label in events:
        by_second[min(max(int(t_s), 0), seconds - 1)].append(label)
    sampled: dict[int, dict[str, Any]] = {}
    for sample in resources:
        second = int(sample["t_s"])
        if 0 <= second < seconds:
            sampled[second] = {k: v for k, v in sample.items() if k != "t_s"}
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
                "initialize_per_s": initializes[second],
                "events": by_second.get(second, []),
                **sampled.get(second, {}),
            }
        )
    return rows
