"""A real Locust swarm (master + worker processes) against a real MCP server on 127.0.0.1.

The server is killed by pid mid-run and restarted on the same port, in both
protocol revisions: every user whose session (2025-11-25) or connection
(2026-07-28) broke must come back, and the records file must say so. Another
server sheds initialize with 503 + Retry-After for a few seconds: no user may
try again before the time it was told.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.load.settings import USER_ID_STRIDE, LoadSettings
from harness.load.swarm import RecordTail, Swarm, SwarmShape
from harness.mcp_client.wire import McpSession
from harness.stack.net import free_port
from harness.stack.processes import OwnedProcess, ProcessRegistry

pytestmark = pytest.mark.integration

MINI_SERVER = Path(__file__).with_name("mini_mcp_server.py")
REQ_KEYS = {"k", "t", "m", "ms", "ok", "err", "u"}
TRANSPORT_KINDS = {"connect_refused", "connect_reset", "timeout"}


def start_mini_server(
    registry: ProcessRegistry, port: int, name: str, shed_flag: Path | None = None
) -> OwnedProcess:
    argv = [sys.executable, str(MINI_SERVER), "--port", str(port)]
    if shed_flag is not None:
        argv += ["--shed-flag", str(shed_flag)]
    server = registry.start(name, argv, log_name="mini-mcp.log")
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


def by_user(records: list[dict]) -> dict[int, list[dict]]:
    users: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        if "u" in record:
            users[record["u"]].append(record)
    return users


def assert_ended_cleanly(swarm: Swarm, records: list[dict], tail: RecordTail) -> None:
    assert records[-1]["k"] == "stop"
    assert tail.skipped_lines == 0
    for process in [swarm.master, *swarm.workers]:
        assert process is not None and not process.running()
        log = process.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]


@pytest.mark.shares_machine  # counts of users broken and back against a small server
@pytest.mark.parametrize(
    ("protocol", "policy", "hold_stream"),
    [("2025-11-25", "backoff", True), ("2026-07-28", "immediate", False)],
    ids=["session-backoff-stream", "sessionless-immediate"],
)
def test_swarm_reconnects_every_broken_user_after_a_server_restart(
    registry: ProcessRegistry, protocol: str, policy: str, hold_stream: bool
) -> None:
    users = 60
    sessionless = protocol == "2026-07-28"
    port = free_port()
    server = start_mini_server(registry, port, "mini-mcp")
    settings = load_settings(protocol=protocol, reconnect_policy=policy, hold_stream=hold_stream)
    swarm = Swarm(
        registry,
        settings,
        SwarmShape(
            base_url=f"http://127.0.0.1:{port}", users=users, spawn_rate=60, run_time_s=8, workers=1
        ),
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
    if sessionless:
        assert not {"initialize", "notifications/initialized"} & {r["m"] for r in requests}
    else:
        assert ok_by_method["initialize"] >= users
        assert ok_by_method["notifications/initialized"] >= users
    assert ok_by_method["tools/list"] >= 2 * users
    assert ok_by_method["tools/call:create_note"] > 0
    assert all(set(r) == REQ_KEYS for r in requests)
    failed = [r for r in requests if not r["ok"]]
    breaking = TRANSPORT_KINDS | {"http_5xx"} | (set() if sessionless else {"http_404"})
    assert {r["err"] for r in failed} <= breaking | {"tool_error"}
    # the restarted server forgot its notes: get_note of an older note is a tool error
    assert {r["m"] for r in failed if r["err"] == "tool_error"} <= {"tools/call:get_note"}

    broken = [r for r in records if r["k"] == "broken"]
    reconnected = [r for r in records if r["k"] == "reconnected"]
    assert {r["reason"] for r in broken} <= breaking
    broken_by_outage = [r for r in broken if killed_at <= r["t"] <= restarted_at]
    assert len(broken_by_outage) >= users // 2
    first_request = "tools/list" if sessionless else "initialize"
    mine = by_user(records)
    for record in broken_by_outage:
        again = next(r for r in reconnected if r["u"] == record["u"] and r["t"] > record["t"])
        assert abs(again["t"] - again["duration_s"] - record["t"]) < 0.01
        between = [r for r in mine[record["u"]] if record["t"] < r["t"] <= again["t"]]
        # every attempt starts with its first request, each a req record, ok or not
        attempts = [r for r in between if r["k"] == "req" and r["m"] == first_request]
        assert len(attempts) == again["attempts"], (record, again, between)
        # reconnected at its first good tools/list after the break
        good_lists = [r for r in between if r["k"] == "req" and r["m"] == "tools/list" and r["ok"]]
        assert len(good_lists) == 1, between
    assert all(r["duration_s"] > 0 and r["attempts"] >= 1 for r in reconnected)
    assert len({r["u"] for r in requests}) == users

    streams = [r for r in requests if r["m"] == "GET stream"]
    if hold_stream:
        # one stream opening per (re)connection, each in the stats once
        assert all(r["ok"] for r in streams), [r for r in streams if not r["ok"]]
        assert users <= len(streams) <= users + len(reconnected)
        for record in broken_by_outage:
            assert any(s["u"] == record["u"] and s["t"] > record["t"] for s in streams), record
    else:
        assert not streams

    attempted = {r["id"] for r in records if r["k"] == "write_attempt"}
    written = [r for r in records if r["k"] == "write"]
    assert written and {r["id"] for r in written} <= attempted
    assert all(len(r["sum"]) == 64 for r in written)

    assert kinds["spawned"] == 1
    assert kinds["users"] >= 6
    assert_ended_cleanly(swarm, records, tail)


@pytest.mark.shares_machine
def test_users_wait_out_a_shed_initialize_with_a_remote_worker_and_pinned_cpus(
    registry: ProcessRegistry, tmp_path: Path
) -> None:
    users = 20
    shed_s = 4.0
    flag = tmp_path / "shed-initialize"
    port = free_port()
    server = start_mini_server(registry, port, "mini-mcp", shed_flag=flag)
    flag.write_text("2")
    cpus = {min(os.sched_getaffinity(0))} if hasattr(os, "sched_getaffinity") else {0}
    swarm = Swarm(
        registry,
        load_settings(reconnect_policy="backoff", backoff_base_s=0.1, backoff_cap_s=1.0),
        SwarmShape(
            base_url=f"http://127.0.0.1:{port}",
            users=users,
            spawn_rate=40,
            run_time_s=8,
            workers=1,
            remote_workers=1,
            worker_cpus=frozenset(cpus) if cpus else None,
        ),
    )
    records: list[dict] = []
    remote: OwnedProcess | None = None
    try:
        swarm.start()
        command = swarm.remote_worker_command()
        assert command.startswith(f"MCP_HARNESS_LOAD={swarm.settings_path} PYTHONPATH=")
        assert f"--worker --master-host 127.0.0.1 --master-port {swarm.master_port}" in command
        remote = registry.start("locust-remote-worker", ["bash", "-c", command], cwd=tmp_path)
        assert swarm.master is not None
        assert swarm.pids() == [swarm.master.pid, swarm.workers[0].pid]
        worker = swarm.workers[0]
        if hasattr(os, "sched_getaffinity"):
            assert swarm.affinity == {worker.pid: sorted(cpus)}
            assert os.sched_getaffinity(worker.pid) == cpus
        tail = swarm.tail()
        wait_for(
            tail,
            records,
            lambda rs: any(r["k"] == "req" and r.get("err") == "shed" for r in rs),
            timeout_s=20,
        )
        time.sleep(shed_s)
        flag.unlink()
        assert swarm.wait(timeout_s=30) == 0, swarm.master and swarm.master.log_tail()
        assert remote.popen.wait(timeout=10) == 0, remote.log_tail()
        records.extend(tail.read_new())
    finally:
        flag.unlink(missing_ok=True)
        swarm.stop()
        if remote is not None:
            remote.stop(timeout_s=5)
        server.stop(timeout_s=5)

    requests = [r for r in records if r["k"] == "req"]
    assert len({r["u"] for r in requests}) == users
    assert {r["u"] // USER_ID_STRIDE for r in requests} == {0, 1}, "both workers ran users"
    shed = [r for r in requests if r["err"] == "shed"]
    assert {r["m"] for r in shed} == {"initialize"}
    assert all(r["ra"] == 2.0 and set(r) == REQ_KEYS | {"ra"} for r in shed)
    assert len({r["u"] for r in shed}) == users, "every user was shed at least once"
    for user, theirs in by_user(requests).items():
        initializes = [r for r in theirs if r["m"] == "initialize"]
        for before, after in zip(initializes, initializes[1:], strict=False):
            if before["err"] == "shed":
                # the next attempt waited out Retry-After: 2 although the backoff cap is 1 s
                assert after["t"] - before["t"] >= 2.0, (user, before, after)
        assert initializes[-1]["ok"], (user, initializes)
    assert not [r for r in records if r["k"] in ("broken", "reconnected")]
    assert Counter(r["m"] for r in requests if r["ok"])["tools/list"] >= users
    assert_ended_cleanly(swarm, records, tail)


SOCKET_FAILURES = r"""
from gevent import monkey

