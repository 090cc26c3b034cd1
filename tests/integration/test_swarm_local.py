"""A real Locust swarm (master + worker processes) against a real MCP server on 127.0.0.1.

The server is killed by pid mid-run and restarted on the same port: every user
whose session broke must come back with a new session, and the records file
must say so.
"""

from __future__ import annotations

import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.load.settings import LoadSettings
from harness.load.swarm import RecordTail, Swarm
from harness.load.wire import McpSession
from harness.stack.net import free_port
from harness.stack.processes import OwnedProcess, ProcessRegistry

pytestmark = pytest.mark.integration

MINI_SERVER = Path(__file__).with_name("mini_mcp_server.py")


def start_mini_server(registry: ProcessRegistry, port: int, name: str) -> OwnedProcess:
    server = registry.start(
        name, [sys.executable, str(MINI_SERVER), "--port", str(port)], log_name="mini-mcp.log"
    )
    wait_for_initialize(f"http://127.0.0.1:{port}/mcp", server)
    return server


def wait_for_initialize(url: str, server: OwnedProcess, timeout_s: float = 20.0) -> None:
    initialize = McpSession().initialize()
    body, headers = initialize.body.encode(), initialize.headers
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.running(), server.log_tail()
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"mini MCP server did not answer initialize:\n{server.log_tail()}")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ProcessRegistry]:
    registry = ProcessRegistry(tmp_path)
    try:
        yield registry
    finally:
        registry.stop_all(timeout_s=5.0)


def load_settings(**overrides: Any) -> LoadSettings:
    values: dict[str, Any] = {
        "records_path": "records.jsonl",
        "think_time_s": (0.5, 1.0),
        "reconnect_policy": "backoff",
        "backoff_base_s": 0.1,
        "backoff_cap_s": 1.0,
        "request_timeout_s": 5.0,
        "id_prefix": f"it-{time.time_ns()}",
        "seed": 1,
    }
    values.update(overrides)
    return LoadSettings(**values)


def wait_for(tail: RecordTail, seen: list[dict], predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen.extend(tail.read_new())
        if predicate(seen):
            return
        time.sleep(0.1)
    raise AssertionError(f"records never matched; kinds so far {Counter(r['k'] for r in seen)}")


def test_swarm_reconnects_every_broken_session_after_a_server_restart(
    registry: ProcessRegistry,
) -> None:
    users = 60
    port = free_port()
    server = start_mini_server(registry, port, "mini-mcp")
    swarm = Swarm(
        registry,
        load_settings(),
        base_url=f"http://127.0.0.1:{port}",
        users=users,
        spawn_rate=30,
        run_time_s=14,
        workers=1,
    )
    records: list[dict] = []
    try:
        swarm.start()
        tail = swarm.tail()
        wait_for(
            tail,
            records,
            lambda rs: sum(r["k"] == "req" and r["m"] == "tools/list" for r in rs) >= 2 * users,
            timeout_s=15,
        )
        killed_at = time.monotonic()
        server.stop(timeout_s=5, sig=signal.SIGKILL)
        time.sleep(1.5)
        server = start_mini_server(registry, port, "mini-mcp-restarted")
        restarted_at = time.monotonic()
        assert swarm.wait(timeout_s=30) == 0, swarm.master and swarm.master.log_tail()
        records.extend(tail.read_new())
    finally:
        swarm.stop()
        server.stop(timeout_s=5)

    kinds = Counter(r["k"] for r in records)
    requests = [r for r in records if r["k"] == "req"]
    ok_by_method = Counter(r["m"] for r in requests if r["ok"])
    assert ok_by_method["initialize"] >= users
    assert ok_by_method["notifications/initialized"] >= users
    assert ok_by_method["tools/list"] >= 2 * users
    assert ok_by_method["tools/call:create_note"] > 0
    assert all(set(r) == {"k", "t", "m", "ms", "ok", "err", "u"} for r in requests)
    failed = [r for r in requests if not r["ok"]]
    assert {r["err"] for r in failed} <= {"connect", "http_404", "http_5xx", "tool_error"}
    # the restarted server forgot its notes: get_note of an older note is a tool error
    assert {r["m"] for r in failed if r["err"] == "tool_error"} <= {"tools/call:get_note"}

    broken = [r for r in records if r["k"] == "broken"]
    reconnected = [r for r in records if r["k"] == "reconnected"]
    assert {r["reason"] for r in broken} <= {"connect", "http_404", "http_5xx"}
    broken_by_outage = [r for r in broken if killed_at <= r["t"] <= restarted_at]
    assert len(broken_by_outage) >= users // 2
    for record in broken_by_outage:
        assert any(
            again["u"] == record["u"]
            and again["t"] > record["t"]
            and abs(again["t"] - again["duration_s"] - record["t"]) < 0.01
            for again in reconnected
        ), record
    assert all(r["duration_s"] > 0 and r["attempts"] >= 1 for r in reconnected)
    assert len({r["u"] for r in requests}) == users

    attempted = {r["id"] for r in records if r["k"] == "write_attempt"}
    written = [r for r in records if r["k"] == "write"]
    assert written and {r["id"] for r in written} <= attempted
    assert all(len(r["sum"]) == 64 for r in written)

    assert kinds["spawned"] == 1
    assert kinds["users"] >= 10
    assert records[-1]["k"] == "stop"
    assert tail.skipped_lines == 0


def test_swarm_stopped_early_writes_stop_last_and_exits(registry: ProcessRegistry) -> None:
    port = free_port()
    server = start_mini_server(registry, port, "mini-mcp")
    swarm = Swarm(
        registry,
        load_settings(tool_mix={"tools/list": 1.0, "create_note": 1.0}),
        base_url=f"http://127.0.0.1:{port}",
        users=20,
        spawn_rate=20,
        run_time_s=60,
    )
    records: list[dict] = []
    try:
        swarm.start()
        tail = swarm.tail()
        wait_for(tail, records, lambda rs: any(r["k"] == "write" for r in rs), timeout_s=15)
        stopped_at = time.monotonic()
        swarm.stop()
        assert time.monotonic() - stopped_at < 10
        assert not swarm.running
        assert not any(worker.running() for worker in swarm.workers)
        records.extend(tail.read_new())
    finally:
        swarm.stop()
        server.stop(timeout_s=5)

    assert records[-1]["k"] == "stop"
    attempted = {r["id"] for r in records if r["k"] == "write_attempt"}
    assert {r["id"] for r in records if r["k"] == "write"} <= attempted


def test_remote_target_is_refused_without_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        Swarm(
            ProcessRegistry(tmp_path),
            load_settings(),
            base_url="http://10.1.2.3:8000",
            users=1,
            spawn_rate=1,
            run_time_s=1,
        )
