"""Reconnect figures: of the sessions that broke from the fault on, how many worked again
within the reconnect window, how long it took, how many tries, and how hard session setup
was hit (the peak rate of initialize requests).

The unit is the *episode*: one break and its outcome. Judging only the clients that came
back (or only a client's first break, or only the cohort whose fast members returned before
the run ended) makes a bad recovery look good, so every episode counts, and an episode
whose window the run did not watch to its end is left out of the rate whatever its outcome.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict


class AttemptFigures(TypedDict):
    mean: float | None
    p50: int | None
    p99: int | None
    max: int | None


class ReconnectFigures(TypedDict):
    """``metrics.reconnect`` (``reconnect_metrics`` defines each figure)."""

    clients_broken: int
    clients_reconnected: int
    clients_not_reconnected: int
    clients_unobserved: int
    episodes: int
    episodes_reconnected: int
    episodes_not_reconnected: int
    episodes_unobserved: int
    success_rate: float | None
    success_rate_bounds: list[float] | None
    time_to_reconnect_s: dict[str, float | None]
    over_window_s: dict[str, float]
    all_reconnected_s: float | None
    attempts: AttemptFigures
    initialize_per_s_peak: int | None
    histogram: list[list[float | int]] | None
    never_back: int


TIME_PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
"""Time-to-reconnect figures and their nearest-rank fractions (``max`` is rank n)."""


@dataclass(frozen=True)
class Episode:
    """One broken session: the client, when it broke, and the worker-measured duration and
    attempts of its reconnect (None when no reconnect followed)."""

    user: int
    broken_s: float
    duration_s: float | None
    attempts: int | None

    def succeeded_within(self, window_s: float) -> bool:
        return self.duration_s is not None and self.duration_s <= window_s


def episodes_of(records: Iterable[dict[str, Any]]) -> list[Episode]:
    """Every ``broken`` record paired with the same client's next ``reconnected`` record.

    Records are taken in time order per client (ties keep their input order, which is the
    order a worker wrote them). A worker emits ``broken`` then ``reconnected`` and never two
    breaks in a row, since its reconnect loop never gives up; should a second break come
    first anyway, the earlier one keeps no reconnect: the worker's ``duration_s`` counts from
    its latest break. A ``reconnected`` with no open break is ignored.
    """
    by_user: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("k") in ("broken", "reconnected"):
            by_user[int(record.get("u", -1))].append(record)
    episodes: list[Episode] = []
    for user, history in by_user.items():
        open_break_s: float | None = None
        for record in sorted(history, key=lambda r: float(r["t_s"])):
            if record["k"] == "broken":
                if open_break_s is not None:
                    episodes.append(Episode(user, open_break_s, None, None))
                open_break_s = float(record["t_s"])
            elif open_break_s is not None:
                duration_s = float(record["duration_s"])
                attempts = int(record["attempts"])
                episodes.append(Episode(user, open_break_s, duration_s, attempts))
                open_break_s = None
        if open_break_s is not None:
            episodes.append(Episode(user, open_break_s, None, None))
    return episodes


def nearest_rank(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an already sorted list: an actual sample, no interpolation
    (exact for the few thousand episodes of a run); None when empty."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _attempt_percentile(values: list[int], fraction: float) -> int | None:
    found = nearest_rank(sorted(values), fraction)
    return None if found is None else int(found)


def reconnect_metrics(
    records: Iterable[dict[str, Any]],
    t_fault_started_s: float | None,
    window_s: float,
    *,
    sessions: bool = True,
    run_end_s: float | None = None,
) -> ReconnectFigures:
    """Reconnect figures of the load's ``records`` (``t_s`` relative seconds, any order).

    ``t_fault_started_s`` is when the injector *started* the earliest fault: sessions break
    from then on, before the fault is confirmed, and those breaks belong to it. Each
    ``broken`` at or after it is an episode (every break of a client, not only its first).
    Durations come from the worker (``duration_s``), never from instants across machines.

    An episode is *judged* only if the run watched its whole window
    (``t_break + window_s <= run_end_s``; every episode when ``run_end_s`` is None). One the
    run cut short is ``unobserved`` whether or not it came back: counting the fast returners
    of a cohort and not its slow members would bias the rate upward. A judged episode
    *succeeded* when its reconnect took at most ``window_s``; late or never, it failed.

    - ``success_rate``: succeeded / judged episodes; None when none was judged.
    - ``success_rate_bounds``: ``[lo, hi]``, spanning ``success_rate`` and every success
      rate over all episodes (judged and unobserved) the run could have found had it
      watched them all: the unobserved count as failed (``lo``) or succeeded (``hi``),
      except those whose outcome is already seen (back within the window: succeeded; back
      later: failed). None without episodes. A verdict that holds at both ends cannot be
      changed by what the run did not see (``harness.objectives.judge``).
    - ``time_to_reconnect_s`` (p50/p95/p99/max): nearest rank over the judged episodes, a
      failed one ranking last as "over the window". A figure that lands on one is None and
      is named in ``over_window_s`` (``{"time_to_reconnect_s.p99": window_s}``: missed, at
      least ``window_s``), so a tail of clients that never came back cannot hide.
    - ``clients_*``: per client. ``clients_broken`` had a judged episode; of those,
      ``clients_reconnected`` succeeded in all, ``clients_not_reconnected`` failed one.
      ``clients_unobserved`` had episodes, none judged.
    - ``episodes`` (judged), ``episodes_reconnected``, ``episodes_not_reconnected``,
      ``episodes_unobserved``.
    - ``all_reconnected_s``: the longest reconnect when every judged episode succeeded.
    - ``attempts`` (mean/p50/p99/max): over the successful judged episodes.
    - ``initialize_per_s_peak``: the busiest second of initialize requests over the whole
      load; None when ``sessions`` is False (the sessionless revision has no initialize).
    - ``histogram``: successful judged episodes per time bucket (``reconnect_histogram``);
      ``never_back``: the failed judged episodes (late or never), which it leaves out.
    """
    records = list(records)
    initialize_per_s: Counter[int] = Counter(
        int(r["t_s"]) for r in records if r.get("k") == "req" and r.get("m") == "initialize"
    )
    episodes = (
        []
        if t_fault_started_s is None
        else [e for e in episodes_of(records) if e.broken_s >= t_fault_started_s]
    )

    def watched_to_the_end(episode: Episode) -> bool:
        return run_end_s is None or episode.broken_s + window_s <= run_end_s

    judged = [e for e in episodes if watched_to_the_end(e)]
    unobserved = [e for e in episodes if not watched_to_the_end(e)]
    succeeded = [e for e in judged if e.succeeded_within(window_s)]
    failed = [e for e in judged if not e.succeeded_within(window_s)]

    users_with_judged = {e.user for e in judged}
    users_failed = {e.user for e in failed}
    users_unobserved = {e.user for e in unobserved} - users_with_judged

    durations_s = [e.duration_s for e in succeeded if e.duration_s is not None]
    ranked_s = sorted(durations_s) + [math.inf] * len(failed)
    time_to_reconnect_s: dict[str, float | None] = {}
    over_window_s: dict[str, float] = {}
    for name, fraction in TIME_PERCENTILES:
        value = nearest_rank(ranked_s, fraction)
        if value is not None and math.isinf(value):
            over_window_s[f"time_to_reconnect_s.{name}"] = window_s
            value = None
        time_to_reconnect_s[name] = value

    attempts = [e.attempts for e in succeeded if e.attempts is not None]
    success_rate = (len(succeeded) / len(judged)) if judged else None
    return {
        "clients_broken": len(users_with_judged),
        "clients_reconnected": len(users_with_judged - users_failed),
        "clients_not_reconnected": len(users_failed),
        "clients_unobserved": len(users_unobserved),
        "episodes": len(judged),
        "episodes_reconnected": len(succeeded),
        "episodes_not_reconnected": len(failed),
        "episodes_unobserved": len(unobserved),
        "success_rate": success_rate,
        "success_rate_bounds": _success_rate_bounds(
            success_rate, succeeded, unobserved, len(episodes), window_s
        ),
        "time_to_reconnect_s": time_to_reconnect_s,
        "over_window_s": over_window_s,
        "all_reconnected_s": max(durations_s) if judged and not failed else None,
        "attempts": {
            "mean": (sum(attempts) / len(attempts)) if attempts else None,
            "p50": _attempt_percentile(attempts, 0.50),
            "p99": _attempt_percentile(attempts, 0.99),
            "max": max(attempts) if attempts else None,
        },
        "initialize_per_s_peak": (max(initialize_per_s.values(), default=0) if sessions else None),
        "histogram": reconnect_histogram(durations_s),
        "never_back": len(failed),
    }


def _success_rate_bounds(
    success_rate: float | None,
    succeeded: list[Episode],
    unobserved: list[Episode],
    episodes: int,
    window_s: float,
) -> list[float] | None:
    """The lowest and highest success rate over all episodes, each unobserved one's unknown
    outcome taken as failed or succeeded (an outcome already seen is not unknown), widened
    to hold the judged ``success_rate``: the unobserved may have fared better or worse than
    the judged, and either way the verdict on the rate could turn."""
    if not episodes:
        return None
    back_in_time = sum(1 for e in unobserved if e.succeeded_within(window_s))
    back_too_late = sum(
        1 for e in unobserved if e.duration_s is not None and e.duration_s > window_s
    )
    lo = (len(succeeded) + back_in_time) / episodes
    hi = (len(succeeded) + len(unobserved) - back_too_late) / episodes
    if success_rate is not None:
        lo, hi = min(lo, success_rate), max(hi, success_rate)
    return [lo, hi]


RECONNECT_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)


def reconnect_histogram(durations_s: list[float]) -> list[list[float | int]] | None:
    """Reconnects per time-to-reconnect bucket: ``[upper bound s, count]``, the last bucket
    open-ended (``inf`` bound written as the largest duration); None when none came back."""
    if not durations_s:
        return None
    counts = [0] * (len(RECONNECT_BUCKETS_S) + 1)
    for duration in durations_s:
        counts[bisect.bisect_left(RECONNECT_BUCKETS_S, duration)] += 1
    bounds = [*RECONNECT_BUCKETS_S, max(durations_s)]
    return [[bound, count] for bound, count in zip(bounds, counts, strict=True) if count]
