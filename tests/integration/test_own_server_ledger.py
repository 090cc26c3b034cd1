"""A server the harness did not write, through the CLI as a user runs it: its own write
tool and table described by the scenario's ``ledger``, its own invariant as an integrity
check, its own faulty release as a bad deployment, and a point-in-time restore to a time
the user gave. The ledger, read back through the user's SQL, must account for every
acknowledged write on both sides of the restore target."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.catalog import RESTORE_TIMED_STEPS
from tests.helpers import run_scenario

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""

KV_SERVER = Path(__file__).with_name("kv_mcp_server.py")
RESTORE_STEPS = {f"{step}_s" for step in RESTORE_TIMED_STEPS}
"""Every timed restore step, as result.json names them."""
FAULT_AT_S = 11.0
TARGET_S = 10.0
RESTORE_AT_S = 20.0
CLOCK_SLACK_S = 0.25
"""Postgres stamps commits on the wall clock, the ledger on the monotonic one; a write
this close to the target on either side may fall either way."""


def scenario_text() -> str:
    python, server = json.dumps(sys.executable), json.dumps(str(KV_SERVER))
    return f"""
name: own_server_ledger
description: a user's key-value server; faulty release for 4 s; restore to a given time.
seed: 11
server:
  command: [{python}, {server}, --port, "{{port}}"]
  ready: /healthz
load:
  users: 90
  spawn_rate: 90
  run_time: 36s
  think_time: [0.5s, 1.5s]
  tool_mix: {{"tools/list": 1, "create_note": 2}}
ledger:
  tool: put_item
  arguments: {{key: "{{id}}", payload: "{{title}}|{{body}}"}}
  content: "{{title}}|{{body}}"
  read_sql: "SELECT k, v FROM items WHERE k = ANY($1::text[])"
  all_ids_sql: "SELECT k FROM items"
integrity:
  interval: 1s
  checks:
    - name: no_garbage
      sql: "SELECT k, written_at FROM items WHERE v LIKE '%~garbage'"
faults:
  - kind: bad_deployment
    at: {FAULT_AT_S:g}s
    duration: 4s
    command: [{python}, {server}, --port, "{{port}}", --garbage]
recovery:
  promote_after: null
  restore:
    target: time
    target_time: "{TARGET_S:g}s"
    at: {RESTORE_AT_S:g}s
    timeout: 2m
windows:
  stability: 5s
  reconnect: 30s
objectives:
  - {{metric: integrity.after.violations, max: 0}}
  - {{metric: writes.phantom, max: 0}}
  - {{metric: writes.altered, max: 0}}
"""


def load_writes(tmp_path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The Locust clients' writes from the run's records: (first attempt, ack) per id, in
    seconds from the start of the load (the service probe's writes are not in there)."""
    (run_dir,) = (tmp_path / "results").iterdir()
    records = [
        json.loads(line)
        for line in (run_dir / "logs" / "load-records.jsonl").read_text().splitlines()
        if line.strip()
    ]
    t0 = next(r["t"] for r in records if r.get("k") == "users")
    attempted: dict[str, float] = {}
    acked: dict[str, float] = {}
    for r in records:
        if r.get("k") == "write_attempt":
            attempted.setdefault(r["id"], r["t"] - t0)
        elif r.get("k") == "write":
            acked.setdefault(r["id"], r["t"] - t0)
    return attempted, acked


def test_own_server_bad_release_restored_to_a_given_time(tmp_path: Path) -> None:
    code, result, output = run_scenario(tmp_path, scenario_text(), timeout_s=360)
    assert code in (0, 1), output[-4000:]
    (fault,) = result["faults"]
    assert fault["kind"] == "bad_deployment" and fault["confirmed"], fault
    t_fault = fault["t_fault_s"]
    assert FAULT_AT_S <= t_fault < FAULT_AT_S + 4, fault
    assert fault["t_end_s"] > t_fault, fault
    metrics = result["metrics"]

    integrity = metrics["integrity"]
    assert integrity["checks"] == ["no_garbage"]
    assert integrity["baseline"]["violations"] == 0, integrity
    assert integrity["before"]["checks"]["no_garbage"]["violations"] > 0, integrity
    assert integrity["after"]["violations"] == 0, integrity
    assert metrics["time_to_detect_s"] is not None and 0 <= metrics["time_to_detect_s"] < 5

    restore = metrics["restore"]
    assert restore["error"] is None, restore
    assert restore["trigger"] == "scheduled"
    assert restore["target"]["kind"] == "time" and restore["target"]["found_by"] == "given"
    assert abs(restore["target"]["t_s"] - TARGET_S) < 0.05, restore["target"]
    assert restore["started_s"] >= RESTORE_AT_S, restore
    assert set(restore["steps"]) == RESTORE_STEPS, restore["steps"]
    assert all(v is not None and v >= 0 for v in restore["steps"].values()), restore["steps"]
    assert restore["total_s"] is not None and restore["total_s"] > 0
    assert metrics["rto_s"] is not None and metrics["rto_s"] > restore["started_s"] - t_fault

    writes = metrics["writes"]
    assert writes["acknowledged"] > 100, writes
    assert writes["phantom"] == 0 and writes["duplicate"] == 0, writes
    assert writes["altered"] == 0, writes  # every garbage row was after the target
    # Acknowledged after the target, then discarded by the restore (by design): the data loss
    # the restore target chose is its window, rpo_s; nothing else was lost.
    assert writes["lost"] == writes["lost_discarded_by_restore"], writes
    assert writes["lost_unintended"] == 0 and writes["rpo_rows"] == 0, writes
    assert abs(writes["rpo_s"] - (t_fault - TARGET_S)) < 1.5, (writes["rpo_s"], t_fault)

    attempted, acked = load_writes(tmp_path)
    restore_start = restore["started_s"]
    # A load write attempted after the target and acknowledged before the incident committed
    # after the target: it must be lost, discarded by the restore. Only writes acknowledged
    # after the target may be (the service probe's, not in the records, raise the bound).
    surely_lost_before = sum(
        1
        for i, t in acked.items()
        if t < t_fault and attempted.get(i, t) > TARGET_S + CLOCK_SLACK_S
    )
    # Sent before the incident (before or after is by send time) and acknowledged after the
    # target, however late the reply came on a busy machine.
    maybe_lost_before = sum(
        1
        for i, t in acked.items()
        if t > TARGET_S - CLOCK_SLACK_S and attempted.get(i, t) < t_fault
    )
    probe_max = (t_fault - TARGET_S + CLOCK_SLACK_S) / 0.1 + 1
    assert surely_lost_before > 0
    discarded_before = writes["lost_discarded_by_restore"] - writes["lost_after_incident"]
    assert surely_lost_before <= discarded_before <= maybe_lost_before + probe_max, (
        surely_lost_before,
        maybe_lost_before,
        writes,
    )
    # Everything acknowledged from the incident until the restore began is gone.
    lost_after = sum(1 for t in acked.values() if t_fault <= t < restore_start)
    assert lost_after > 0
    probe_after_max = (restore_start - t_fault) / 0.1 + 1
    assert lost_after <= writes["lost_after_incident"] <= lost_after + probe_after_max, (
        lost_after,
        writes,
    )
    # Writes acknowledged well before the target, and those made after the restore, are kept.
    kept = sum(1 for t in acked.values() if t < TARGET_S - CLOCK_SLACK_S or t >= restore_start)
    assert writes["intact"] >= kept, (kept, writes)
