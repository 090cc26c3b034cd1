"""The reference server's admin endpoint on a real server process, over real HTTP.

Each test starts its own reference server the way the stack does (`McpServerProcess`: the
token in the environment) against the session stack's Postgres, through its proxies, and
pulls the levers a DR runbook pulls: admission on and off, a tool's circuit held open and
given back, the pool repointed. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import pytest

from harness.config import ServerConfig
from harness.mcp_client.async_client import open_session, send
from harness.mcp_client.wire import ErrorKind, McpOutcome, McpSession
from harness.stack.local import LocalStack
from harness.stack.mcp_server import ADMIN_TOKEN_ENV, McpServerProcess
from harness.stack.net import free_port
from harness.stack.processes import ProcessRegistry

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


@contextlib.asynccontextmanager
async def reference_server(stack: LocalStack, run_dir: Path) -> AsyncIterator[McpServerProcess]:
    server = McpServerProcess(ServerConfig(), free_port(), stack.endpoints.server_database_url)
    server.start(ProcessRegistry(run_dir))
    try:
        await server.wait_ready()
        yield server
    finally:
        server.stop()


class Admin:
    """The runbook's side of the endpoint: httpx with the bearer token."""

    def __init__(self, http: httpx2.AsyncClient, server: McpServerProcess) -> None:
        assert server.admin_url is not None and server.admin_token is not None
        self.http, self.url = http, server.admin_url
        self.headers = {"Authorization": f"Bearer {server.admin_token}"}

    async def state(self) -> dict[str, Any]:
        reply = await self.http.get(f"{self.url}/state", headers=self.headers)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.http.post(f"{self.url}/{path}", json=body, headers=self.headers)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


async def metrics(http: httpx2.AsyncClient, server: McpServerProcess) -> dict[str, float]:
    text = (await http.get(f"http://127.0.0.1:{server.port}/metrics")).text
    return {m[1] + (m[2] or ""): float(m[3]) for m in map(SAMPLE.match, text.splitlines()) if m}


async def flood_initialize(url: str, count: int) -> list[int]:
    """`count` initializes at once, each on its own connection; their HTTP statuses."""
    limits = httpx2.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx2.AsyncClient(timeout=10, limits=limits) as http:
        requests = [McpSession().initialize() for _ in range(count)]
        replies = await asyncio.gather(
            *(http.post(url, content=r.body, headers=r.headers) for r in requests)
        )
    return [r.status_code for r in replies]


async def call(
    http: httpx2.AsyncClient, server: McpServerProcess, session: McpSession, tool: str, **args: Any
) -> McpOutcome:
    outcome, _ = await send(http, server.url, session.tools_call(tool, args))
    return outcome


def test_token_admission_on_and_off(local_stack: LocalStack, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            reference_server(local_stack, tmp_path) as server,
            httpx2.AsyncClient(timeout=10) as http,
        ):
            assert server.process is not None and server.admin_token is not None
            proc = Path(f"/proc/{server.process.pid}")
            assert server.admin_token.encode() not in (proc / "cmdline").read_bytes()
            assert (
                f"{ADMIN_TOKEN_ENV}={server.admin_token}".encode()
                in (proc / "environ").read_bytes()
            )
            for headers in [{}, {"Authorization": f"Bearer {server.admin_token}x"}]:
                refused = await http.get(f"{server.admin_url}/state", headers=headers)
                assert (refused.status_code, refused.json()) == (401, {"error": "unauthorized"})
                refused = await http.post(
                    f"{server.admin_url}/admission", json={"rate": 1}, headers=headers
                )
                assert refused.status_code == 401
            admin = Admin(http, server)
            state = await admin.state()
            assert state["admission"]["enabled"] is False
            assert state["fault_mode"] == "none"
            assert set(state["breakers"]["tools"]) == {
                "create_note",
                "get_note",
                "search_notes",
                "notes_report",
            }
            assert "***" in state["pool"]["dsn"] and len(state["pool"]["hosts"]) == 2

            changed = await admin.post(
                "admission", {"rate": 5, "burst": 5, "queue": 5, "max_wait": 1}
            )
            assert changed["after"]["enabled"] and changed["after"]["rate"] == 5

            async def state_meanwhile() -> dict[str, Any]:
                await asyncio.sleep(0.3)
                return await admin.state()

            statuses, during = await asyncio.gather(
                flood_initialize(server.url, 30), state_meanwhile()
            )
            admitted, shed = statuses.count(200), statuses.count(503)
            assert admitted + shed == 30, statuses
            assert 10 <= admitted <= 13 and shed >= 17, statuses
            assert during["admission"]["queue_depth"] >= 1, during["admission"]
            assert during["storm"]["active"] is True
            seen = await metrics(http, server)
            assert seen["mcp_admission_admitted_total"] == admitted
            assert seen["mcp_admission_shed_total"] == shed
            assert seen['mcp_http_responses_total{status="503"}'] == shed
            assert seen["mcp_admission_wait_seconds_count"] == admitted
            assert seen["mcp_admission_wait_seconds_sum"] > 1.0, "the queued ones waited"

            off = await admin.post("admission", {"rate": 0})
            assert off["after"]["enabled"] is False
            assert await flood_initialize(server.url, 30) == [200] * 30
            seen = await metrics(http, server)
            assert seen["mcp_admission_shed_total"] == shed
            assert seen["mcp_admission_admitted_total"] == admitted

        assert server.process is not None
        log = server.process.log_path.read_text()
        assert "admin: admission on: enabled False -> True, rate 0.0 -> 5.0" in log
        assert "admin: admission off: enabled True -> False, rate 5.0 -> 0.0" in log
        assert "admin: refused GET /admin/state from 127.0.0.1: no valid token" in log
        assert server.admin_token not in log

    asyncio.run(scenario())