monkey.patch_all()

import json
import socket
import struct

import gevent
from gevent.server import StreamServer
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook

from harness.load.user import judge_reply
from harness.mcp_client.wire import McpSession


def read_request(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk


def rst(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
BEHAVIOURS = {
    "reset": lambda sock: (read_request(sock), rst(sock)),
    "closed": lambda sock: (read_request(sock), sock.close()),
    "hang": lambda sock: (read_request(sock), gevent.sleep(10)),
    "cut_body": lambda sock: (read_request(sock), sock.sendall(HEAD), sock.close()),
    "reset_mid_body": lambda sock: (read_request(sock), sock.sendall(HEAD), gevent.sleep(0.1), rst(sock)),
    "stalled_body": lambda sock: (read_request(sock), sock.sendall(HEAD), gevent.sleep(10)),
    "shed": lambda sock: (
        read_request(sock),
        sock.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n"),
        gevent.sleep(1),
    ),
}
ports = {}
for name, behaviour in BEHAVIOURS.items():
    server = StreamServer(("127.0.0.1", 0), lambda sock, _addr, b=behaviour: b(sock))
    server.start()
    ports[name] = server.server_port
closed_port = socket.socket()
closed_port.bind(("127.0.0.1", 0))
ports["refused"] = closed_port.getsockname()[1]
closed_port.close()
full = socket.socket()
full.bind(("127.0.0.1", 0))
full.listen(0)
ports["backlog_full"] = full.getsockname()[1]
queued = []
for _ in range(4):
    filler = socket.socket()
    filler.setblocking(False)
    try:
        filler.connect(("127.0.0.1", ports["backlog_full"]))
    except BlockingIOError:
        pass
    queued.append(filler)
gevent.sleep(0.2)

kinds = {}
for name, port in ports.items():
    client = FastHttpSession(
        f"http://127.0.0.1:{port}", EventHook(), None,
        network_timeout=0.5, connection_timeout=0.5, concurrency=1,
    )
    request = McpSession().tools_list()
    with client.request(
        "POST", "/mcp", data=request.body, headers=request.headers, catch_response=True
    ) as response:
        outcome = judge_reply(request, response)
        response.success()
    kinds[name] = [str(outcome.error_kind), outcome.breaks_session, outcome.retry_after_s]
print(json.dumps(kinds))
"""


def test_locust_client_failures_on_real_sockets_are_told_apart() -> None:
    """Refused, reset, closed, timed out, cut off, shed: each against a socket that does it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, "-c", SOCKET_FAILURES],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    kinds = json.loads(done.stdout.strip().splitlines()[-1])
    assert kinds == {
        "refused": ["connect_refused", True, None],
        "reset": ["connect_reset", True, None],
        "closed": ["connect_reset", True, None],
        "cut_body": ["connect_reset", True, None],
        "reset_mid_body": ["connect_reset", True, None],
        "hang": ["timeout", True, None],
        "stalled_body": ["timeout", True, None],
        "backlog_full": ["timeout", True, None],
        "shed": ["shed", False, 3.0],
    }


def test_swarm_stopped_early_writes_stop_last_and_exits(registry: ProcessRegistry) -> None:
    port = free_port()
    server = start_mini_server(registry, port, "mini-mcp")
    swarm = Swarm(
        registry,
        load_settings(tool_mix={"tools/list": 1.0, "create_note": 1.0}),
        SwarmShape(base_url=f"http://127.0.0.1:{port}", users=20, spawn_rate=20, run_time_s=60),
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
            SwarmShape(base_url="http://10.1.2.3:8000", users=1, spawn_rate=1, run_time_s=1),
        )


def test_master_listens_beyond_loopback_only_when_allowed(tmp_path: Path) -> None:
    def swarm(allow_remote: bool = False, **shape: Any) -> Swarm:
        return Swarm(
            ProcessRegistry(tmp_path),
            load_settings(),
            SwarmShape(
                base_url="http://127.0.0.1:8000", users=1, spawn_rate=1, run_time_s=1, **shape
            ),
            allow_remote=allow_remote,
        )

    with pytest.raises(ValueError, match="allow_remote"):
        swarm(master_bind_host="0.0.0.0", remote_workers=2)
    everywhere = swarm(master_bind_host="0.0.0.0", remote_workers=2, allow_remote=True)
    assert (
        everywhere.master_argv(5557)[everywhere.master_argv(5557).index("--expect-workers") + 1]
        == "3"
    )
    assert everywhere.local_master_host == "127.0.0.1"
    assert everywhere.master_advertise_host not in ("0.0.0.0", "")
    named = swarm(
        master_bind_host="10.0.0.5", master_advertise_host="load-1.lan", allow_remote=True
    )
    assert named.worker_argv(5557)[-4:] == ["--master-host", "10.0.0.5", "--master-port", "5557"]
    with pytest.raises(RuntimeError, match="start the swarm first"):
        named.remote_worker_command()
    assert named.pids() == []
    with pytest.raises(ValueError, match="worker_cpus"):
        swarm(worker_cpus=frozenset())
