"""The release gate as CI runs it: ``mcp-harness run`` on the shipped reconnect-storm
scenario, its objectives unchanged, once against a server written the way a team
typically writes one (``examples/notes_server.py``: MCP SDK defaults, a plain asyncpg
pool, no storm protections) and once against the reference server.

Both runs use the same reduced size (2,000 clients as shipped, but the fault at 12 s
instead of 30 s, a 31 s reconnect window instead of 40 s and 43 s of load instead of 75 s:
each run about 55 s on a 2-core machine) and differ only in ``server.command``. The example must fail the gate on
figures it measured (exit 1, the missed objectives named in the CLI output, in
junit.xml and in result.json with the measured value on the wrong side of the target).
The reference server passes the same objectives in tests/integration/test_gallery.py, at a
size this machine serves without saturating its load generator (at 2,000 clients the
per-phase saturation rule rightly makes the reference's run inconclusive here).

Sizes were chosen from hand runs on this 2-core machine (examples/README.md has the
figures): at 1,000 or 1,500 clients the example keeps up and meets its reconnect
objectives; at 2,000 the restarted process cannot absorb the herd and every run missed
``reconnect.time_to_reconnect_s.p99`` (36-40 s against 30 s) or
``reconnect.success_rate`` (24-88% against 99%), or both. A much faster runner may need
more clients to make the example fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.shipped import SCENARIOS_DIR
from harness.stack.processes import proc_start_ticks

REPO = Path(__file__).resolve().parents[2]
SCENARIO = SCENARIOS_DIR / "reconnect_storm.yaml"
EXAMPLE = REPO / "examples" / "notes_server.py"
SIZE = ("-t", "43s", "--set", "faults.0.at=12s", "--set", "windows.reconnect=31s")
"""Shorter than shipped: 2,000 clients as shipped, the fault 2 s after spawning ends, and
a reconnect window just over the 30 s objective (a client still out after it took at
least 31 s: a miss either way), closing before the load ends."""
RECONNECT_OBJECTIVES = {"reconnect.success_rate", "reconnect.time_to_reconnect_s.p99"}


def run_gate(tmp_path: Path, *flags: str) -> tuple[int, dict, str, Path]:
    """``python -m harness.cli run scenarios/reconnect_storm.yaml`` as a CI job runs it;
    (exit code, result.json, stdout + stderr, run directory)."""
    out = tmp_path / "results"
    cli = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(SCENARIO), "--out", str(out)]
        + [*SIZE, *flags],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    output = cli.stdout + cli.stderr
    runs = list(out.iterdir()) if out.exists() else []
    assert len(runs) == 1, output[-3000:]
    run_dir = runs[0]
    return cli.returncode, json.loads((run_dir / "result.json").read_text()), output, run_dir


def objectives_by_metric(result: dict) -> dict[str, dict]:
    return {o["metric"]: o for o in result["objectives"]}


def on_wrong_side(objective: dict) -> bool:
    """The measured value is past the target; a figure that landed on a client not back
    within the window has none, and took at least ``measured_at_least``."""
    measured, target = objective["measured"], objective["target"]
    if measured is None:
        at_least = objective["measured_at_least"]
        return objective["bound"] == "max" and at_least is not None and at_least >= target
    return measured > target if objective["bound"] == "max" else measured < target


def assert_run_left_nothing(run_dir: Path) -> None:
    """Every process the run started (the example server included) has exited."""
    for proc in json.loads((run_dir / "logs" / "processes.json").read_text()):
        assert proc["exit_code"] is not None, proc
        # A pid reused since has another start time.
        assert proc_start_ticks(proc["pid"]) != proc["start_ticks"], f"still running: {proc}"


def test_the_gate_fails_a_typical_server_on_the_reconnect_storm(tmp_path: Path) -> None:
    command = json.dumps([sys.executable, str(EXAMPLE), "--port", "{port}"])
    # json_response is the reference server's option: the example answers as the SDK does
    # by default, and the scenario must say so rather than claim JSON replies.
    code, result, output, run_dir = run_gate(
        tmp_path, "--set", f"server.command={command}", "--set", "server.json_response=false"
    )

    assert result["scenario"]["server"]["command"][1] == str(EXAMPLE)
    assert result["faults"][0]["kind"] == "kill_server" and result["faults"][0]["confirmed"]
    objectives = objectives_by_metric(result)
    # Never a pass. At 2,000 clients on 2 cores the load generator can be saturated during
    # the storm: then the harness refuses to judge the figures it measured (exit 3), and
    # says why on exactly those objectives.
    assert result["verdict"] in ("fail", "inconclusive"), output[-3000:]
    if result["verdict"] == "inconclusive":
        assert code == 3, output[-3000:]
        assert result["metrics"]["generator"]["by_phase"], result["metrics"]["generator"]
        unjudged = [o for o in objectives.values() if o["verdict"] == "not_measured"]
        assert any("saturated" in (o["reason"] or "") for o in unjudged), unjudged
        return
    assert code == 1, output[-3000:]

    missed = {m for m, o in objectives.items() if o["verdict"] == "missed"}
    # The reason is the storm itself: clients that lost their session did not come back
    # in time. Which of the two reconnect objectives goes first varies from run to run.
    assert missed & RECONNECT_OBJECTIVES, objectives
    for metric in missed:
        assert on_wrong_side(objectives[metric]), objectives[metric]
        row = re.compile(rf"{re.escape(metric)}\s.*\bmissed\b")
        assert any(row.search(line) for line in output.splitlines()), output[-3000:]
    assert "verdict: FAIL" in output

    junit = ET.parse(run_dir / "junit.xml").getroot()
    failed = {
        case.get("name")
        for case in junit.iter("testcase")
        for failure in case.iter("failure")
        if failure.get("type") == "objective missed"
    }
    assert failed == missed, ET.tostring(junit, encoding="unicode")[:3000]

    reconnect = result["metrics"]["reconnect"]
    assert reconnect["clients_broken"] >= 300, reconnect
    # Not sabotage: every write the example acknowledged is in its table, unaltered.
    writes = result["metrics"]["writes"]
    assert writes["acknowledged"] > 500, writes
    assert writes["lost"] == 0 and writes["altered"] == 0, writes
    assert writes["intact"] == writes["acknowledged"], writes
    assert_run_left_nothing(run_dir)
