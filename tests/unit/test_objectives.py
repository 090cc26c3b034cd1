from __future__ import annotations

from harness.config import Objective
from harness.objectives import exit_code, judge, judge_all, lookup, metric_paths, run_verdict

METRICS = {"failover_s": 3.2, "reconnect": {"success_rate": None}, "writes": {"rpo_rows": 0}}


def test_judge_max_min_and_not_measured() -> None:
    assert judge(Objective(metric="failover_s", max="5s"), METRICS).verdict == "met"
    assert judge(Objective(metric="failover_s", max="3s"), METRICS).verdict == "missed"
    assert (
        judge(Objective(metric="reconnect.success_rate", min="99%"), METRICS).verdict
        == "not_measured"
    )
    assert judge(Objective(metric="writes.rpo_rows", max=0), METRICS).verdict == "met"


def test_verdict_and_exit_codes() -> None:
    met = judge_all([Objective(metric="failover_s", max="5s")], METRICS)
    missed = judge_all([Objective(metric="failover_s", max="1s")], METRICS)
    unmeasured = judge_all([Objective(metric="reconnect.success_rate", min="99%")], METRICS)
    assert run_verdict(met, faults_confirmed=True, stack_up=True, complete=True) == "pass"
    assert run_verdict(met, faults_confirmed=False, stack_up=True, complete=True) == "inconclusive"
    assert run_verdict(met, faults_confirmed=True, stack_up=False, complete=True) == "inconclusive"
    assert (
        run_verdict(unmeasured, faults_confirmed=True, stack_up=True, complete=True)
        == "inconclusive"
    )
    assert (
        run_verdict(missed + unmeasured, faults_confirmed=True, stack_up=True, complete=True)
        == "fail"
    )
    assert exit_code(["pass"]) == 0
    assert exit_code(["pass", "inconclusive"]) == 3
    assert exit_code(["inconclusive", "fail"]) == 1
    assert exit_code(["fail"], warn_only=True) == 0
    assert exit_code(["inconclusive"], warn_only=True) == 3


def test_paths() -> None:
    assert lookup(METRICS, "writes.rpo_rows") == 0
    assert sorted(metric_paths(METRICS)) == [
        "failover_s",
        "reconnect.success_rate",
        "writes.rpo_rows",
    ]


def test_a_recovery_that_never_came_misses_when_the_run_watched_long_enough() -> None:
    metrics = {
        "failover_s": None,
        "rto_s": None,
        "not_reached_within_s": {"failover_s": 40.0, "rto_s": 4.0},
    }
    never = judge(Objective(metric="failover_s", max="10s"), metrics)
    assert (never.verdict, never.measured, never.measured_at_least) == ("missed", None, 40.0)
    too_short = judge(Objective(metric="rto_s", max="10s"), metrics)
    assert too_short.verdict == "not_measured"


def test_metrics_absent_from_a_partial_run_are_not_measured() -> None:
    judged = judge(Objective(metric="failover_s", max="10s"), {})
    assert judged.verdict == "not_measured"


def test_a_doubt_on_a_missed_figure_makes_it_inconclusive() -> None:
    from harness.objectives import Doubt

    saturated = Doubt("generator saturated", ("failover_s",))
    missed = judge_all([Objective(metric="failover_s", max="1s")], METRICS, [saturated])
    assert missed[0].verdict == "not_measured"
    verdict = run_verdict(missed, faults_confirmed=True, stack_up=True, complete=True)
    assert verdict == "inconclusive"


def test_a_series_is_judged_on_its_worst_run_and_flags_disagreement() -> None:
    from harness.objectives import JudgedObjective, judge_series, series_verdict

    def run(failover: float | None, verdict: str) -> list[JudgedObjective]:
        return [
            JudgedObjective("failover_s", "max", 10.0, failover, verdict),  # type: ignore[arg-type]
            JudgedObjective("reconnect.success_rate", "min", 0.99, 1.0, "met"),
        ]

    failover, rate = judge_series([run(4.0, "met"), run(12.0, "missed"), run(6.0, "met")])
    assert failover.values == (4.0, 12.0, 6.0)
    assert (failover.worst, failover.median) == (12.0, 6.0)
    assert failover.verdict == "missed" and failover.flaky
    summary = failover.as_dict()
    assert summary["min"] == 4.0 and summary["max"] == 12.0 and summary["measured"] == 12.0
    assert summary["met_in"] == "2 of 3 runs"
    assert rate.verdict == "met" and not rate.flaky and rate.worst == 1.0

    unmeasured = judge_series([run(4.0, "met"), run(None, "not_measured")])[0]
    assert unmeasured.verdict == "not_measured" and not unmeasured.flaky
    assert unmeasured.median == 4.0

    assert series_verdict(["pass", "fail", "pass"]) == "fail"
    assert series_verdict(["pass", "inconclusive"]) == "inconclusive"
    assert series_verdict(["pass", "pass"]) == "pass"
    assert series_verdict([]) == "inconclusive"
