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


def test_a_doubt_makes_even_a_miss_inconclusive() -> None:
    missed = judge_all([Objective(metric="failover_s", max="1s")], METRICS)
    verdict = run_verdict(
        missed, faults_confirmed=True, stack_up=True, complete=True, doubts=["generator saturated"]
    )
    assert verdict == "inconclusive"
