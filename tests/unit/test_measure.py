"""The measurement definitions of DESIGN.md, each on hand-made samples."""

from __future__ import annotations

import pytest

from harness.measure.failover import (
    ServiceProbeSample,
    WriteProbeSample,
    db_failover_s,
    failover_s,
    first_service_write_s,
    rto_s,
)
from harness.measure.histogram import LatencyHistogram
from harness.measure.phases import baseline_session_rate, compute_phases, phase_of, storm_end_s
from harness.measure.reconnect import reconnect_metrics
from harness.measure.timeline import build_timeline


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
    assert failover_s(samples, 10.0, window_s=5.0, run_end_s=30.0) == pytest.approx(2.2)
    assert failover_s(samples, 10.0, window_s=5.0, run_end_s=15.0) is None


def test_rto_waits_for_latency_to_come_back_under_its_objective() -> None:
    samples = [service(10.0 + t / 10, True) for t in range(0, 200)]
    latency = [(10.0 + t / 100, 900.0 if t < 500 else 5.0) for t in range(0, 2000)]
    assert rto_s(samples, 10.0, 5.0, 30.0, latency, p99_max_ms=None) == pytest.approx(0.0)
    measured = rto_s(samples, 10.0, 5.0, 30.0, latency, p99_max_ms=100.0)
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
    assert [p.name for p in phases] == ["baseline", "disruption", "storm", "recovered"]
    assert phases[0].end_s == 15.0 and phases[1].end_s == 16.5
    assert phases[2].end_s == 18.0
    assert phase_of(phases, 17.5) == "storm" and phase_of(phases, 39.0) == "recovered"


def test_phases_without_fault_or_recovery() -> None:
    assert [
        p.name
        for p in compute_phases(
            run_end_s=10,
            t_fault_s=None,
            first_service_write_s=None,
            session_starts_s=[],
            steady_from_s=0,
            window_s=5,
        )
    ] == ["baseline"]
    unrecovered = compute_phases(
        run_end_s=10,
        t_fault_s=4,
        first_service_write_s=None,
        session_starts_s=[],
        steady_from_s=0,
        window_s=5,
    )
    assert [(p.name, p.end_s) for p in unrecovered] == [("baseline", 4), ("disruption", 10)]


def test_baseline_rate_excludes_spawning_and_storm_end_needs_a_full_window() -> None:
    assert baseline_session_rate(
        [0.1] * 50 + [6.0, 8.0], steady_from_s=5.0, t_fault_s=10.0
    ) == pytest.approx(0.4)
    assert (
        storm_end_s([10.5] * 30 + [14.2] * 3, 10.0, 16.0, threshold_per_s=1.0, window_s=5.0) is None
    )
    assert storm_end_s([10.5] * 30, 10.0, 30.0, threshold_per_s=1.0, window_s=5.0) == 11.0


def test_reconnect_metrics() -> None:
    records = [
        {"k": "broken", "t_s": 4.0, "u": 9},  # before the fault: not counted
        {"k": "broken", "t_s": 10.2, "u": 1},
        {"k": "broken", "t_s": 10.3, "u": 2},
        {"k": "broken", "t_s": 10.4, "u": 3},
        {"k": "reconnected", "t_s": 11.2, "u": 1, "duration_s": 1.0, "attempts": 2},
        {"k": "reconnected", "t_s": 13.3, "u": 2, "duration_s": 3.0, "attempts": 4},
        {
            "k": "reconnected",
            "t_s": 99.0,
            "u": 3,
            "duration_s": 88.6,
            "attempts": 30,
        },  # outside the window
    ]
    figures = reconnect_metrics(records, t_fault_s=10.0, window_s=60.0)
    assert figures["clients_broken"] == 3
    assert figures["clients_reconnected"] == 2
    assert figures["success_rate"] == pytest.approx(2 / 3)
    assert figures["time_to_reconnect_s"]["max"] == pytest.approx(3.0, rel=0.01)
    assert figures["attempts"]["max"] == 4
    assert reconnect_metrics(records, t_fault_s=None, window_s=60)["success_rate"] is None


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
    ]
    rows = build_timeline(records, 3.0, [(1.2, "kill_primary")])
    assert len(rows) == 3
    assert rows[0]["requests_per_s"] == 2 and rows[0]["sessions_open"] == 1
    assert rows[0]["tools_list_p50_ms"] == pytest.approx(4, rel=0.01)
    assert rows[1]["errors_per_s"] == {"tool_error": 1} and rows[1]["events"] == ["kill_primary"]
    assert rows[2]["sessions_open"] == 0


