"""``mcp-harness drill`` end to end on a tiny drill: two small scenarios, each on its own
real stack (server_restart at 30 clients / 14 s with one objective made impossible;
tool_corrupts_state at 120 clients / 20 s). The drill directory must hold drill.json /
.md / .html and one subfolder per scenario with its own result.json and reports; the
gaps must name the forced miss; the exit code is 1 (a missed objective).

The two runs carry more than the drill: the forced miss is the gate's failing run (its
junit.xml names the objective with measured against target), and tool_corrupts_state's
damage must be found exactly by the checks and the ledger."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.shipped import SCENARIOS_DIR
from tests.helpers import assert_tool_corruption_found_exactly, junit_cases

REPO = Path(__file__).resolve().parents[2]


def assert_missed_objective_in_junit(run_dir: Path) -> None:
    """A failing run's junit.xml: the missed objective is a <failure> whose message gives
    the measured value against the target; summary.md says FAIL."""
    result = json.loads((run_dir / "result.json").read_text())
    assert result["verdict"] == "fail"
    measured = next(o["measured"] for o in result["objectives"] if o["metric"] == "failover_s")
    assert junit_cases(run_dir / "junit.xml")["failover_s"] == "failure"
    failure = (
        ET.parse(run_dir / "junit.xml").getroot().find(".//testcase[@name='failover_s']/failure")
    )
    assert failure is not None and "target 0.001" in failure.get("message", "")
    assert f"{measured:.3g}" in failure.get("message", "")
    assert "**FAIL**" in (run_dir / "summary.md").read_text()


def test_tiny_drill_through_the_cli(tmp_path: Path) -> None:
    drill_file = tmp_path / "tiny.yaml"
    drill_file.write_text(
        "targets: {rto_s: 30s, rpo_s: 1s, rpo_rows: 0}\n"
        "scenarios:\n"
        f"  - file: {SCENARIOS_DIR}/server_restart.yaml\n"
        "    set: {load.users: 30, load.run_time: 14s, faults.0.at: 5s, windows.reconnect: 8s, objectives.0.max: 1ms}\n"
        f"  - file: {SCENARIOS_DIR}/tool_corrupts_state.yaml\n"
        "    set: {load.users: 120, load.run_time: 20s, faults.0.at: 9s}\n"
    )
    out = tmp_path / "results"
    cli = subprocess.run(
        [sys.executable, "-m", "harness.cli", "drill", str(drill_file), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    output = cli.stdout + cli.stderr
    drills = list(out.iterdir()) if out.exists() else []
    assert len(drills) == 1, output[-3000:]
    drill_dir = drills[0]
    for name in ("drill.json", "drill.md", "drill.html"):
        assert (drill_dir / name).is_file(), output[-3000:]
    drill = json.loads((drill_dir / "drill.json").read_text())
    assert [s["name"] for s in drill["scenarios"]] == ["server_restart", "tool_corrupts_state"]
    for entry in drill["scenarios"]:
        sub = drill_dir / entry["dir"]
        for name in ("result.json", "junit.xml", "summary.md", "report.html"):
            assert (sub / name).is_file(), (sub, name)
        assert json.loads((sub / "result.json").read_text())["verdict"] == entry["verdict"]
        assert entry["rto"]["target_s"] == 30.0
    assert drill["scenarios"][0]["verdict"] == "fail"
    forced = [
        g
        for g in drill["gaps"]
        if g["scenario"] == "server_restart" and g["kind"] == "objective_missed"
    ]
    assert any("failover_s" in g["what"] for g in forced), drill["gaps"]
    assert drill["verdict"] == "fail" and drill["exit_code"] == 1
    assert cli.returncode == 1, output[-3000:]
    html = (drill_dir / "drill.html").read_text()
    assert 'href="server_restart/report.html"' in html and "failover_s" in html
    assert "server_restart" in (drill_dir / "drill.md").read_text()

    assert_missed_objective_in_junit(drill_dir / drill["scenarios"][0]["dir"])
    corrupted = drill_dir / drill["scenarios"][1]["dir"] / "result.json"
    assert_tool_corruption_found_exactly(json.loads(corrupted.read_text()))
