"""The gate as CI sees it, from real runs through the CLI: exit codes, junit.xml,
summary.md and report.html for a passing series of runs on one stack and an
inconclusive run (a real fault that did not take effect). A failing run's junit.xml is
checked in the drill's live test (tests/integration/test_drill_live.py), on the drill's
scenario made to miss an objective; the gate example fails `run` itself with exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import junit_cases

REPO = Path(__file__).resolve().parents[2]

SMALL_RESTART = """
name: small_restart
seed: 4
load: {users: 30, spawn_rate: 30, run_time: 14s, think_time: [0.5s, 1s]}
faults: [{kind: kill_server, at: 6s, restart_after: 1s}]
windows: {stability: 3s, reconnect: 8s}
objectives:
  - {metric: failover_s, max: 10s}
  - {metric: reconnect.success_rate, min: 90%}
  - {metric: writes.rpo_rows, max: 0}
"""


def cli(tmp_path: Path, scenario: str, *flags: str) -> tuple[int, Path, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "scenario.yaml"
    path.write_text(scenario)
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(path), "--out", str(out), *flags],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    (run_dir,) = out.iterdir()
    return done.returncode, run_dir, done.stdout + done.stderr


@pytest.mark.shares_machine  # 30 users, objectives on failover, reconnects and lost rows
def test_a_passing_series_on_one_stack(tmp_path: Path) -> None:
    code, series_dir, output = cli(tmp_path, SMALL_RESTART, "--repeat", "2")
    assert code == 0, output[-3000:]
    series = json.loads((series_dir / "repeat.json").read_text())
    assert series["verdict"] == "pass" and series["repeat"] == 2
    assert [r["verdict"] for r in series["runs"]] == ["pass", "pass"]
    for objective in series["objectives"]:
        assert len(objective["values"]) == 2 and objective["verdict"] == "met"
        assert objective["min"] <= objective["median"] <= objective["max"]
    second = json.loads((series_dir / "run-2" / "result.json").read_text())
    assert any("restored to its start" in note for note in second["notes"])
    assert second["faults"][0]["confirmed"]
    for run in ("run-1", "run-2"):
        assert set(junit_cases(series_dir / run / "junit.xml").values()) == {"passed"}
        assert (series_dir / run / "report.html").stat().st_size > 10_000
    assert set(junit_cases(series_dir / "junit.xml").values()) == {"passed"}
    assert "**PASS**" in (series_dir / "summary.md").read_text()
    assert "series verdict: PASS" in output


@pytest.mark.shares_machine
def test_a_fault_that_did_not_take_effect_is_inconclusive_never_pass(tmp_path: Path) -> None:
    no_such_tool = SMALL_RESTART.replace(
        "faults: [{kind: kill_server, at: 6s, restart_after: 1s}]",
        "faults: [{kind: call_tool, at: 6s, tool: no_such_tool}]",
    ).replace("  - {metric: failover_s, max: 10s}\n", "")
    code, run_dir, output = cli(tmp_path, no_such_tool)
    assert code == 3, output[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["verdict"] == "inconclusive"
    (fault,) = result["faults"]
    assert fault["confirmed"] is False and "no_such_tool" in fault["detail"]
    cases = junit_cases(run_dir / "junit.xml")
    assert "error" in cases.values() and "failure" not in cases.values()
    assert "**INCONCLUSIVE**" in (run_dir / "summary.md").read_text()


NEVER_PROMOTED = """
name: never_promoted
seed: 5
load: {users: 20, spawn_rate: 20, run_time: 13s, think_time: [0.5s, 1s]}
faults: [{kind: kill_primary, at: 4s}]
recovery: {promote_after: null}
windows: {stability: 2s, reconnect: 6s}
objectives:
  - {metric: db_failover_s, max: 5s}
  - {metric: failover_s, max: 5s}
  - {metric: writes.lost, max: 0}
"""


@pytest.mark.shares_machine  # 20 users; judged on a recovery that never comes
def test_a_primary_that_is_never_replaced_fails_the_gate(tmp_path: Path) -> None:
    """Nothing promotes the replica, so the final read of the ledger fails too: the
    recoveries still miss on the lower bound the run saw, and the gate fails (it was
    inconclusive, which a nightly job may not page on)."""
    code, run_dir, output = cli(tmp_path, NEVER_PROMOTED)
    result = json.loads((run_dir / "result.json").read_text())
    assert code == 1 and result["verdict"] == "fail", (result["objectives"], output[-3000:])
    judged = {o["metric"]: o for o in result["objectives"]}
    for recovery in ("db_failover_s", "failover_s"):
        assert judged[recovery]["verdict"] == "missed", judged[recovery]
        assert judged[recovery]["measured_at_least"] >= 5
        assert "ledger could not be checked" in judged[recovery]["reason"]
    assert judged["writes.lost"]["verdict"] == "not_measured"
    assert any("ledger could not be checked" in d for d in result["doubts"])
    assert junit_cases(run_dir / "junit.xml")["db_failover_s"] == "failure"
    assert "(lower bound)" in (run_dir / "summary.md").read_text()
