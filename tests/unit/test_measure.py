"""The measurement definitions (docs/measurements.md), each on hand-made samples."""

from __future__ import annotations

import pytest

from harness.measure.failover import (
    ProbeCadence,
    ServiceProbeSample,
    WriteProbeSample,
    db_failover_s,
    failover_s,
    first_service_write_s,
    rto_s,
)
from harness.measure.histogram import LatencyHistogram
from harness.measure.phases import baseline_session_rate, compute_phases, phase_of, storm_end_s
from harness.measure.timeline import build_timeline, reopened_s


def test_histogram_percentiles_and_empty() -> None:
    histogram = LatencyHistogram.of(float(v) for v in range(1, 1001))
    summary = histogram.summary()
    assert summary["count"] == 1000
    assert summary["p50"] == pytest.approx(500, rel=0.002)
    assert summary["p99"] == pytest.approx(990, rel=0.002)
    assert summary["max"] == pytest.approx(1000, rel=0.002)
    assert LatencyHistogram().summary()["p99"] is None
    assert LatencyHistogram().summary()["count"] == 0


def test_histogram_keeps_sub_millisecond_and_huge_values() -> None:
    histogram = LatencyHistogram.of([0.25, 0.0, 10_000_000.0])
    assert histogram.count == 3
    assert histogram.percentile_ms(1) == pytest.approx(0.001, abs=0.001)


def write(seq: int, t: float, ok: bool, port: int | None) -> WriteProbeSample:
    return WriteProbeSample(seq, t, ok, port)


def test_db_failover_counts_only_writes_on_the_promoted_node() -> None:
    samples = [
        write(1, 9.9, True, 5001),
        write(2, 10.05, True, 5001),  # the old primary, before the kill took hold
        write(3, 10.1, False, None),
        write(4, 12.3, True, 5002),
    ]
    assert db_failover_s(samples, 10.0, promoted_port=5002) == pytest.approx(2.3)
    assert db_failover_s(samples, 10.0, promoted_port=5003) is None


def service(t: float, ok: bool) -> ServiceProbeSample:
    return ServiceProbeSample(t, ok)


def test_failover_needs_writes_to_keep_succeeding_for_the_window() -> None:
    samples = [service(t / 10, True) for t in range(0, 100)]
    samples += [service(10.0 + t / 10, False) for t in range(0, 20)]
    samples += [service(12.0, True), service(12.1, False)]  # a success that does not last
    samples += [service(12.2 + t / 10, True) for t in range(0, 80)]
    assert first_service_write_s(samples, 10.0) == pytest.approx(12.0)
    for run_end_s, expected in ((30.0, pytest.approx(2.2)), (15.0, None)):
        measured = failover_s(samples, 10.0, 5.0, run_end_s, cadence=ProbeCadence(0.1, 1.0))
        assert measured == expected


def test_rto_waits_for_latency_to_come_back_under_its_objective() -> None:
    samples = [service(10.0 + t / 10, True) for t in range(0, 200)]
    latency = [(10.0 + t / 100, 900.0 if t < 500 else 5.0) for t in range(0, 2000)]

    def rto(p99_max_ms: float | None) -> float | None:
        return rto_s(samples, 10.0, 5.0, 30.0, latency, p99_max_ms, cadence=ProbeCadence(0.1, 1.0))

    assert rto(None) == pytest.approx(0.0)
    measured = rto(100.0)
    assert measured == pytest.approx(5.0, abs=0.11)


