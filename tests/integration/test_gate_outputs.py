"""The gate as CI sees it, from real runs through the CLI: exit codes, junit.xml,
summary.md and report.html for a passing series of runs on one stack, a failing run
and an inconclusive one (a real fault that did not take effect)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SMALL_RESTART = """
name: small_restart
seed: 4
load: {users: 30, spawn_rate: 30, run_time: 18s, think_time: [0.5s, 1s]}
faults: [{kind: kill_server, at: 8s, restart_after: 1s}]
windows: {stability: 3s, reconnect: 10s}
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


def junit_cases(path: Path) -> dict[str, str]:
    """testcase name -> outcome (passed, failure, error), after checking the counts."""
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    cases = {}
    for case in suite.iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error")), "passed")
        cases[case.get("name", "")] = outcome
    assert int(suite.get("tests", -1)) == len(cases)
    assert int(suite.get("failures", -1)) == sum(v == "failure" for v in cases.values())
    assert int(suite.get("errors", -1)) == sum(v == "error" for v in cases.values())
    return cases


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


def test_a_missed_objective_fails_the_gate_with_measured_against_target(tmp_path: Path) -> None:
    impossible = SMALL_RESTART.replace("failover_s, max: 10s", "failover_s, max: 1ms")
    code, run_dir, output = cli(tmp_path, impossible)
    assert code == 1, output[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["verdict"] == "fail"
    measured = next(o["measured"] for o in result["objectives"] if o["metric"] == "failover_s")
    cases = junit_cases(run_dir / "junit.xml")
    assert cases["failover_s"] == "failure"
    failure = (
        ET.parse(run_dir / "junit.xml").getroot().find(".//testcase[@name='failover_s']/failure")
    )
    assert failure is not None and "target 0.001" in failure.get("message", "")
    assert f"{measured:.3g}" in failure.get("message", "")
    assert "**FAIL**" in (run_dir / "summary.md").read_text()


def test_a_fault_that_did_not_take_effect_is_inconclusive_never_pass(tmp_path: Path) -> None:
    no_such_tool = SMALL_RESTART.replace(
        "faults: [{kind: kill_server, at: 8s, restart_after: 1s}]",
        "faults: [{kind: call_tool, at: 8s, tool: no_such_tool}]",
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
