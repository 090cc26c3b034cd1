"""The local stack on real parts: Postgres primary + streaming replica, Toxiproxy, the server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from harness.config import Scenario
from harness.stack import PROXY_NAMES
from harness.stack.local import RUN_DIR_PREFIX, LocalStack
from harness.stack.processes import is_alive
from harness.stack.toxiproxy import ToxiproxyError
from tests.helpers import harness_process_pids


def fetchval(dsn: str, sql: str) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_topology_has_a_proxy_on_every_hop(local_stack: LocalStack) -> None:
    proxies = local_stack.toxiproxy.proxies()
    assert sorted(proxies) == sorted(PROXY_NAMES)
    primary, replica = local_stack.clusters["primary"], local_stack.clusters["replica"]
    assert proxies["pg-primary"].upstream.endswith(f":{primary.port}")
    assert proxies["pg-replica"].upstream.endswith(f":{replica.port}")
    assert proxies["pg-replication"].upstream.endswith(f":{primary.port}")
    for proxy in proxies.values():
        assert proxy.listen.startswith("127.0.0.1:")


def test_replica_streams_through_the_replication_proxy(local_stack: LocalStack) -> None:
    endpoints = local_stack.endpoints
    assert fetchval(endpoints.replica_dsn, "SELECT pg_is_in_recovery()") is True
    assert fetchval(endpoints.primary_dsn, "SELECT pg_is_in_recovery()") is False
    replication_port = local_stack.toxiproxy.proxy("pg-replication").listen_port
    conninfo = str(fetchval(endpoints.replica_dsn, "SELECT conninfo FROM pg_stat_wal_receiver"))
    assert f"port={replication_port}" in conninfo
    assert "password=********" in conninfo or "password" not in conninfo


def test_server_dsn_reaches_the_primary_through_the_proxies(local_stack: LocalStack) -> None:
    url = local_stack.endpoints.server_database_url
    assert "target_session_attrs=read-write" in url
    assert (
        fetchval(url, "SELECT current_setting('port')::int") == local_stack.clusters["primary"].port
    )


def test_mcp_server_answers_through_its_proxy(local_stack: LocalStack) -> None:
    url = local_stack.endpoints.mcp_url.rsplit("/", 1)[0] + "/healthz"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert json.loads(response.read())["status"] == "ok"


def test_toxics_take_effect_and_errors_raise(local_stack: LocalStack) -> None:
    client = local_stack.toxiproxy
    dsn = local_stack.endpoints.primary_proxy_dsn

    async def timed_query() -> float:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            started = time.monotonic()
            await conn.fetchval("SELECT 1")
            return time.monotonic() - started
        finally:
            await conn.close()

    client.add_toxic(
        "pg-primary", "latency", name="slow", stream="downstream", attributes={"latency": 300}
    )
    try:
        assert [t.name for t in client.toxics("pg-primary")] == ["slow"]
        assert asyncio.run(timed_query()) >= 0.29
    finally:
        client.remove_toxic("pg-primary", "slow")
    assert asyncio.run(timed_query()) < 0.25
    with pytest.raises(ToxiproxyError, match="404"):
        client.add_toxic("no-such-proxy", "latency", attributes={"latency": 1})
    with pytest.raises(ToxiproxyError, match="unknown toxic type"):
        client.add_toxic("pg-primary", "gremlins")
    with pytest.raises(ToxiproxyError, match="409"):
        client.create_proxy("mcp", "127.0.0.1:0", "127.0.0.1:1")


def test_down_leaves_no_process_behind() -> None:
    before = harness_process_pids()
    stack = LocalStack(Scenario(name="test-down"))
    asyncio.run(stack.up())
    started = [p.pid for p in stack.registry.processes]
    assert len(started) == 4  # toxiproxy, primary, replica, server
    assert harness_process_pids() - before
    asyncio.run(stack.down())
    stack.remove_run_dir()
    assert not any(is_alive(pid) for pid in started)
    assert harness_process_pids() - before == set()


def test_a_killed_harness_is_cleaned_up_by_the_next_start(tmp_path: Path) -> None:
    """`mcp-harness up` is SIGKILLed (no cleanup runs); the next stack start removes its leftovers."""
    before = harness_process_pids()
    up = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert up.stdout is not None
        line = up.stdout.readline()
        endpoints = json.loads(line)
        run_dir = Path(endpoints["run_dir"])
        assert run_dir.name.startswith(RUN_DIR_PREFIX)
        owner = json.loads((run_dir / "owner.json").read_text())
        orphans = [p["pid"] for p in owner["processes"]]
        assert orphans and all(is_alive(pid) for pid in orphans)
    finally:
        os.kill(up.pid, signal.SIGKILL)
        up.wait(10)
    assert all(is_alive(pid) for pid in orphans), (
        "killing the harness alone must not stop its children"
    )
    stack = LocalStack(Scenario(name="test-reaper"))
    asyncio.run(stack.up())
    try:
        assert not run_dir.exists()
        assert not any(is_alive(pid) for pid in orphans)
    finally:
        asyncio.run(stack.down())
        stack.remove_run_dir()
    assert harness_process_pids() - before == set()


def test_a_taken_port_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every part's first port is already taken: each is started again on another."""
    import socket

    import harness.stack.local as local_module
    from harness.stack.net import free_port

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port = taken.getsockname()[1]
    calls = {"n": 0}

    def free_port_but_taken_first() -> int:
        calls["n"] += 1
        return taken_port if calls["n"] % 2 else free_port()

    monkeypatch.setattr(local_module, "free_port", free_port_but_taken_first)
    stack = LocalStack(Scenario(name="test-ports"))
    try:
        asyncio.run(stack.up())
        assert calls["n"] == 8  # toxiproxy, primary, replica, server: each twice
        ports = [stack.clusters["primary"].port, stack.clusters["replica"].port]
        assert taken_port not in ports + [stack.servers[0].port]
        assert fetchval(stack.endpoints.server_database_url, "SELECT 1") == 1
    finally:
        asyncio.run(stack.down())
        stack.remove_run_dir()
        taken.close()
