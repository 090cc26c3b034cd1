"""The docker backend against a real Docker engine: a DockerStack up, a primary killed and
the replica promoted with the failover measured, a partition cut and healed, and
everything removed by down(). Marked ``docker``; skipped, saying why, when no engine
answers (``docker info``), as on the machines this project is developed on."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from harness.config import Scenario
from harness.mcp_client.wire import McpSession
from harness.shipped import SCENARIOS_DIR
from harness.stack.containers import RUN_LABEL
from harness.stack.docker import DockerStack
from harness.stack.prerequisites import DockerUnreachable, docker_engine_info, docker_sdk

REPO = Path(__file__).resolve().parents[2]


def _engine_problem() -> str | None:
    """Why there is no engine to test against (None: there is one)."""
    docker_cli = shutil.which("docker")
    if docker_cli:
        result = subprocess.run(
            [docker_cli, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            return f"`docker info` failed: {(result.stderr or result.stdout).strip()[:200]}"
        return None
    try:
        docker_engine_info()
    except DockerUnreachable as exc:
        return f"no docker CLI, and the Docker SDK reaches no engine: {exc.reason}"
    return None


ENGINE_PROBLEM = _engine_problem()
pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        ENGINE_PROBLEM is not None,
        reason=f"needs a Docker engine: {ENGINE_PROBLEM}",
    ),
]

SCENARIO = Scenario.model_validate(
    {
        "name": "docker-engine",
        "backend": "docker",
        "postgres": {"settings": {"wal_retrieve_retry_interval": "100ms"}},
    }
)


@pytest.fixture
def stack() -> Iterator[DockerStack]:
    stack = DockerStack(SCENARIO)
    try:
        asyncio.run(stack.up())
        yield stack
    finally:
        asyncio.run(stack.down())
        stack.remove_run_dir()


def _run_containers(run_id: str) -> list[str]:
    client = docker_sdk().from_env()
    try:
        found = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
        return [c.name for c in found]
    finally:
        client.close()


def _initialize(url: str) -> int:
    """The status of an MCP initialize, framed by the load's own wire code."""
    request = McpSession().initialize(client_version="docker-engine-test")
    http = urllib.request.Request(
        url, data=request.body.encode(), method="POST", headers=request.headers
    )
    with urllib.request.urlopen(http, timeout=10) as response:
        return int(response.status)


def test_stack_up_serves_mcp_through_toxiproxy_with_a_streaming_replica(
    stack: DockerStack,
) -> None:
    endpoints = stack.endpoints
    assert set(stack.toxiproxy.proxies()) == {"mcp", "pg-primary", "pg-replica", "pg-replication"}
    assert _initialize(endpoints.mcp_url) == 200

    async def check() -> tuple[object, object, object]:
        primary = await asyncpg.connect(endpoints.primary_dsn, timeout=10)
        replica = await asyncpg.connect(endpoints.replica_dsn, timeout=10)
        app = await asyncpg.connect(endpoints.server_database_url, timeout=10)
        try:
            return (
                await primary.fetchval(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                ),
                await replica.fetchval("SELECT pg_is_in_recovery()"),
                await app.fetchval("SELECT current_setting('port')"),
            )
        finally:
            for conn in (primary, replica, app):
                await conn.close()

    streaming, in_recovery, app_port = asyncio.run(check())
    assert streaming == 1 and in_recovery is True
    assert app_port == "5432", "the read-write target is the primary"
    [admin] = stack.server_admin()
    request = urllib.request.Request(
        f"{admin.url}/state", headers={"Authorization": f"Bearer {admin.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, "the gateway is allowed, with the token"


def test_kill_primary_then_promote_measures_the_failover(stack: DockerStack) -> None:
    dsn = stack.endpoints.server_database_url

    async def failover() -> tuple[bool, float, str]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS failover_probe (at float8)")
        finally:
            await conn.close()
        await asyncio.sleep(0.5)  # the table reaches the standby
        killed = await stack.kill_primary()
        await stack.promote_replica()
        while True:
            try:
                conn = await asyncpg.connect(dsn, timeout=1)
                try:
                    await conn.execute("INSERT INTO failover_probe VALUES ($1)", time.monotonic())
                    port = await conn.fetchval("SELECT current_setting('port')")
                finally:
                    await conn.close()
                return killed.confirmed, time.monotonic() - killed.t_confirmed, str(port)
            except (OSError, asyncpg.PostgresError):
                if time.monotonic() - killed.t_confirmed > 60:
                    raise
                await asyncio.sleep(0.05)

    confirmed, failover_s, port = asyncio.run(failover())
    print(f"docker backend: kill_primary -> first write on the promoted node in {failover_s:.3f} s")
    assert confirmed
    assert port == "5433", "written on the promoted replica"
    assert stack.current_primary_port == 5433
    assert failover_s < 30


def test_partition_cuts_the_replica_off_and_heals(stack: DockerStack) -> None:
    async def streaming() -> int:
        conn = await asyncpg.connect(stack.current_primary_dsn, timeout=10)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                )
            )
        finally:
            await conn.close()

    async def until(expected: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await streaming() == expected:
                return True
            await asyncio.sleep(0.2)
        return False

    async def go() -> tuple[bool, bool, bool]:
        cut = await stack.partition("replica")
        gone = await until(0, 90)  # the WAL sender notices the dead peer by its timeout
        healed = await stack.heal_partition(cut)
        back = await until(1, 90)
        return cut.confirmed and gone, healed, back

    cut, healed, back = asyncio.run(go())
    assert cut and healed and back


def test_down_removes_every_container_and_the_network() -> None:
    stack = DockerStack(SCENARIO)
    try:
        asyncio.run(stack.up())
        assert len(_run_containers(stack.run_id)) == 4
    finally:
        asyncio.run(stack.down())
    assert _run_containers(stack.run_id) == []
    assert stack.network is None
    logs = [Path(p).name for p in stack.log_paths()]
    assert "container-pg-primary.log" in logs and "container-mcp-server.log" in logs
    stack.remove_run_dir()


def test_a_scenario_runs_end_to_end_on_docker(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "mcp-harness"),
            "run",
            str(SCENARIOS_DIR / "primary_kill.yaml"),
            "--backend",
            "docker",
            "--users",
            "50",
            "--run-time",
            "40s",
            "--out",
            str(tmp_path),
            "--warn-only",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [result_file] = list(tmp_path.glob("*/result.json"))
    recorded = json.loads(result_file.read_text())
    assert recorded["backend"] == "docker"
    assert recorded["metrics"]["db_failover_s"] is not None
