"""The shipped runbook scenario at a reduced size, through the CLI as a user runs it: the
primary is killed and nothing is scripted; the runbook watcher finds it, promotes the
standby, and the failover is measured as with a scripted promotion."""

from __future__ import annotations

from pathlib import Path

from harness.shipped import SCENARIOS_DIR
from tests.helpers import run_scenario

DB_FAILOVER_BOUND_S = 10.0
FAULT_AT_S = 8.0
RUN_TIME_S = 24


def test_the_runbook_watcher_promotes_after_a_primary_kill(tmp_path: Path) -> None:
    shipped = (SCENARIOS_DIR / "primary_kill_runbook.yaml").read_text()
    code, result, output = run_scenario(
        tmp_path,
        shipped,
        "-u",
        "60",
        "-t",
        f"{RUN_TIME_S}s",
        "--set",
        f"faults.0.at={FAULT_AT_S:g}s",
    )
    assert result["verdict"] in ("pass", "fail"), output[-3000:]
    assert code == (0 if result["verdict"] == "pass" else 1), output[-3000:]
    assert result["scenario"]["recovery"]["promote_after"] is None

    (fault,) = result["faults"]
    assert fault["kind"] == "kill_primary" and fault["confirmed"] is True
    assert FAULT_AT_S <= fault["t_fault_s"] < FAULT_AT_S + 1.0

    metrics = result["metrics"]
    runbook = metrics["runbook"]
    assert runbook["spec"] == "default" and runbook["interval_s"] == 1.0
    assert runbook["checks"] >= RUN_TIME_S - 6  # one round a second for the whole run
    # The watcher may see the primary gone between the SIGKILL (t_started_s) and the
    # harness's confirmation that every process of the cluster died (t_fault_s).
    killed_s = fault["t_started_s"]
    first = runbook["executions"][0]
    assert first["t_s"] >= killed_s, runbook
    primary = next(s for s in first["steps"] if s["name"] == "primary_connectivity")
    assert primary["outcome"] == "fixed", first
    assert "promoted the standby" in primary["detail"]
    assert runbook["first_degraded_s"] is not None
    assert killed_s <= runbook["first_degraded_s"] <= first["t_s"]
    assert runbook["fixed_s"] is None or runbook["fixed_s"] > first["t_s"]

    assert 0 < metrics["db_failover_s"] < DB_FAILOVER_BOUND_S, runbook
    assert metrics["db_failover_verified_on_promoted_node"] is True
    writes = metrics["writes"]
    assert writes["acknowledged"] > 50
    assert writes["intact"] + writes["lost"] + writes["altered"] == writes["acknowledged"]
    assert writes["phantom"] == 0 and writes["altered"] == 0

    events = [e for row in result["timeline"] for e in row["events"]]
    assert any(e.startswith("kill_primary") for e in events)
    assert any(e.startswith("runbook: primary_connectivity fixed in") for e in events), events
    assert not any(e.startswith("replica promoted") for e in events)  # no scripted promotion
