"""Two shipped corruption scenarios at reduced sizes, through the CLI as a user runs them:
damage under real MCP load, detection, a real point-in-time restore, and the ledger
checked against what happened. The third, tool_corrupts_state, runs inside the drill's
live test (tests/integration/test_drill_live.py) with ``assert_tool_corruption_found_exactly``."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.catalog import RESTORE_TIMED_STEPS
from harness.shipped import SCENARIOS_DIR
from tests.helpers import run_scenario

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""

RESTORE_STEPS = {f"{step}_s" for step in RESTORE_TIMED_STEPS}
"""Every timed restore step, as result.json names them."""


def run_shipped(tmp_path: Path, name: str, *flags: str) -> tuple[dict, dict]:
    """Run a shipped scenario with ``flags``; (result.json, its one confirmed fault)."""
    code, result, output = run_scenario(
        tmp_path, (SCENARIOS_DIR / name).read_text(), *flags, timeout_s=360
    )
    assert code in (0, 1), output[-4000:]
    (fault,) = result["faults"]
    assert fault["confirmed"], fault
    return result, fault


def assert_restored(metrics: dict) -> dict:
    restore = metrics["restore"]
    assert restore["error"] is None, restore
    assert set(restore["steps"]) == RESTORE_STEPS
    assert all(v is not None and v >= 0 for v in restore["steps"].values()), restore["steps"]
    assert restore["total_s"] is not None and restore["total_s"] > 0
    assert restore["started_s"] > restore["t_trigger_s"] > 0
    assert metrics["integrity"]["after"]["violations"] == 0
    assert metrics["rto_s"] is not None and metrics["rto_s"] > metrics["time_to_detect_s"]
    return restore


def test_pitr_restore_to_the_restore_point_keeps_exactly_the_writes_before_it(
    tmp_path: Path,
) -> None:
    result, fault = run_shipped(
        tmp_path, "pitr_restore.yaml",
        "-u", "120", "-t", "32s", "--set", "faults.0.at=10s"
    )  # fmt: skip
    assert fault["damage"]["updated"] > 0, fault
    metrics = result["metrics"]
    assert metrics["time_to_detect_s"] is not None and metrics["time_to_detect_s"] < 5
    assert metrics["integrity"]["before"]["violations"] > 0
    restore = assert_restored(metrics)
    assert restore["target"]["kind"] == "restore_point"
    writes = metrics["writes"]
    boundary = writes["restore_boundary"]
    assert boundary["violations"] == 0, boundary
    assert boundary["acked_before"] > 100 and boundary["started_after"] > 0, boundary
    assert writes["lost_after_incident"] > 0
    assert writes["phantom"] == 0 and writes["altered"] == 0
    assert 0 <= writes["rpo_s"] < 1.0


def test_bad_deployment_is_restored_to_just_before_the_first_bad_commit(tmp_path: Path) -> None:
    result, fault = run_shipped(
        tmp_path, "bad_deployment.yaml",
        "-u", "120", "-t", "36s", "--set", "faults.0.at=10s", "--set", "faults.0.duration=5s",
        "--set", "recovery.restore.after_detection=6s"
    )  # fmt: skip
    assert fault["kind"] == "bad_deployment", fault
    assert fault["t_end_s"] > fault["t_fault_s"]
    metrics = result["metrics"]
    assert metrics["time_to_detect_s"] is not None
    assert metrics["integrity"]["before"]["checks"]["checksum"]["violations"] > 0
    restore = assert_restored(metrics)
    assert restore["target"]["kind"] == "earliest_damage"
    assert "earliest damage" in restore["target"]["found_by"]
    assert restore["target"]["t_s"] >= fault["t_fault_s"] - 1.0
    writes = metrics["writes"]
    assert writes["altered"] == 0 and writes["phantom"] == 0, writes
    assert writes["rpo_rows"] == 0, writes
    assert writes["lost_after_incident"] > 0
