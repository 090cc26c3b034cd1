"""The writer endpoint (``topology.writer: endpoint``) on the real stack: a server
configured with one host and port, which never fails over on the multi-host DSN (the
gallery's ``single_host_pool`` misses ``failover_s`` there), follows the primary when its
one address moves to the promoted node, and is judged on its real recovery."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from tests.helpers import run_scenario
from tests.integration.test_gallery import GALLERY, reduced

MOVE_DELAY_S = 1.0


def test_a_single_host_server_follows_a_writer_endpoint(tmp_path: Path) -> None:
    command = [sys.executable, str(GALLERY / "single_host_pool.py"), "--port", "{port}"]
    scenario = yaml.safe_load(reduced("primary_kill", command))
    scenario["topology"] = {"writer": "endpoint", "endpoint_move_delay": f"{MOVE_DELAY_S:g}s"}
    code, result, output = run_scenario(tmp_path, yaml.safe_dump(scenario), timeout_s=300)

    (fault,) = result["faults"]
    assert fault["kind"] == "kill_primary" and fault["confirmed"], fault
    events = [(row["t_s"], e) for row in result["timeline"] for e in row["events"]]
    promoted = next(t for t, e in events if e.startswith("replica promoted"))
    moved = [t for t, e in events if e.startswith("writer endpoint moved to replica")]
    assert len(moved) == 1 and moved[0] >= promoted, events
    metrics = result["metrics"]
    # The write probe writes through the server's address: the database is writable there
    # once the promotion is done and the endpoint has moved.
    promote_after = result["scenario"]["recovery"]["promote_after"]
    assert metrics["db_failover_s"] >= promote_after + MOVE_DELAY_S, metrics["db_failover_s"]
    # its one address now reaches the promoted node: writes work again, none is lost
    assert metrics["failover_s"] is not None, (result["objectives"], output[-3000:])
    assert metrics["failover_s"] >= metrics["db_failover_s"] - 0.5
    assert metrics["writes"]["lost_unintended"] == 0, metrics["writes"]
    assert code == 0, ([o for o in result["objectives"] if o["verdict"] != "met"], output[-3000:])
