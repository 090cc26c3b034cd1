"""Point-in-time restore on real parts: base backup at up, WAL archive, restore to a restore
point, a time and an LSN (each onto a later timeline), a rebuilt replica, release swaps.

One stack for the module; the tests run in order and each builds on the state the previous
one left (that is the point: restores follow one another on newer timelines).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from harness.config import Scenario, ServerConfig
from harness.stack import RESTORE_STEPS, RestoreFailed, RestoreReport, RestoreTarget, StackError
from harness.stack.local import LocalStack
from harness.stack.mcp_server import reference_server_command
from harness.stack.processes import is_alive

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _query(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def query(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    return run(_query(dsn, sql, *args))


def insert(stack: LocalStack, batch: str, ids: range) -> None:
    """Rows through the app user and the pg-primary proxy, as the server writes."""
    query(
        stack.endpoints.primary_proxy_dsn,
        "INSERT INTO restore_check (id, batch) SELECT i, $1 FROM unnest($2::int[]) AS i",
        batch,
        list(ids),
    )


def batches(stack: LocalStack) -> dict[str, set[int]]:
    rows = query(stack.endpoints.server_database_url, "SELECT id, batch FROM restore_check")
    found: dict[str, set[int]] = {}
    for row in rows:
        found.setdefault(row["batch"], set()).add(row["id"])
    return found


def healthz(stack: LocalStack) -> dict[str, Any]:
    url = stack.endpoints.mcp_url.rsplit("/", 1)[0] + "/healthz"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return dict(json.loads(response.read()))


def check_report(stack: LocalStack, report: RestoreReport, old_port: int) -> None:
    assert [s.name for s in report.steps] == list(RESTORE_STEPS)
    assert all(s.duration_s > 0 for s in report.steps)
    assert report.new_primary_port != old_port
    assert stack.current_primary_port == report.new_primary_port
    assert report.base_backup == stack.base_backups[0].label
    timings = ", ".join(f"{s.name} {s.duration_s:.3f}s" for s in report.steps)
    print(f"\nrestore to {report.target.kind}: {report.duration_s:.2f}s ({timings})")


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    scenario = Scenario.model_validate(
        {
            "name": "restore-test",
            "faults": [{"kind": "kill_primary", "at": 1}],  # a restore point needs a fault
            "recovery": {"promote_after": None, "restore": {"target": "restore_point"}},
        }
    )
    stack = LocalStack(scenario)
    try:
        run(stack.up())
        query(
            stack.endpoints.primary_proxy_dsn,
            "CREATE TABLE restore_check (id int PRIMARY KEY, batch text NOT NULL)",
        )
        yield stack
    finally:
        run(stack.down())
        stack.remove_run_dir()


def test_a_base_backup_is_taken_at_up(stack: LocalStack) -> None:
    (backup,) = stack.base_backups
    assert (backup.path / "backup_manifest").is_file()
    assert (
        (backup.path / "backup_label")
        .read_text()
        .startswith(f"START WAL LOCATION: {backup.start_lsn} ")
    )
    assert backup.taken_at_wall.tzinfo is dt.UTC
    assert 0 < backup.duration_s < 30


def test_restore_to_a_restore_point(stack: LocalStack) -> None:
    database_url = stack.endpoints.server_database_url
    old_port = stack.current_primary_port
    insert(stack, "A", range(1, 6))
    point = run(stack.create_restore_point("before-b"))
    assert point.t_start <= point.t_end and "/" in point.lsn
    insert(stack, "B", range(101, 106))

    report = run(stack.restore(RestoreTarget("restore_point", "before-b"), timeout_s=90))

    check_report(stack, report, old_port)
    assert batches(stack) == {"A": set(range(1, 6))}
    assert stack.endpoints.server_database_url == database_url
    assert healthz(stack)["status"] == "ok"
    insert(stack, "A2", range(6, 8))  # the restored primary takes writes through the same DSN
    assert query(database_url, "SELECT pg_is_in_recovery()")[0][0] is False
    proxies = stack.toxiproxy.proxies()
    assert proxies["pg-primary"].upstream.endswith(f":{report.new_primary_port}")
    assert proxies["pg-replica"].upstream.endswith(f":{report.new_primary_port}")


def test_rebuild_replica_streams_from_the_restored_primary(stack: LocalStack) -> None:
    took = run(stack.rebuild_replica())
    print(f"\nrebuild_replica: {took:.2f}s")
    states = query(stack.current_primary_dsn, "SELECT state FROM pg_stat_replication")
    assert [r["state"] for r in states] == ["streaming"]
    replica_dsn = stack.endpoints.replica_proxy_dsn
    assert query(replica_dsn, "SELECT pg_is_in_recovery()")[0][0] is True
    deadline = time.monotonic() + 10
    while query(replica_dsn, "SELECT count(*) FROM restore_check")[0][0] != 7:
        assert time.monotonic() < deadline, "the rebuilt replica did not catch up"
        time.sleep(0.05)


def test_restore_to_a_time_on_a_later_timeline(stack: LocalStack) -> None:
    old_port = stack.current_primary_port
    insert(stack, "C", range(201, 204))
    time.sleep(0.05)
    moment = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    insert(stack, "D", range(301, 304))

    report = run(stack.restore(RestoreTarget.before(moment), timeout_s=90))

    check_report(stack, report, old_port)
    assert batches(stack) == {"A": set(range(1, 6)), "A2": {6, 7}, "C": {201, 202, 203}}
    assert report.last_replayed_commit is not None
    assert dt.datetime.fromisoformat(report.last_replayed_commit) < moment
    assert healthz(stack)["status"] == "ok"


def test_restore_to_an_lsn(stack: LocalStack) -> None:
    old_port = stack.current_primary_port
    insert(stack, "E", range(401, 403))
    lsn = query(stack.current_primary_dsn, "SELECT pg_current_wal_lsn()::text")[0][0]
    insert(stack, "F", range(501, 503))

    report = run(stack.restore(RestoreTarget("lsn", lsn), timeout_s=90))

    check_report(stack, report, old_port)
    found = batches(stack)
    assert found["E"] == {401, 402} and "F" not in found and "D" not in found
    assert healthz(stack)["status"] == "ok"


def test_deploy_release_swaps_every_instance_in_place(stack: LocalStack) -> None:
    port = stack.servers[0].port
    rollout = run(stack.deploy_release(fault_mode="write-garbage"))
    print(f"\ndeploy_release(fault_mode=write-garbage): {rollout.duration_s:.2f}s")
    assert 0 < rollout.duration_s < 30
    assert healthz(stack)["fault_mode"] == "write-garbage"
    faulty_argv = [*reference_server_command(ServerConfig()), "--fault-mode", "corrupt-state"]
    rollout = run(stack.deploy_release(command=faulty_argv))
    print(f"deploy_release(command=...): {rollout.duration_s:.2f}s")
    assert healthz(stack)["fault_mode"] == "corrupt-state"
    rollout = run(stack.deploy_release())
    print(f"deploy_release(): {rollout.duration_s:.2f}s")
    assert healthz(stack)["fault_mode"] == "none"
    assert stack.servers[0].port == port
    names = [p.name for p in stack.registry.processes if p.name.startswith("mcp-server")]
    assert len(names) == len(set(names)), "every life of the server has its own log"
    with pytest.raises(StackError, match="not both"):
        run(stack.deploy_release(command=faulty_argv, fault_mode="write-garbage"))


def test_an_unreachable_target_fails_at_replay_with_a_hint(stack: LocalStack) -> None:
    with pytest.raises(RestoreFailed) as failed:
        run(stack.restore(RestoreTarget("restore_point", "never-created"), timeout_s=60))
    assert failed.value.step == "replay_wal"
    assert [s.name for s in failed.value.steps] == ["stop", "restore_base_backup"]
    assert "archive ends before the target" in str(failed.value)


def test_down_stops_and_removes_every_cluster_and_backup(stack: LocalStack) -> None:
    pids = [p.pid for p in stack.registry.processes]
    run(stack.down())
    assert not any(is_alive(pid) for pid in pids)
    run_dir = stack.run_dir
    leftovers = [p.name for p in Path(run_dir).iterdir() if p.name != "logs"]
    assert leftovers == [], leftovers
    assert len([n for n in stack.clusters if n.startswith("primary-r")]) == 4
