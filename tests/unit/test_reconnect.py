"""Reconnect figures (``harness.measure.reconnect``): every broken session counts, and
neither the clients that never came back nor a run that ended too early can make a
recovery look better than it was."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.measure.reconnect import RECONNECT_BUCKETS_S, reconnect_histogram, reconnect_metrics


def broken(t_s: float, user: int) -> dict[str, Any]:
    return {"k": "broken", "t_s": t_s, "u": user, "reason": "connect_refused"}


def reconnected(t_s: float, user: int, duration_s: float, attempts: int = 1) -> dict[str, Any]:
    return {
        "k": "reconnected",
        "t_s": t_s,
        "u": user,
        "duration_s": duration_s,
        "attempts": attempts,
    }


def cohort(
    t_break_s: float, clients: int, back: int, duration_s: float = 2.0
) -> list[dict[str, Any]]:
    """``clients`` break at ``t_break_s``; the first ``back`` return after ``duration_s``."""
    records = [broken(t_break_s, user) for user in range(clients)]
    records += [reconnected(t_break_s + duration_s, user, duration_s) for user in range(back)]
    return records


def test_a_cohort_cut_off_by_the_end_of_the_run_is_unobserved_fast_returners_too() -> None:
    """100 break 10 s before the end with a 60 s window; 90 are back in 2 s, 10 never:
    the run saw none of their windows through, so no rate, and the bounds say 0.9 to 1.0."""
    figures = reconnect_metrics(cohort(65.0, 100, 90), 60.0, 60.0, run_end_s=75.0)
    assert figures["success_rate"] is None
    assert figures["episodes"] == 0 and figures["episodes_unobserved"] == 100
    assert figures["clients_unobserved"] == 100 and figures["clients_broken"] == 0
    assert figures["success_rate_bounds"] == [0.9, 1.0]
    assert figures["time_to_reconnect_s"] == {"p50": None, "p95": None, "p99": None, "max": None}
    assert figures["over_window_s"] == {}


def test_clients_that_never_came_back_keep_the_tail_percentiles_over_the_window() -> None:
    """100 break early (windows fully watched), 90 are back in 2 s, 10 never."""
    figures = reconnect_metrics(cohort(10.0, 100, 90), 9.0, 60.0, run_end_s=200.0)
    assert figures["success_rate"] == pytest.approx(0.9)
    assert figures["time_to_reconnect_s"]["p50"] == pytest.approx(2.0, abs=0.01)
    assert figures["time_to_reconnect_s"]["p95"] is None
    assert figures["time_to_reconnect_s"]["p99"] is None
    assert figures["time_to_reconnect_s"]["max"] is None
    assert figures["success_rate_bounds"] == [pytest.approx(0.9), pytest.approx(0.9)]
    assert figures["over_window_s"] == {
        "time_to_reconnect_s.p95": 60.0,
        "time_to_reconnect_s.p99": 60.0,
        "time_to_reconnect_s.max": 60.0,
    }
    assert figures["clients_broken"] == 100
    assert figures["clients_reconnected"] == 90 and figures["clients_not_reconnected"] == 10
    assert figures["episodes_not_reconnected"] == 10 and figures["never_back"] == 10
    assert figures["all_reconnected_s"] is None


def test_every_break_counts_not_only_a_clients_first() -> None:
    """Back after the first fault, never after the second: one of two episodes failed."""
    records = [broken(10.0, 1), reconnected(11.0, 1, 1.0), broken(30.0, 1)]
    figures = reconnect_metrics(records, 9.0, 20.0, run_end_s=100.0)
    assert figures["success_rate"] == 0.5
    assert figures["clients_broken"] == 1
    assert figures["clients_not_reconnected"] == 1 and figures["clients_reconnected"] == 0
    assert figures["episodes"] == 2
    assert figures["episodes_reconnected"] == 1 and figures["episodes_not_reconnected"] == 1


def test_a_break_between_the_fault_start_and_its_confirmation_belongs_to_the_fault() -> None:
    """The injector started the fault at 9.98 s and confirmed it at 10.0 s."""
    records = [broken(9.99, 1), reconnected(10.5, 1, 0.51), broken(10.01, 2)]
    figures = reconnect_metrics(records, t_fault_started_s=9.98, window_s=60.0, run_end_s=100.0)
    assert figures["clients_broken"] == 2
    assert figures["success_rate"] == 0.5
    assert figures["episodes"] == 2


def test_a_reconnect_slower_than_the_window_failed() -> None:
    records = [
        broken(10.0, 1),
        reconnected(11.0, 1, 1.0),
        broken(10.0, 2),
        reconnected(40.0, 2, 30.0),  # back, but after the 20 s window
    ]
    figures = reconnect_metrics(records, 9.0, 20.0, run_end_s=100.0)
    assert figures["success_rate"] == 0.5
    assert figures["clients_not_reconnected"] == 1
    assert figures["time_to_reconnect_s"]["max"] is None
    assert figures["over_window_s"]["time_to_reconnect_s.max"] == 20.0
    assert figures["histogram"] == [[1.0, 1]] and figures["never_back"] == 1
    assert figures["attempts"]["max"] == 1


def test_reconnect_metrics() -> None:
    records = [
        broken(4.0, 9),  # before the fault: not counted
        reconnected(5.0, 9, 1.0),
        broken(10.2, 1),
        broken(10.3, 2),
        broken(10.4, 3),
        reconnected(11.2, 1, 1.0, attempts=2),
        reconnected(13.3, 2, 3.0, attempts=4),
        reconnected(99.0, 3, 88.6, attempts=30),  # outside the window
    ]
    figures = reconnect_metrics(records, 10.0, 60.0)
    assert figures["clients_broken"] == 3
    assert figures["clients_reconnected"] == 2
    assert figures["success_rate"] == pytest.approx(2 / 3)
    assert figures["time_to_reconnect_s"]["p50"] == pytest.approx(3.0)
    assert figures["time_to_reconnect_s"]["max"] is None  # one is over the window
    assert figures["attempts"]["max"] == 4
    nothing = reconnect_metrics(records, None, 60)
    assert nothing["success_rate"] is None and nothing["success_rate_bounds"] is None
    assert nothing["episodes"] == 0 and nothing["episodes_unobserved"] == 0
    assert nothing["over_window_s"] == {}


def test_reconnect_peaks_attempts_and_all_reconnected() -> None:
    records = [
        {"k": "req", "t_s": 10.1, "m": "initialize", "ok": False, "u": 1},
        {"k": "req", "t_s": 10.2, "m": "initialize", "ok": True, "u": 2},
        {"k": "req", "t_s": 10.9, "m": "initialize", "ok": True, "u": 1},
        {"k": "req", "t_s": 11.5, "m": "initialize", "ok": True, "u": 3},
        reconnected(11.6, 3, 1.5, attempts=7),  # records in any order
        broken(10.0, 1),
        broken(10.0, 3),
        reconnected(11.0, 1, 1.0, attempts=2),
    ]
    figures = reconnect_metrics(records, 9.5, 60.0)
    assert figures["initialize_per_s_peak"] == 3
    assert figures["all_reconnected_s"] == pytest.approx(1.5)
    assert figures["time_to_reconnect_s"]["max"] == pytest.approx(1.5)
    assert figures["over_window_s"] == {}
    assert figures["attempts"] == {"mean": 4.5, "p50": 2, "p99": 7, "max": 7}
    stateless = reconnect_metrics(records, 9.5, 60.0, sessions=False)
    assert stateless["initialize_per_s_peak"] is None
    unfinished = reconnect_metrics([*records, broken(12.0, 4)], 9.5, 60.0)
    assert unfinished["all_reconnected_s"] is None
    assert unfinished["clients_not_reconnected"] == 1


def test_clients_cut_off_by_the_end_of_the_run_are_unobserved_not_failed() -> None:
    records = [
        broken(10.0, 1),
        reconnected(11.0, 1, 1.0),
        broken(10.0, 2),  # never back, watched for its whole 30 s window: failed
        broken(55.0, 3),  # never back, but the run ended 5 s later
        broken(50.0, 4),  # back, but its window was cut short too: not counted either
        reconnected(51.0, 4, 1.0),
    ]
    figures = reconnect_metrics(records, 9.0, 30.0, run_end_s=60.0)
    assert figures["clients_unobserved"] == 2 and figures["episodes_unobserved"] == 2
    assert figures["clients_broken"] == 2 and figures["success_rate"] == 0.5
    assert figures["success_rate_bounds"] == [0.5, 0.75]


def test_the_bounds_hold_the_judged_rate_when_the_unobserved_fared_better() -> None:
    """The judged episode failed, the one cut short was back at once: over all episodes
    the rate is exactly 0.5, the judged rate 0; a verdict must hold for both."""
    records = [broken(10.0, 1), broken(55.0, 2), reconnected(56.0, 2, 1.0)]
    figures = reconnect_metrics(records, 9.0, 30.0, run_end_s=60.0)
    assert figures["success_rate"] == 0.0
    assert figures["success_rate_bounds"] == [0.0, 0.5]


def test_a_client_watched_through_one_episode_is_not_unobserved_for_a_later_one() -> None:
    records = [broken(10.0, 1), reconnected(11.0, 1, 1.0), broken(55.0, 1)]
    figures = reconnect_metrics(records, 9.0, 30.0, run_end_s=60.0)
    assert figures["clients_broken"] == 1 and figures["clients_reconnected"] == 1
    assert figures["clients_unobserved"] == 0 and figures["episodes_unobserved"] == 1


def test_reconnect_histogram_buckets_every_reconnect_once() -> None:
    assert reconnect_histogram([]) is None
    buckets = reconnect_histogram([0.05, 0.1, 0.3, 4.0, 4.5, 75.0])
    assert buckets == [[0.1, 2], [0.5, 1], [5.0, 2], [75.0, 1]]
    assert sum(count for _, count in buckets) == 6
    assert RECONNECT_BUCKETS_S[-1] == 60.0


def test_the_histogram_holds_successful_episodes_and_never_back_the_failed() -> None:
    records = [*cohort(10.0, 4, 3, duration_s=0.3), broken(20.0, 0), reconnected(20.2, 0, 0.2)]
    figures = reconnect_metrics(records, 9.0, 60.0, run_end_s=200.0)
    assert figures["histogram"] == [[0.25, 1], [0.5, 3]]
    assert figures["never_back"] == 1


# Property tests: random histories of clients breaking and (maybe) coming back.


@dataclass(frozen=True)
class Break:
    user: int
    t_s: float
    duration_s: float | None
    """None: never came back."""


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Break], float, float, float | None, bool]:
    """Breaks with their true outcomes, the fault's start, the window, the run's end (or
    None), and whether records after the end of the run are left out (as in a run)."""
    times = st.floats(0.0, 30.0, allow_nan=False)
    breaks: list[Break] = []
    for user in range(draw(st.integers(0, 8))):
        t_s = draw(times)
        for _ in range(draw(st.integers(1, 4))):
            duration_s = draw(st.none() | st.floats(0.0, 40.0, allow_nan=False))
            breaks.append(Break(user, t_s, duration_s))
            if duration_s is None:
                break  # a client that never came back does not break again
            t_s += duration_s + draw(st.floats(0.001, 20.0, allow_nan=False))
    fault_started_s = draw(times)
    window_s = draw(st.floats(0.5, 30.0, allow_nan=False))
    run_end_s = draw(st.none() | st.floats(0.0, 120.0, allow_nan=False))
    return breaks, fault_started_s, window_s, run_end_s, draw(st.booleans())


def records_of(breaks: list[Break], seen_until_s: float | None) -> list[dict[str, Any]]:
    records = [broken(b.t_s, b.user) for b in breaks]
    records += [
        reconnected(b.t_s + b.duration_s, b.user, b.duration_s)
        for b in breaks
        if b.duration_s is not None
    ]
    return [r for r in records if seen_until_s is None or r["t_s"] <= seen_until_s]


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


@PROPERTY_SETTINGS
@given(histories())
def test_property_the_figures_never_flatter_the_recovery(
    history: tuple[list[Break], float, float, float | None, bool],
) -> None:
    breaks, fault_started_s, window_s, run_end_s, cut_at_end = history
    records = records_of(breaks, run_end_s if cut_at_end else None)
    figures = reconnect_metrics(records, fault_started_s, window_s, run_end_s=run_end_s)

    def in_records(t_s: float) -> bool:
        return not cut_at_end or run_end_s is None or t_s <= run_end_s

    after_fault = [b for b in breaks if b.t_s >= fault_started_s and in_records(b.t_s)]

    def judged(b: Break) -> bool:
        return run_end_s is None or b.t_s + window_s <= run_end_s

    def seen_back(b: Break) -> bool:
        """Its reconnect is among the records."""
        return b.duration_s is not None and in_records(b.t_s + b.duration_s)

    def seen_back_within_window(b: Break) -> bool:
        return seen_back(b) and b.duration_s is not None and b.duration_s <= window_s

    # (a) a client that never came back after a judged break is not counted as reconnected
    never_back = {b.user for b in after_fault if judged(b) and not seen_back_within_window(b)}
    with_judged = {b.user for b in after_fault if judged(b)}
    assert figures["clients_not_reconnected"] == len(never_back)
    assert figures["clients_reconnected"] == len(with_judged - never_back)
    assert figures["clients_broken"] == len(with_judged)

    # (b) every break from the fault's start on is an episode, judged or unobserved
    assert figures["episodes"] + figures["episodes_unobserved"] == len(after_fault)
    assert figures["episodes"] == sum(1 for b in after_fault if judged(b))
    assert (
        figures["episodes_reconnected"] + figures["episodes_not_reconnected"] == figures["episodes"]
    )

    # (c) the bounds hold the judged success rate, and the success rate the run would have
    # found had it watched every window (the true outcomes)
    bounds = figures["success_rate_bounds"]
    if not after_fault:
        assert bounds is None and figures["success_rate"] is None
    else:
        lo, hi = bounds
        assert 0.0 <= lo <= hi <= 1.0
        whole = [b for b in after_fault if b.duration_s is not None and b.duration_s <= window_s]
        assert lo - 1e-9 <= len(whole) / len(after_fault) <= hi + 1e-9
        rate = figures["success_rate"]
        if rate is not None:
            assert lo <= rate <= hi
        if not any(not judged(b) and seen_back(b) for b in after_fault):
            # no unobserved outcome seen yet: "all of them failed" .. "all succeeded"
            succeeded = figures["episodes_reconnected"]
            assert lo <= succeeded / len(after_fault) + 1e-9
            assert hi >= (succeeded + figures["episodes_unobserved"]) / len(after_fault) - 1e-9

    # (d) a failed judged episode keeps the maximum (p100) unknown: over the window
    if figures["episodes_not_reconnected"]:
        assert figures["time_to_reconnect_s"]["max"] is None
        assert figures["over_window_s"]["time_to_reconnect_s.max"] == window_s
        assert figures["all_reconnected_s"] is None
    for name, value in figures["time_to_reconnect_s"].items():
        if value is not None:
            assert value <= window_s
            assert f"time_to_reconnect_s.{name}" not in figures["over_window_s"]


def test_the_pytest_plugin_judges_every_break_from_the_fault_start() -> None:
    """``recovery_of`` (the ``mcp_swarm`` fixture's judge): a break between the fault's
    start and its confirmation counts, and so does a client's second break."""
    from harness.testing.swarm import RecoveryRules, recovery_of

    records = [
        broken(9.99, 1),
        reconnected(10.5, 1, 0.51),
        broken(12.0, 1),  # broke again, still out
        broken(10.2, 2),
        reconnected(11.0, 2, 0.8),
    ]
    rules = RecoveryRules(stable_s=2.0, window_s=60.0)
    recovery = recovery_of(records, [], 10.0, 20.0, rules, fault_started_s=9.98)
    assert recovery.clients_broken == 2 and recovery.clients_not_reconnected == 1
    assert recovery.reconnect_success_rate == pytest.approx(2 / 3)
    assert recovery.reconnect["episodes"] == 3
    assert not recovery.recovered
    confirmed_only = recovery_of(records, [], 10.0, 20.0, rules)
    assert confirmed_only.reconnect["episodes"] == 2
