"""The local backend: every part a real process on 127.0.0.1, no Docker.

Postgres primary (initdb) and hot standby (pg_basebackup -R through the
``pg-replication`` proxy), a ``toxiproxy-server`` with the four proxies, and
the MCP server, all in a private run directory under the system temp dir.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.config import Scenario
from harness.stack import Endpoints, Stack
from harness.stack.haproxy import HaproxyBalancer
from harness.stack.mcp_server import McpServerProcess
from harness.stack.net import LOOPBACK, free_port
from harness.stack.postgres import (
    APP_DATABASE,
    APP_USER,
    REPLICATION_USER,
    KillResult,
    PostgresCluster,
    StackError,
)
from harness.stack.prerequisites import pg_bin_dir, pg_run_user, postgres_version, toxiproxy_server
from harness.stack.processes import (
    OwnedProcess,
    ProcessRegistry,
    become_subreaper,
    reap_stale_runs,
    wait_gone,
)
from harness.stack.toxiproxy import ToxiproxyClient, ToxiproxyError

log = logging.getLogger(__name__)

RUN_DIR_PREFIX = "mcp-harness-"
START_ATTEMPTS = 3


class LocalStack(Stack):
    def __init__(
        self,
        scenario: Scenario,
        *,
        pg_bin: str | None = None,
        run_dir: Path | None = None,
        cpus: frozenset[int] | None = None,
    ) -> None:
        self.scenario = scenario
        self.bin_dir = pg_bin_dir(pg_bin)
        self.toxiproxy_bin = toxiproxy_server()
        self.run_user = pg_run_user()
        self._run_dir = run_dir
        self.cpus = cpus
        self.passwords = {
            name: secrets.token_urlsafe(18) for name in ("postgres", APP_USER, REPLICATION_USER)
        }
        self.clusters: dict[str, PostgresCluster] = {}
        self.primary_name = "primary"
        self.servers: list[McpServerProcess] = []
        self.balancer: HaproxyBalancer | None = None
        self.toxiproxy_process: OwnedProcess | None = None
        self._versions: dict[str, Any] = {}

    @property
    def run_dir(self) -> Path:
        assert self._run_dir is not None, "stack is not up"
        return self._run_dir

    async def up(self) -> Endpoints:
        become_subreaper()
        parent = Path(tempfile.gettempdir())
        for stale in reap_stale_runs(parent, RUN_DIR_PREFIX):
            log.warning("removed what a dead run left behind: %s", stale)
        if self._run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=parent))
        self.run_dir.chmod(0o755)
        self.registry = ProcessRegistry(self.run_dir, cpus=self.cpus)
        self.registry.save()
        await self._start_toxiproxy()
        primary = await self._start_primary()
        self._proxy("pg-primary", primary.port)
        replication = self._proxy("pg-replication", primary.port)
        replica = await self._start_replica(replication)
        self._proxy("pg-replica", replica.port)
        await self._wait_streaming(primary)
        server_url = await self._start_server()
        mcp_proxy = self._proxy_to_url("mcp", server_url)
        path = urlsplit(server_url).path
        self.endpoints = Endpoints(
            mcp_url=f"http://{LOOPBACK}:{mcp_proxy}{path}",
            mcp_direct_url=server_url,
            server_database_url=self.server_database_url,
            primary_dsn=primary.dsn(),
            replica_dsn=replica.dsn(),
            primary_proxy_dsn=self._app_dsn(self._proxy_port("pg-primary")),
            replica_proxy_dsn=self._app_dsn(self._proxy_port("pg-replica")),
            toxiproxy_api=self.toxiproxy.base_url,
            run_dir=str(self.run_dir),
        )
        return self.endpoints

    async def _start_toxiproxy(self) -> None:
        """Start toxiproxy-server; a port taken meanwhile makes it exit, and another is tried."""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            proc = self.registry.start(
                "toxiproxy", [str(self.toxiproxy_bin), "-host", LOOPBACK, "-port", str(port)]
            )
            probe = ToxiproxyClient(LOOPBACK, port, timeout_s=0.5)
            deadline = time.monotonic() + 10
            while proc.running() and time.monotonic() < deadline:
                try:
                    version = await asyncio.to_thread(probe.version)
                except ToxiproxyError:
                    await asyncio.sleep(0.05)
                    continue
                if proc.running():
                    self.toxiproxy = ToxiproxyClient(LOOPBACK, port)
                    self.toxiproxy_process = proc
                    self._versions["toxiproxy"] = version
                    return
            proc.stop(2)
        raise StackError(f"toxiproxy-server did not come up. Log tail:\n{proc.log_tail()}")

    def _cluster(self, name: str) -> PostgresCluster:
        return PostgresCluster(
            name=name,
            data_dir=self.run_dir / name,
            bin_dir=self.bin_dir,
            port=free_port(),
            socket_dir=self.run_dir / "sock",
            run_user=self.run_user,
            superuser_password=self.passwords["postgres"],
        )

    def _prepare_shared_dirs(self) -> Path:
        archive = self.run_dir / "wal-archive"
        for directory in (archive, self.run_dir / "sock"):
            directory.mkdir(exist_ok=True)
            if self.run_user:
                shutil.chown(directory, self.run_user, self.run_user)
        return archive

    async def _start_cluster(self, cluster: PostgresCluster) -> None:
        """Start; a port taken meanwhile is not an error: pick another and retry."""
        for attempt in range(START_ATTEMPTS):
            cluster.start(self.registry)
            try:
                await cluster.wait_ready(30)
                return
            except StackError:
                in_use = "already in use" in (cluster.process.log_tail() if cluster.process else "")
                cluster.stop()
                if not in_use or attempt + 1 == START_ATTEMPTS:
                    raise
                cluster.port = free_port()
                cluster.write_settings(self.run_dir / "wal-archive", self._settings(cluster.name))

    def _settings(self, name: str) -> dict[str, str]:
        pg = self.scenario.postgres
        return {**pg.settings, **(pg.replica_settings if name == "replica" else {})}

    async def _start_primary(self) -> PostgresCluster:
        archive = self._prepare_shared_dirs()
        primary = self._cluster("primary")
        await asyncio.to_thread(primary.initdb, archive, self._settings("primary"))
        await self._start_cluster(primary)
        self._versions["postgres"] = await primary.fetchval("SHOW server_version")
        await primary.execute(
            f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD '{self.passwords[REPLICATION_USER]}'"
        )
        await primary.execute(
            f"CREATE ROLE {APP_USER} WITH LOGIN PASSWORD '{self.passwords[APP_USER]}'"
        )
        await primary.execute(f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}")
        # The reference server's corrupting tool bypasses a trigger with it.
        await primary.execute(f"GRANT SET ON PARAMETER session_replication_role TO {APP_USER}")
        self.clusters["primary"] = primary
        return primary

    async def _start_replica(self, replication_proxy_port: int) -> PostgresCluster:
        replica = self._cluster("replica")
        await asyncio.to_thread(
            replica.basebackup_from,
            LOOPBACK,
            replication_proxy_port,
            self.passwords[REPLICATION_USER],
            self._settings("replica"),
            self.run_dir / "wal-archive",
        )
        await self._start_cluster(replica)
        self.clusters["replica"] = replica
        return replica

    async def _wait_streaming(self, primary: PostgresCluster, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            streaming = await primary.fetchval(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            )
            if streaming:
                return
            await asyncio.sleep(0.05)
        replica = self.clusters["replica"]
        tail = replica.process.log_tail() if replica.process else ""
        raise StackError(
            f"the replica did not start streaming from the primary within {timeout_s:g}s. Replica log:\n{tail}"
        )

    def _proxy(self, name: str, upstream_port: int) -> int:
        proxy = self.toxiproxy.create_proxy(name, f"{LOOPBACK}:0", f"{LOOPBACK}:{upstream_port}")
        return proxy.listen_port

    def _proxy_to_url(self, name: str, url: str) -> int:
        parts = urlsplit(url)
        proxy = self.toxiproxy.create_proxy(
            name, f"{LOOPBACK}:0", f"{parts.hostname}:{parts.port or 80}"
        )
        return proxy.listen_port

    def _proxy_port(self, name: str) -> int:
        return self.toxiproxy.proxy(name).listen_port

    def _app_dsn(self, *ports: int) -> str:
        hosts = ",".join(f"{LOOPBACK}:{p}" for p in ports)
        query = "?target_session_attrs=read-write" if len(ports) > 1 else ""
        return f"postgresql://{APP_USER}:{self.passwords[APP_USER]}@{hosts}/{APP_DATABASE}{query}"

    @property
    def server_database_url(self) -> str:
        """The DSN the server uses for the whole run: both proxies, read-write target."""
        return self._app_dsn(self._proxy_port("pg-primary"), self._proxy_port("pg-replica"))

    async def _start_server(self) -> str:
        """The MCP server instance(s); with several, HAProxy in front. Returns the URL the
        ``mcp`` proxy forwards to."""
        config = self.scenario.server
        if config.url:
            return config.url
        for index in range(config.instances):
            self.servers.append(await self._start_instance(index))
        if config.instances == 1:
            return self.servers[0].url
        for attempt in range(START_ATTEMPTS):
            balancer = HaproxyBalancer(free_port(), [s.port for s in self.servers], config.ready)
            process = balancer.start(self.registry)
            try:
                await balancer.wait_ready()
            except StackError:
                process.stop(2)
                if attempt + 1 == START_ATTEMPTS:
                    raise
                continue
            self.balancer = balancer
            return f"http://{LOOPBACK}:{balancer.port}{config.path}"
        raise AssertionError("unreachable")

    async def _start_instance(self, index: int) -> McpServerProcess:
        """One server instance; a port taken meanwhile is retried on another."""
        name = "mcp-server" if self.scenario.server.instances == 1 else f"mcp-server-{index}"
        for attempt in range(START_ATTEMPTS):
            server = McpServerProcess(self.scenario.server, free_port(), self.server_database_url)
            server.start(self.registry, name=name)
            try:
                await server.wait_ready()
                return server
            except StackError:
                log_tail = server.process.log_tail().lower() if server.process else ""
                server.stop()
                if "address already in use" not in log_tail or attempt + 1 == START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _instance(self, instance: int) -> McpServerProcess:
        if not self.servers:
            raise StackError(
                "the MCP server is not run by the harness (server.url): it cannot be killed or restarted"
            )
        return self.servers[instance]

    async def kill_server(self, instance: int = 0) -> KillResult:
        process = self._instance(instance).process
        assert process is not None
        await asyncio.to_thread(process.stop, 0, signal.SIGKILL)
        confirmed = await asyncio.to_thread(wait_gone, [process.pid], 5.0)
        return KillResult([process.pid], confirmed, time.monotonic())

    async def restart_server(self, instance: int = 0) -> None:
        server = self._instance(instance)
        lives = sum(
            1 for p in self.registry.processes if p.name.startswith(f"mcp-server-{instance}")
        )
        server.start(self.registry, name=f"mcp-server-{instance}-restart-{lives}")
        await server.wait_ready()

    def server_metrics_urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{s.port}/metrics" for s in self.servers]

    async def kill_primary(self) -> KillResult:
        return await asyncio.to_thread(self.clusters[self.primary_name].kill)

    async def promote_replica(self) -> None:
        standby = "replica" if self.primary_name == "primary" else "primary"
        await self.clusters[standby].promote(self.scenario.recovery.promote_timeout)
        self.primary_name = standby

    @property
    def current_primary_dsn(self) -> str:
        return self.clusters[self.primary_name].dsn()

    @property
    def current_primary_port(self) -> int:
        return self.clusters[self.primary_name].port

    def versions(self) -> dict[str, Any]:
        return {**self._versions, "postgres_binaries": postgres_version(self.bin_dir)}

    def log_paths(self) -> list[str]:
        return (
            [str(p.log_path) for p in self.registry.processes] if hasattr(self, "registry") else []
        )

    def inventory(self) -> list[dict[str, object]]:
        return self.registry.inventory() if hasattr(self, "registry") else []

    async def down(self) -> None:
        """Stop every process of the run (also after a failed up); keep the logs, drop the data."""
        if self._run_dir is None or not hasattr(self, "registry"):
            return
        for cluster in self.clusters.values():
            await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(self.registry.stop_all)
        for name in ("primary", "replica", "wal-archive", "sock"):
            shutil.rmtree(self.run_dir / name, ignore_errors=True)
        (self.run_dir / "owner.json").unlink(missing_ok=True)

    def remove_run_dir(self) -> None:
        if self._run_dir is not None and self._run_dir.exists():
            shutil.rmtree(self._run_dir, ignore_errors=True)
