"""The gallery (tests/gallery): servers with one defect each that users really ship, each
run through the shipped scenario that exposes it, at reduced size, through the CLI. The
gate must fail each (exit 1) for the right objective; the reference server, on the same
reduced scenario with the same objectives, must pass (exit 0), and its primary-kill run
must leave the whole record a user reads (``assert_a_whole_primary_kill_record``).

Members caught on a count of writes or reconnects run beside other such tests; the
reference runs and the members caught on a time or a latency have the machine alone."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.catalog import PHASES
from harness.config import Objective
from harness.shipped import SCENARIOS_DIR
from harness.stack.processes import is_alive
from tests.helpers import run_scenario, uncatalogued

REPO = Path(__file__).resolve().parents[2]
GALLERY = REPO / "tests" / "gallery"
SCENARIOS = SCENARIOS_DIR

TOOL_MIX = {"tools/list": 4, "create_note": 2, "get_note": 2}
"""Only the tools every member implements."""
STABILITY_WINDOW = "3s"
RECONNECT_WINDOW = {
    # What each shipped scenario's objectives need after its last fault: failover_s (10 s)
    # must be decidable for a server that never recovers, a restarted server's clients
    # back off up to 5 s between attempts.
    "primary_kill": "10s",
    "server_restart": "15s",
    "connection_drop": "10s",
    "reconnect_storm": "15s",
}
SIZE: dict[str, dict[str, Any]] = {
    # Spawning ends (2 s) well before the first fault: the baseline starts when it ends.
    # Each run lasts its last fault + its reconnect window (+ 2 s for a primary kill, so
    # that a server that never recovers misses failover_s rather than leaving it open).
    "primary_kill": {"users": 80, "spawn_rate": 40, "run_time": "19s"},
    "server_restart": {"users": 80, "spawn_rate": 40, "run_time": "21s"},
    "connection_drop": {"users": 80, "spawn_rate": 40, "run_time": "20s"},
    "reconnect_storm": {"users": 500, "spawn_rate": 250, "run_time": "21s", "workers": 1},
}
FAULT_TIMES: dict[str, list[dict[str, str]]] = {
    "primary_kill": [{"at": "7s"}],
    "server_restart": [{"at": "6s"}],
    # reset every MCP connection, refuse new ones for a while, then slow the database down
    "connection_drop": [
        {"at": "5s"},
        {"at": "7s", "duration": "2s"},
        {"at": "10s", "duration": "4s"},
        {"at": "10s", "duration": "4s"},
    ],
    "reconnect_storm": [{"at": "6s"}],
}


@dataclass(frozen=True)
class Member:
    module: str
    scenario: str
    caught_by: tuple[str, ...]
    """Objective paths as result.json names them, each one the shipped scenario lists: at
    least one must be missed."""
    shares_machine: bool = False
    """The figure that catches it is a count no doubt touches (lost or duplicate writes,
    failed reconnects): its run may share the machine. A member caught on a time or a
    latency runs alone, as the reference runs do, whose latency objectives must be met."""


MEMBERS = [
    Member("ack_before_commit", "primary_kill", ("writes.lost_unintended",), shares_machine=True),
    Member("in_band_failure", "primary_kill", ("failover_s",)),
    Member("single_host_pool", "primary_kill", ("failover_s",)),
    Member(
        "refuses_reinitialize", "server_restart", ("reconnect.success_rate",), shares_machine=True
    ),
    Member("drops_writes", "primary_kill", ("writes.lost_unintended",), shares_machine=True),
    Member("duplicate_on_retry", "connection_drop", ("writes.duplicate",), shares_machine=True),
    Member(
        "slow_tools_list",
        "reconnect_storm",
        ("tools_list_latency_ms.storm.p99", "tools_list_latency_ms.recovered.p99"),
    ),
]


def reduced(scenario: str, command: list[str] | None = None) -> str:
    """The shipped scenario at reduced size with the gallery's objectives; the server is
    ``command`` (None: the reference server)."""
    data = yaml.safe_load((SCENARIOS / f"{scenario}.yaml").read_text())
    data["load"].update(SIZE[scenario], tool_mix=TOOL_MIX)
    data["windows"] = {"stability": STABILITY_WINDOW, "reconnect": RECONNECT_WINDOW[scenario]}
    for fault, times in zip(data["faults"], FAULT_TIMES[scenario], strict=True):
        fault.update(times)
    if command is not None:
        server = data.setdefault("server", {})
        server.pop("json_response", None)  # the reference server's option (members reply JSON)
        server["command"] = command
    return yaml.safe_dump(data, sort_keys=False)


def verdicts(result: dict) -> dict[str, str]:
    return {o["metric"]: o["verdict"] for o in result["objectives"]}


@pytest.mark.parametrize(
    "member",
    [
        pytest.param(m, id=m.module, marks=[pytest.mark.shares_machine] * m.shares_machine)
        for m in MEMBERS
    ],
)
def test_the_gate_fails_the_member_for_its_defect(tmp_path: Path, member: Member) -> None:
    server = GALLERY / f"{member.module}.py"
    command = [sys.executable, str(server), "--port", "{port}"]
    code, result, output = run_scenario(tmp_path, reduced(member.scenario, command), timeout_s=300)

    assert result["scenario"]["server"]["command"][1] == str(server)
    assert result["faults"] and all(f["confirmed"] for f in result["faults"]), result["faults"]
    judged = verdicts(result)
    assert any(judged.get(metric) == "missed" for metric in member.caught_by), (
        member.caught_by,
        result["objectives"],
        output[-3000:],
    )
    assert result["verdict"] == "fail" and code == 1, (result["doubts"], output[-3000:])


@pytest.mark.parametrize("scenario", sorted({m.scenario for m in MEMBERS}))
def test_the_gate_passes_the_reference_server(tmp_path: Path, scenario: str) -> None:
    code, result, output = run_scenario(tmp_path, reduced(scenario), timeout_s=300)

    assert result["scenario"]["server"]["command"] is None
    assert not uncatalogued(result)
    not_met = [o for o in result["objectives"] if o["verdict"] != "met"]
    assert code == 0, (not_met, result["doubts"], output[-3000:])
    if scenario == "primary_kill":
        (run_dir,) = (tmp_path / "results").iterdir()
        assert_a_whole_primary_kill_record(run_dir, result, output)


def assert_a_whole_primary_kill_record(run_dir: Path, result: dict, output: str) -> None:
    """What a user reads after a primary kill: the fault where it was asked for, the
    failover measured on the promoted node, every write accounted for, the phases in order,
    a timeline row per second, the logs and versions, and no process left running."""
    fault_at_s = float(FAULT_TIMES["primary_kill"][0]["at"].removesuffix("s"))
    run_time_s = int(SIZE["primary_kill"]["run_time"].removesuffix("s"))
    (fault,) = result["faults"]
    assert fault["kind"] == "kill_primary" and fault["confirmed"] is True
    assert fault_at_s <= fault["t_fault_s"] < fault_at_s + 1.0

    metrics = result["metrics"]
    assert 0 < metrics["db_failover_s"] < 10
    assert metrics["db_failover_s"] >= result["scenario"]["recovery"]["promote_after"]
    assert metrics["db_failover_verified_on_promoted_node"] is True
    assert metrics["failover_s"] >= metrics["db_failover_s"] - 0.5

    writes = metrics["writes"]
    assert writes["acknowledged"] > 100
    assert writes["intact"] + writes["lost"] + writes["altered"] == writes["acknowledged"]
    assert writes["phantom"] == 0

    spans = {p["name"]: p for p in result["phases"]}
    assert [p["name"] for p in result["phases"]][:3] == ["ramp", "baseline", "disruption"]
    assert spans["ramp"]["end_s"] == spans["baseline"]["start_s"] < fault_at_s
    latency = metrics["tools_list_latency_ms"]
    assert latency["baseline"]["count"] > 100 and latency["baseline"]["p99"] is not None
    assert set(latency) == {*PHASES, "all", "fault_window"}
    assert len(result["timeline"]) >= run_time_s
    assert any(e.startswith("kill_primary") for row in result["timeline"] for e in row["events"])

    for log in ("postgres-primary", "postgres-replica", "toxiproxy", "mcp-server"):
        assert (run_dir / "logs" / f"{log}.log").exists(), log
    assert (run_dir / "logs" / "scenario.yaml").exists()
    for key in ("postgres", "toxiproxy", "mcp_sdk", "locust", "python"):
        assert result["environment"][key], key
    assert "db_failover_s" in output and "verdict" in output
    started = json.loads((run_dir / "logs" / "processes.json").read_text())
    assert {p["name"] for p in started} >= {
        "toxiproxy",
        "postgres-primary",
        "postgres-replica",
        "mcp-server",
        "locust-master",
    }
    assert not [p for p in started if is_alive(p["pid"], p["start_ticks"])]


def test_every_objective_that_catches_a_member_is_shipped() -> None:
    """The gate that fails the gallery is the one users run: no objective added for it."""
    for member in MEMBERS:
        shipped = yaml.safe_load((SCENARIOS / f"{member.scenario}.yaml").read_text())
        paths = {Objective.model_validate(o).path for o in shipped["objectives"]}
        assert set(member.caught_by) <= paths, (member.module, member.caught_by, paths)
