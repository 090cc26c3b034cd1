"""The gallery (tests/gallery): servers with one defect each that users really ship, each
run through the shipped scenario that exposes it, at reduced size, through the CLI. The
gate must fail each (exit 1) for the right objective; the reference server, on the same
reduced scenario with the same objectives, must pass (exit 0)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.config import Objective
from tests.helpers import run_scenario, uncatalogued

REPO = Path(__file__).resolve().parents[2]
GALLERY = REPO / "tests" / "gallery"
SCENARIOS = REPO / "scenarios"

TOOL_MIX = {"tools/list": 4, "create_note": 2, "get_note": 2}
"""Only the tools every member implements."""
WINDOWS = {"stability": "3s", "reconnect": "15s"}
"""Shrunk with the runs: every fault leaves at least the reconnect window before the end."""
SIZE: dict[str, dict[str, Any]] = {
    # Spawning ends (3 s, 2 s) well before the faults: the baseline starts when it ends.
    # Each run lasts the last fault + the reconnect window, what its objectives need.
    "primary_kill": {"users": 150, "spawn_rate": 50, "run_time": "22s"},
    "server_restart": {"users": 150, "spawn_rate": 50, "run_time": "22s"},
    "connection_drop": {"users": 150, "spawn_rate": 50, "run_time": "28s"},
    "reconnect_storm": {"users": 200, "spawn_rate": 100, "run_time": "22s", "workers": 1},
}
FAULT_TIMES: dict[str, list[dict[str, str]]] = {
    "primary_kill": [{"at": "7s"}],
    "server_restart": [{"at": "7s"}],
    # reset every MCP connection, refuse new ones for a while, then slow the database down
    "connection_drop": [
        {"at": "6s"},
        {"at": "8s", "duration": "3s"},
        {"at": "13s", "duration": "6s"},
        {"at": "13s", "duration": "6s"},
    ],
    "reconnect_storm": [{"at": "7s"}],
}


@dataclass(frozen=True)
class Member:
    module: str
    scenario: str
    caught_by: tuple[str, ...]
    """Objective paths as result.json names them, each one the shipped scenario lists: at
    least one must be missed."""


MEMBERS = [
    Member("ack_before_commit", "primary_kill", ("writes.lost_unintended",)),
    Member("in_band_failure", "primary_kill", ("failover_s",)),
    Member("single_host_pool", "primary_kill", ("failover_s",)),
    Member("refuses_reinitialize", "server_restart", ("reconnect.success_rate",)),
    Member("drops_writes", "primary_kill", ("writes.lost_unintended",)),
    Member("duplicate_on_retry", "connection_drop", ("writes.duplicate",)),
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
    data["windows"] = dict(WINDOWS)
    for fault, times in zip(data["faults"], FAULT_TIMES[scenario], strict=True):
        fault.update(times)
    if command is not None:
        server = data.setdefault("server", {})
        server.pop("json_response", None)  # the reference server's option (members reply JSON)
        server["command"] = command
    return yaml.safe_dump(data, sort_keys=False)


def verdicts(result: dict) -> dict[str, str]:
    return {o["metric"]: o["verdict"] for o in result["objectives"]}


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.module)
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


def test_every_objective_that_catches_a_member_is_shipped() -> None:
    """The gate that fails the gallery is the one users run: no objective added for it."""
    for member in MEMBERS:
        shipped = yaml.safe_load((SCENARIOS / f"{member.scenario}.yaml").read_text())
        paths = {Objective.model_validate(o).path for o in shipped["objectives"]}
        assert set(member.caught_by) <= paths, (member.module, member.caught_by, paths)
