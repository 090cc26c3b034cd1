"""``mcp-harness drill`` end to end on a tiny drill: two small scenarios, each on its own
real stack (server_restart at 30 clients / 20 s; tool_corrupts_state at 60 clients / 30 s),
one objective made impossible. The drill directory must hold drill.json / .md / .html and
one subfolder per scenario with its own result.json and reports; the gaps must name the
forced miss; the exit code is 1 (a missed objective), 0 with --warn-only semantics aside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tiny_drill_through_the_cli(tmp_path: Path) -> None:
    drill_file = tmp_path / "tiny.yaml"
    drill_file.write_text(
        "targets: {rto_s: 30s, rpo_s: 1s, rpo_rows: 0}\n"
        "scenarios:\n"
        f"  - file: {REPO}/scenarios/server_restart.yaml\n"
        "    set: {load.users: 30, load.run_time: 20s, faults.0.at: 6s, objectives.0.max: 1ms}\n"
        f"  - file: {REPO}/scenarios/tool_corrupts_state.yaml\n"
        "    set: {load.users: 60, load.run_time: 30s, faults.0.at: 10s}\n"
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