def test_phases_follow_the_definitions() -> None:
    spawn = [i * 0.01 for i in range(100)]  # 100 sessions while spawning
    steady = [5.0 + i for i in range(10)]  # one a second until the fault at 15 s
    storm = [17.0 + i * 0.01 for i in range(100)]  # everybody reconnects
    later = [25.0, 27.0]
    phases = compute_phases(
        run_end_s=40.0,
        t_fault_s=15.0,
        first_service_write_s=16.5,
        session_starts_s=spawn + steady + storm + later,
        steady_from_s=1.0,
        window_s=5.0,
    )
    assert [p.name for p in phases] == ["ramp", "baseline", "disruption", "storm", "recovered"]
    assert [(p.start_s, p.end_s) for p in phases[:4]] == [
        (0.0, 1.0),
        (1.0, 15.0),
        (15.0, 16.5),
        (16.5, 18.0),
    ]
    assert phase_of(phases, 17.5) == "storm" and phase_of(phases, 39.0) == "recovered"


def test_phases_without_fault_or_recovery() -> None:
    assert [
        (p.name, p.start_s, p.end_s)
        for p in compute_phases(
            run_end_s=10,
            t_fault_s=None,
            first_service_write_s=None,
            session_starts_s=[],
            steady_from_s=2,
            window_s=5,
        )
    ] == [("ramp", 0, 2), ("baseline", 2, 10)]
    unrecovered = compute_phases(
        run_end_s=10,
        t_fault_s=4,
        first_service_write_s=None,
        session_starts_s=[],
        steady_from_s=0,
        window_s=5,
    )
    assert [(p.name, p.end_s) for p in unrecovered] == [("baseline", 4), ("disruption", 10)]


def test_a_fault_during_the_ramp_leaves_no_baseline() -> None:
    """Spawning still going when the fault struck: no steady state to call a baseline, so
    its figures are unmeasured rather than taken from the ramp's bursts."""
    phases = compute_phases(
        run_end_s=30,
        t_fault_s=5,
        first_service_write_s=None,
        session_starts_s=[],
        steady_from_s=8,
        window_s=5,
    )
    assert [(p.name, p.start_s, p.end_s) for p in phases] == [
        ("ramp", 0, 5),
        ("disruption", 5, 30),
    ]
    assert phase_of(phases, 4.9) == "ramp" and phase_of(phases, 6.0) == "disruption"


def test_baseline_rate_excludes_spawning_and_storm_end_needs_a_full_window() -> None:
    assert baseline_session_rate(
        [0.1] * 50 + [6.0, 8.0], steady_from_s=5.0, t_fault_s=10.0
    ) == pytest.approx(0.4)
    assert (
        storm_end_s([10.5] * 30 + [14.2] * 3, 10.0, 16.0, threshold_per_s=1.0, window_s=5.0) is None
    )
    assert storm_end_s([10.5] * 30, 10.0, 30.0, threshold_per_s=1.0, window_s=5.0) == 11.0


def test_timeline_rows() -> None:
    records = [
        {"k": "req", "t_s": 0.5, "m": "initialize", "ok": True, "u": 1, "ms": 5},
        {"k": "req", "t_s": 0.6, "m": "tools/list", "ok": True, "u": 1, "ms": 4},
        {
            "k": "req",
            "t_s": 1.5,
            "m": "tools/call:create_note",
            "ok": False,
            "err": "tool_error",
            "u": 1,
            "ms": 9,
        },
        {"k": "broken", "t_s": 2.1, "u": 1},
        {"k": "req", "t_s": 2.2, "m": "initialize", "ok": False, "err": "timeout", "u": 1},
    ]
    rows = build_timeline(records, 3.0, [(1.2, "kill_primary")])
    assert len(rows) == 3
    assert rows[0]["requests_per_s"] == 2 and rows[0]["sessions_open"] == 1
    assert [row["initialize_per_s"] for row in rows] == [1, 0, 0]  # a failed one opens none
    assert rows[0]["tools_list_p50_ms"] == pytest.approx(4, rel=0.01)
    assert rows[1]["errors_per_s"] == {"tool_error": 1} and rows[1]["events"] == ["kill_primary"]
    assert rows[2]["sessions_open"] == 0


