"""PgBouncer in the path (``scenarios/primary_kill_pgbouncer.yaml`` at reduced size) on
the real parts: the reference server reaches Postgres only through PgBouncer in
transaction pooling, PgBouncer only through the writer endpoint, and the primary is
killed. The first write through the pooler must commit on the promoted node after the
endpoint moved there, the errors writes met on the way are recorded by kind, nothing
acknowledged is lost, and PgBouncer is stopped with the rest of the stack.

Its figures are orderings and counts, not bounds on how fast: it shares the machine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from harness.config import Scenario
from harness.stack.local import LocalStack
from harness.stack.postgres import StackError
from harness.stack.processes import is_alive
from tests.helpers import assert_run_left_no_process, run_scenario, shipped_scenario

MOVE_DELAY_S = 1.0
KILL_AT_S = 7.0


@pytest.mark.shares_machine
def test_a_primary_kill_through_pgbouncer_fails_over_once_the_endpoint_moved(
    tmp_path: Path,
) -> None:
    scenario = shipped_scenario(
        "primary_kill_pgbouncer",
        fault_at_s=KILL_AT_S,
        windows={"stability": "3s", "reconnect": "9s"},
    )
    assert scenario["topology"]["endpoint_move_delay"] == f"{MOVE_DELAY_S:g}s"
    scenario["load"].update(users=60, spawn_rate=30, run_time="18s")
    code, result, output = run_scenario(tmp_path, yaml.safe_dump(scenario), timeout_s=300)

    (fault,) = result["faults"]
    assert fault["kind"] == "kill_primary" and fault["confirmed"], (fault, output[-3000:])
    metrics = result["metrics"]
    path = metrics["writer_path"]
    promote_after = result["scenario"]["recovery"]["promote_after"]
    assert path["endpoint_moved_s"] >= promote_after + MOVE_DELAY_S, path
    # the scripted promotion began promote_after the kill; the rest is the promotion's leg
    assert path["detection_s"] >= promote_after, path
    assert metrics["db_failover_s"] == pytest.approx(
        path["detection_s"] + path["promotion_s"], abs=1e-6
    )
    # The first write through the pooler committed on the promoted node after the move,
    # and db_failover_s is the sum of the two legs.
    assert path["first_write_after_move_s"] > 0, path
    assert metrics["db_failover_s"] == pytest.approx(
        path["endpoint_moved_s"] + path["first_write_after_move_s"], abs=1e-6
    )
    assert sum(path["write_errors_by_kind"].values()) > 0, path
    # PgBouncer's own log on the timeline: it lost its server connections at the kill and
    # connected through the endpoint once it moved
    when = {e: row["t_s"] for row in result["timeline"] for e in row["events"]}
    lost = [t for e, t in when.items() if e.startswith("pgbouncer: lost a server connection")]
    assert lost and KILL_AT_S - 1 <= lost[0] <= KILL_AT_S + 2, when
    moved = when["pgbouncer: connected through the moved endpoint"]
    assert int(KILL_AT_S + path["endpoint_moved_s"]) - 1 <= moved, when
    assert metrics["writes"]["lost_unintended"] == 0 and metrics["writes"]["duplicate"] == 0
    assert metrics["failover_s"] is not None, (result["objectives"], output[-3000:])

    # Transaction pooling with the reference server's statement cache off: no tool call
    # fails before the kill (with asyncpg's default cache, about a third did).
    before_kill = [row for row in result["timeline"] if row["t_s"] < KILL_AT_S]
    assert before_kill and not any(row["errors_per_s"] for row in before_kill), before_kill

    assert result["environment"]["pgbouncer"].startswith("1."), result["environment"]
    (run_dir,) = (tmp_path / "results").iterdir()
    assert_run_left_no_process(run_dir, {"pgbouncer"})
    assert code in (0, 1), output[-3000:]  # judged, not inconclusive


@pytest.mark.shares_machine
def test_a_pooler_that_never_comes_up_is_named_with_its_log_and_nothing_is_left() -> None:
    scenario = Scenario(
        name="t",
        topology={"writer": "endpoint", "pooler": {"settings": {"max_client_conn": "many"}}},
    )
    stack = LocalStack(scenario)
    try:
        with pytest.raises(StackError, match="pgbouncer did not come up") as failed:
            asyncio.run(stack.up())
        assert "max_client_conn" in str(failed.value)  # the log's tail says what is wrong
        inventory = stack.inventory()
        assert {"pgbouncer", "postgres-primary", "toxiproxy"} <= {p["name"] for p in inventory}
        assert not [p for p in inventory if is_alive(p["pid"], p["start_ticks"])], inventory
        assert not [c for c in stack.clusters.values() if c.data_dir.exists()]
    finally:
        stack.remove_run_dir()