def test_reconnect_peaks_attempts_and_all_reconnected() -> None:
    records = [
        {"k": "req", "t_s": 10.1, "m": "initialize", "ok": False, "u": 1},
        {"k": "req", "t_s": 10.2, "m": "initialize", "ok": True, "u": 2},
        {"k": "req", "t_s": 10.9, "m": "initialize", "ok": True, "u": 1},
        {"k": "req", "t_s": 11.5, "m": "initialize", "ok": True, "u": 3},
        {"k": "reconnected", "t_s": 11.6, "u": 3, "duration_s": 1.5, "attempts": 7},
        {"k": "broken", "t_s": 10.0, "u": 1},
        {"k": "broken", "t_s": 10.0, "u": 3},
        {"k": "reconnected", "t_s": 11.0, "u": 1, "duration_s": 1.0, "attempts": 2},
    ]
    figures = reconnect_metrics(records, t_fault_s=9.5, window_s=60.0)
    assert figures["initialize_per_s_peak"] == 3
    assert figures["all_reconnected_s"] == pytest.approx(1.5)
    assert figures["attempts"] == {"mean": 4.5, "p50": 2, "p99": 7, "max": 7}
    stateless = reconnect_metrics(records, t_fault_s=9.5, window_s=60.0, sessions=False)
    assert stateless["initialize_per_s_peak"] is None
    unfinished = reconnect_metrics(records + [{"k": "broken", "t_s": 12, "u": 4}], 9.5, 60.0)
    assert unfinished["all_reconnected_s"] is None


def test_resources_parsing_and_saturation_rule() -> None:
    import os

    from harness.measure.resources import cpu_seconds, generator_saturation, parse_prometheus

    text = (
        "# HELP mcp_sessions_open open sessions\n"
        "mcp_sessions_open 42\n"
        'mcp_admission_shed_total{reason="queue"} 3\n'
        'mcp_admission_shed_total{reason="wait"} 4\n'
        "mcp_other 1\n"
    )
    assert parse_prometheus(text, ("mcp_sessions_open", "mcp_admission_shed_total")) == {
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


def test_clients_cut_off_by_the_end_of_the_run_are_unobserved_not_failed() -> None:
    records = [
        {"k": "broken", "t_s": 10.0, "u": 1},
        {"k": "reconnected", "t_s": 11.0, "u": 1, "duration_s": 1.0, "attempts": 1},
        {"k": "broken", "t_s": 10.0, "u": 2},  # never back, watched for 60 s: failed
        {"k": "broken", "t_s": 55.0, "u": 3},  # never back, but the run ended 5 s later
    ]
    figures = reconnect_metrics(records, t_fault_s=9.0, window_s=30.0, run_end_s=60.0)
    assert figures["clients_unobserved"] == 1
    assert figures["clients_broken"] == 2 and figures["success_rate"] == 0.5


def test_reconnect_histogram_buckets_every_client_once() -> None:
    from harness.measure.reconnect import reconnect_histogram

    assert reconnect_histogram([]) is None
    buckets = reconnect_histogram([0.05, 0.1, 0.3, 4.0, 4.5, 75.0])
    assert buckets == [[0.1, 2], [0.5, 1], [5.0, 2], [75.0, 1]]
    assert sum(count for _, count in buckets) == 6