def test_resources_parsing_and_saturation_rule() -> None:
    import os

    from harness.measure.resources import cpu_seconds, generator_saturation, server_gauges

    text = (
        "# HELP mcp_sessions_open open sessions\n"
        "mcp_sessions_open 42\n"
        'mcp_admission_shed_total{reason="queue"} 3\n'
        'mcp_admission_shed_total{reason="wait"} 4\n'
        "mcp_other 1\n"
    )
    assert server_gauges(text, ("mcp_sessions_open", "mcp_admission_shed_total")) == {
        "mcp_sessions_open": 42.0,
        "mcp_admission_shed_total": 7.0,
    }
    cool = [0.3] * 17
    assert generator_saturation([0.95] * 2 + cool + [0.3], [0.5] * 20, cores_available=1) == (
        False,
        0.1,
    )
    assert generator_saturation([0.95] * 3 + cool, [0.5] * 20, cores_available=1) == (True, 0.15)
    assert generator_saturation([1.5] * 10, [0.75] * 10, cores_available=2) == (False, 0.0)
    assert generator_saturation([1.5] * 10, [0.95] * 10, cores_available=2) == (True, 1.0)
    assert generator_saturation([], [], cores_available=1) == (False, 0.0)
    assert (cpu_seconds(os.getpid()) or 0) > 0
    assert cpu_seconds(2**22 + 12345) is None


def test_a_lagging_event_loop_saturates_the_generator_a_hiccup_does_not() -> None:
    from harness.measure.resources import loop_lag_by_second, loop_lag_saturation

    records = [
        {"t_s": 0.2, "mean": 0.001, "p": 1},
        {"t_s": 0.4, "mean": 0.080, "p": 2},  # the worst process decides the second
        {"t_s": 1.5, "mean": 0.002, "p": 1},
        {"t_s": 1.6, "mean": 0.003, "p": 2},
    ]
    assert loop_lag_by_second(records) == [0.080, 0.003]
    calm = [0.004] * 18
    assert loop_lag_saturation([0.2] + calm + [0.01]) == (False, 0.05)  # one hiccup
    assert loop_lag_saturation([0.2, 0.06, 0.07] + calm[:17]) == (True, 0.15)
    assert loop_lag_saturation([0.2, 0.2]) == (True, 1.0)
    assert loop_lag_saturation([0.2]) == (False, 1.0)  # fewer than two seconds: no verdict
    assert loop_lag_saturation([]) == (False, 0.0)


def test_a_slow_servers_late_first_sessions_do_not_hide_the_storm() -> None:
    """Seen in a real run (the gallery's slow_tools_list, 200 users): spawning ended at
    1.3 s but the slow server opened the clients' first sessions until 6 s; counted in the
    baseline they set the storm threshold above the herd's rate, and the storm vanished."""
    first_opens = [1.3 + 4.7 * i / 150 for i in range(150)]  # 150 first sessions in 4.7 s
    herd = [9.0 + 10.0 * i / 200 for i in range(200)]  # 200 re-opens over 10 s: 20/s

    def phases(reopens: list[float] | None) -> dict[str, tuple[float, float]]:
        found = compute_phases(
            run_end_s=23.0,
            t_fault_s=6.0,
            first_service_write_s=9.0,
            session_starts_s=first_opens + herd,
            steady_from_s=1.3,
            window_s=3.0,
            session_reopens_s=reopens,
        )
        return {p.name: (p.start_s, p.end_s) for p in found}

    storm_start, storm_end = phases(herd)["storm"]
    assert storm_start == 9.0 and storm_end >= 19.0
    # Counting every open, the threshold (2 x 32/s) sits above the herd: no storm at all.
    assert "storm" not in phases(None)


def test_reopened_sessions_are_every_open_but_each_clients_first() -> None:
    changes = [(1.0, 1, 1), (1.5, 2, 1), (5.0, 1, -1), (7.0, 1, 1), (8.0, 2, -1), (9.0, 2, 1)]
    assert reopened_s(changes) == [7.0, 9.0]
