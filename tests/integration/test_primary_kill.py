"""The shipped primary-kill scenario at a reduced size, through the CLI as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.stack.processes import is_alive

REPO = Path(__file__).resolve().parents[2]
DB_FAILOVER_BOUND_S = 10.0
FAULT_AT_S = 10.0
RUN_TIME_S = 22


def test_kill_primary_then_promote(tmp_path: Path) -> None:
    cli = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(REPO / "scenarios" / "primary_kill.yaml"),
         "-u", "100", "-r", "50", "-t", f"{RUN_TIME_S}s", "--set", f"faults.0.at={FAULT_AT_S:g}s",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert cli.returncode in (0, 1), cli.stdout[-3000:] + cli.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["verdict"] in ("pass", "fail")
    assert cli.returncode == (0 if result["verdict"] == "pass" else 1)

    (fault,) = result["faults"]
    assert fault["kind"] == "kill_primary" and fault["confirmed"] is True
    assert FAULT_AT_S <= fault["t_fault_s"] < FAULT_AT_S + 1.0

    metrics = result["metrics"]
    assert 0 < metrics["db_failover_s"] < DB_FAILOVER_BOUND_S
    assert metrics["db_failover_s"] >= result["scenario"]["recovery"]["promote_after"]
    assert metrics["db_failover_verified_on_promoted_node"] is True
    assert (
        metrics["failover_s"] is not None
        and metrics["failover_s"] >= metrics["db_failover_s"] - 0.5
    )

    writes = metrics["writes"]
    assert writes["acknowledged"] > 100
    assert writes["intact"] + writes["lost"] + writes["altered"] == writes["acknowledged"]
    assert writes["phantom"] == 0

    phases = [p["name"] for p in result["phases"]]
    assert phases[:3] == ["ramp", "baseline", "disruption"]
    spans = {p["name"]: p for p in result["phases"]}
    assert spans["ramp"]["end_s"] == spans["baseline"]["start_s"] < FAULT_AT_S
    latency = metrics["tools_list_latency_ms"]
    assert latency["baseline"]["count"] > 100 and latency["baseline"]["p99"] is not None
    assert set(latency) == {
        "ramp",
        "baseline",
        "disruption",
        "storm",
        "recovered",
        "all",
        "fault_window",
    }
    assert {o["verdict"] for o in result["objectives"]} <= {"met", "missed"}
    assert len(result["timeline"]) >= RUN_TIME_S
    assert any(e.startswith("kill_primary") for row in result["timeline"] for e in row["events"])
    for log in (
        "postgres-primary.log",
        "postgres-replica.log",
        "toxiproxy.log",
        "mcp-server.log",
        "scenario.yaml",
    ):
        assert (run_dir / "logs" / log).exists(), log
    for key in ("postgres", "toxiproxy", "mcp_sdk", "locust", "python"):
        assert result["environment"][key], key
    assert "db_failover_s" in cli.stdout and "verdict" in cli.stdout
    started = json.loads((run_dir / "logs" / "processes.json").read_text())
    assert {p["name"] for p in started} >= {
        "toxiproxy",
        "postgres-primary",
        "postgres-replica",
        "mcp-server",
        "locust-master",
    }
    assert not [p for p in started if is_alive(p["pid"], p["start_ticks"])]