def test_breaker_held_open_and_pool_repointed(local_stack: LocalStack, tmp_path: Path) -> None:
    note = f"admin-live-{uuid.uuid4().hex}"

    async def scenario() -> None:
        async with (
            reference_server(local_stack, tmp_path) as server,
            httpx2.AsyncClient(timeout=15) as http,
        ):
            admin = Admin(http, server)
            session = McpSession()
            assert (await open_session(http, server.url, session)).ok
            created = await call(http, server, session, "create_note", id=note, title="t", body="b")
            assert created.ok, created.detail

            held = await admin.post("breaker", {"tool": "create_note", "state": "open"})
            assert held["before"]["state"] == "closed" and held["after"]["state"] == "open"
            start = time.monotonic()
            refused = await call(
                http, server, session, "create_note", id=f"{note}-2", title="t", body="b"
            )
            assert time.monotonic() - start < 0.5
            assert refused.error_kind is ErrorKind.TOOL_ERROR
            assert "circuit open: create_note is held open by an operator" in refused.detail
            fetched = await call(http, server, session, "get_note", id=note)
            assert fetched.ok, fetched.detail
            seen = await metrics(http, server)
            assert seen['mcp_breaker_state{tool="create_note"}'] == 2
            assert seen['mcp_breaker_rejected_total{tool="create_note"}'] == 1
            assert seen['mcp_breaker_state{tool="get_note"}'] == 0
            unknown = await http.post(
                f"{server.admin_url}/breaker",
                json={"tool": "drop_notes", "state": "open"},
                headers=admin.headers,
            )
            assert unknown.status_code == 400 and "create_note" in unknown.json()["error"]

            back = await admin.post("breaker", {"tool": "create_note", "state": "auto"})
            assert back["after"] == {**back["after"], "state": "closed", "mode": "auto"}
            again = await call(
                http, server, session, "create_note", id=f"{note}-3", title="t", body="b"
            )
            assert again.ok, again.detail

            pool = (await admin.state())["pool"]
            assert pool["size"] >= 1 and pool["db"] == "ok"
            primary_host = pool["hosts"][0]
            assert pool["last_connected_host"] == primary_host
            repointed = await admin.post("pool/repoint", {})
            assert repointed["dsn_changed"] is False
            assert repointed["expired"] >= 1
            assert repointed["closed_idle"] + repointed["in_use"] == repointed["expired"]
            assert repointed["after"]["idle"] == 0
            assert (await admin.state())["pool"]["idle"] == 0
            fetched = await call(http, server, session, "get_note", id=note)
            assert fetched.ok, fetched.detail
            assert (await admin.state())["pool"]["size"] >= 1

            dsn = urlsplit(local_stack.endpoints.server_database_url)
            userinfo, _, hosts = dsn.netloc.rpartition("@")
            reversed_hosts = ",".join(reversed(hosts.split(",")))
            swapped = urlunsplit(dsn._replace(netloc=f"{userinfo}@{reversed_hosts}"))
            repointed = await admin.post("pool/repoint", {"dsn": swapped})
            assert repointed["dsn_changed"] is True
            assert repointed["after"]["hosts"] == list(reversed(pool["hosts"]))
            fetched = await call(http, server, session, "get_note", id=note)
            assert fetched.ok, fetched.detail
            state = await admin.state()
            assert state["pool"]["last_connected_host"] == primary_host, (
                "read-write target: the replica is passed over"
            )
            assert userinfo.partition(":")[2] not in str(state)

        assert server.process is not None
        log = server.process.log_path.read_text()
        assert "admin: breaker of create_note held open" in log
        assert "admin: breaker of create_note back to automatic" in log
        assert "admin: pool repointed" in log and "DSN kept" in log
        assert userinfo.partition(":")[2] not in log

    asyncio.run(scenario())
