"""The local backend: every part a real process on 127.0.0.1, no Docker.

Postgres primary (initdb) and hot standby (pg_basebackup -R through the
``pg-replication`` proxy), a ``toxiproxy-server`` with the four proxies, and
the MCP server, all in a private run directory under the system temp dir.

The run directory is the harness user's, mode 0700: it holds the logs, the owner
record and the load settings (which carry the scenario's expanded headers). When the
harness is root, Postgres runs as its own user, which needs to reach its data
directories, socket directory, WAL archive and base backups inside: those are its own
(0700), and the run directory lets it through, search only (``let_user_through``: an
ACL naming it): it cannot list the run directory, and the harness's files there that
matter are 0600 (its logs in a 0700 directory).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args
from urllib.parse import urlsplit

import asyncpg

from harness.config import PoolerConfig, Scenario, ServerConfig
from harness.stack import (
    AdminEndpoint,
    Endpoints,
    Handover,
    Promotion,
    Rejoin,
    Stack,
    WriterMove,
)
from harness.stack.backup import (
    BaseBackup,
    RestoreClock,
    RestorePoint,
    RestoreReport,
    RestoreTarget,
    backup_start_lsn,
    recovery_settings,
    replay_failure_hint,
)
from harness.stack.haproxy import HaproxyBalancer
from harness.stack.mcp_server import (
    McpServerProcess,
    Rollout,
    wait_until_ready,
    write_database_url_file,
)
from harness.stack.net import LOOPBACK, free_port, listens_on, taken_by_another
from harness.stack.patroni import REST_USER as PATRONI_REST_USER
from harness.stack.patroni import EtcdServer, PatroniNode, patroni_versions
from harness.stack.pgbouncer import PgBouncerPooler, pgbouncer_version
from harness.stack.postgres import (
    APP_DATABASE,
    APP_USER,
    REPLICATION_USER,
    SYNCHRONOUS_STANDBYS,
    KillResult,
    PostgresCluster,
    StackError,
    until_standby_attached,
)
from harness.stack.prerequisites import (
    pg_bin_dir,
    pg_run_user,
    postgres_version,
    require_runnable_by,
    toxiproxy_server,
)
from harness.stack.processes import (
    OwnedProcess,
    ProcessRegistry,
    become_subreaper,
    child_environment,
    let_user_through,
    poll_until,
    private_dir,
    reap_stale_runs,
    wait_gone,
)
from harness.stack.toxiproxy import ToxiproxyClient, ToxiproxyError

log = logging.getLogger(__name__)

RUN_DIR_PREFIX = "mcp-harness-"
PATRONI_START_S = 60.0
"""How long a Patroni node may take to run in its role, beyond one ``ttl`` (a leader
lock left by a previous node must expire first)."""
START_ATTEMPTS = 3
TOXIPROXY_LOG_LEVEL = "info"
"""toxiproxy-server logs at trace level unless ``LOG_LEVEL`` says otherwise (13 MB for a
55 s storm); info keeps one line per proxy started and per client accepted, and errors."""
FAULT_MODES: tuple[str, ...] = get_args(ServerConfig.model_fields["fault_mode"].annotation)


class LocalStack(Stack):
    backend = "local"

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
        require_runnable_by(self.bin_dir, self.run_user)
        self._run_dir = run_dir
        self.cpus = cpus
        self.passwords = {
            name: secrets.token_urlsafe(18)
            for name in ("postgres", APP_USER, REPLICATION_USER, PATRONI_REST_USER)
        }
        self.clusters: dict[str, PostgresCluster] = {}
        """Every cluster of the run by name, stopped ones too (their data stays until down)."""
        self.primary_name = "primary"
        self.replica_name = "replica"
        self.base_backups: list[BaseBackup] = []
        self.restore_count = 0
        self.servers: list[McpServerProcess] = []
        self.server_lifecycle = asyncio.Lock()
        """Held while server instances are stopped and started (a restart, a rollout, a
        restore): a rollback and a restore never stop and start the same instance at once."""
        self.balancer: HaproxyBalancer | None = None
        self.pooler: PgBouncerPooler | None = None
        self.dcs: EtcdServer | None = None
        self.patroni_nodes: dict[str, PatroniNode] = {}
        """Under ``topology.failover: patroni``: each node by its cluster's name."""
        self._watching: asyncio.Task[None] | None = None
        self.toxiproxy_process: OwnedProcess | None = None
        self._versions: dict[str, Any] = {}
        self._writer_moves: list[WriterMove] = []
        self._moving: asyncio.Task[None] | None = None
        self._rejoins: list[Rejoin] = []
        self._rejoining: asyncio.Task[None] | None = None
        self._reaping: asyncio.Task[None] | None = None
        self._database_url_file: Path | None = None
        """The database URL handed to a server the user runs (server.database_url_file)."""
        self._killed_node: PatroniNode | None = None

    @property
    def run_dir(self) -> Path:
        assert self._run_dir is not None, "stack is not up"
        return self._run_dir

    async def up(self) -> Endpoints:
        """Bring every part up; a part that fails stops those already started (also when
        ``up()`` is called directly rather than through ``async with``)."""
        try:
            return await self._up()
        except BaseException:
            await self.down()
            raise

    async def _up(self) -> Endpoints:
        become_subreaper()
        parent = Path(tempfile.gettempdir())
        for stale in reap_stale_runs(parent, RUN_DIR_PREFIX):
            log.warning("removed what a dead run left behind: %s", stale)
        if self._run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX, dir=parent))
        self.registry = ProcessRegistry(self.run_dir, cpus=self.cpus)
        private_dir(self.run_dir)
        if self.run_user is not None:
            let_user_through(self.run_dir, self.run_user)
        self.registry.save()
        await self._start_toxiproxy()
        patroni = self.scenario.topology.failover == "patroni"
        if patroni:
            primary, patroni_replica = await self._start_patroni_nodes()
        else:
            primary = await self._start_primary()
        writer = self._proxy("pg-primary", primary.port)
        if self.scenario.topology.pooler is not None:
            await self._start_pooler(self.scenario.topology.pooler, writer)
        # Under Patroni the replica streams from the leader's own port (Patroni's
        # connect_address); the proxy is there for scenarios that name it.
        replication = self._proxy("pg-replication", primary.port)
        # The server starts while the replica is cloned (the two slowest parts, side by
        # side). Its DSN needs the pg-replica proxy now: it points at the primary until the
        # replica answers (harmless: the DSN targets read-write, which the primary is).
        self._proxy("pg-replica", primary.port)
        if patroni:
            replica, server_url = patroni_replica, await self._start_server()
            await self._repoint("pg-replica", replica.port)
            self._watching = asyncio.create_task(self._follow_patroni())
            self._reaping = asyncio.create_task(self._reap_patronis_postmasters())
        else:
            try:
                async with asyncio.TaskGroup() as parts:
                    cloned = parts.create_task(self._start_replica(replication))
                    started = parts.create_task(self._start_server())
            except ExceptionGroup as failed:  # the part that failed first, as a lone error
                raise failed.exceptions[0] from None
            replica, server_url = cloned.result(), started.result()
            await self._repoint("pg-replica", replica.port)
            await self._wait_streaming(primary, replica)
            await self._synchronous_once_streaming(primary)
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
        if self.scenario.recovery.restore is not None:
            await self.take_base_backup()
        return self.endpoints

    async def _start_toxiproxy(self) -> None:
        """Start toxiproxy-server; on a port taken meanwhile (it logs the failed bind and
        keeps running) another is tried. Only our own process's API is spoken to."""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            proc = self.registry.start(
                "toxiproxy",
                [str(self.toxiproxy_bin), "-host", LOOPBACK, "-port", str(port)],
                env=child_environment({"LOG_LEVEL": TOXIPROXY_LOG_LEVEL}),
            )
            probe = ToxiproxyClient(LOOPBACK, port, timeout_s=0.5)
            deadline = time.monotonic() + 10
            while proc.running() and time.monotonic() < deadline:
                if not listens_on(proc.pid, port):
                    if await asyncio.to_thread(taken_by_another, proc.pid, port):
                        break  # it keeps running without its API: another port
                    await asyncio.sleep(0.05)
                    continue
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

    async def _start_pooler(self, config: PoolerConfig, writer_port: int) -> None:
        """PgBouncer in front of the writer endpoint, and the ``pg-pooler`` proxy in front
        of it (a hop faults can reach); a port taken meanwhile is retried on another."""

        async def start() -> PgBouncerPooler:
            pooler = PgBouncerPooler(config, free_port(), APP_DATABASE, writer_port)
            pooler.start(self.registry, APP_USER, self.passwords[APP_USER], self.run_user)
            return pooler

        self.pooler = await _started_on_a_free_port(start)
        self._versions["pgbouncer"] = pgbouncer_version()
        self._proxy("pg-pooler", self.pooler.port)

    def _cluster(self, name: str) -> PostgresCluster:
        """A new cluster in ``run_dir/name``, known to the run at once so down() removes it."""
        cluster = PostgresCluster(
            name=name,
            data_dir=self.run_dir / name,
            bin_dir=self.bin_dir,
            port=free_port(),
            socket_dir=self.run_dir / "sock",
            run_user=self.run_user,
            superuser_password=self.passwords["postgres"],
        )
        self.clusters[name] = cluster
        return cluster

    @property
    def archive_dir(self) -> Path:
        return self.run_dir / "wal-archive"

    def _prepare_shared_dirs(self) -> Path:
        """The WAL archive (the whole database, password hashes included) and the socket
        directory: the Postgres user's alone."""
        archive = self.archive_dir
        for directory in (archive, self.run_dir / "sock"):
            private_dir(directory, owner=self.run_user)
        return archive

    async def _start_cluster(
        self,
        cluster: PostgresCluster,
        ready_timeout_s: float = 30,
        settings: dict[str, str] | None = None,
    ) -> None:
        """Start; a port taken meanwhile is not an error: pick another and retry (with
        ``settings``, default the cluster's scenario settings)."""
        for attempt in range(START_ATTEMPTS):
            cluster.start(self.registry)
            try:
                await cluster.wait_ready(ready_timeout_s)
                return
            except StackError:
                in_use = "already in use" in (cluster.process.log_tail() if cluster.process else "")
                cluster.stop()
                if not in_use or attempt + 1 == START_ATTEMPTS:
                    raise
                cluster.port = free_port()
                cluster.write_settings(self.archive_dir, settings or self._settings(cluster.name))

    def _settings(self, name: str) -> dict[str, str]:
        """The scenario's settings for a cluster; replicas (``replica``, ``replica-r<n>``)
        get ``replica_settings`` on top."""
        pg = self.scenario.postgres
        replica = name.startswith("replica")
        return {**pg.settings, **(pg.replica_settings if replica else {})}

    async def _synchronous_once_streaming(self, primary: PostgresCluster) -> None:
        """Synchronous replication as the scenario asks, now that the standby streams: a
        commit is then acknowledged only once the standby has it."""
        wanted = self._settings(primary.name).get(SYNCHRONOUS_STANDBYS)
        if not wanted:
            return
        primary.write_settings(self.archive_dir, self._settings(primary.name))
        await primary.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while await primary.fetchval(f"SHOW {SYNCHRONOUS_STANDBYS}") != wanted:
            if time.monotonic() > deadline:
                raise StackError(f"postgres.settings.{SYNCHRONOUS_STANDBYS} did not take effect")
            await asyncio.sleep(0.05)

    async def _start_primary(self) -> PostgresCluster:
        archive = self._prepare_shared_dirs()
        primary = self._cluster("primary")
        alone = until_standby_attached(self._settings("primary"))
        await asyncio.to_thread(primary.initdb, archive, alone)
        await self._start_cluster(primary, settings=alone)
        await primary.execute(
            f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD '{self.passwords[REPLICATION_USER]}'"
        )
        await self._create_application(primary)
        return primary

    async def _start_patroni_nodes(self) -> tuple[PostgresCluster, PostgresCluster]:
        """etcd, then the Patroni node that bootstraps the primary, then the one that
        clones it; each waited for as Patroni reports it (running, streaming)."""
        self._prepare_shared_dirs()
        self._versions.update(patroni_versions())
        self.dcs = EtcdServer(free_port(), free_port(), self.run_dir / "etcd")
        self.dcs.start(self.registry, self.run_user)
        await self.dcs.wait_ready()
        dcs = self.scenario.topology.patroni
        timeout_s = PATRONI_START_S + dcs.ttl
        for name, role in (("primary", "primary"), ("replica", "replica")):
            cluster = self._cluster(name)
            private_dir(cluster.data_dir, owner=self.run_user)
            node = PatroniNode(cluster, free_port())
            config = node.config(dcs, self.dcs, self.passwords, self._settings(name))
            node.start(self.registry, config, self.run_user)
            self.patroni_nodes[name] = node
            await node.wait_role(role, timeout_s)
            if role == "primary":
                await self._create_application(cluster)
        if dcs.synchronous_mode:
            await self.patroni_nodes["primary"].wait_synchronous_standby("replica", timeout_s)
        return self.clusters["primary"], self.clusters["replica"]

    async def _follow_patroni(self, interval_s: float = 0.05) -> None:
        """Watch Patroni's leader key in etcd: once the standby holds it, its promotion has
        begun; once its Postgres takes writes, it is done. The promotion began after the
        last answer that still named another leader: that instant is recorded (the
        detection is then at most one poll short, never long). The stack then follows:
        its names, the writer endpoint."""
        assert self.dcs is not None
        last_other = time.monotonic()
        while True:
            answered, leader = await asyncio.to_thread(self.dcs.leader)
            standby = self.patroni_nodes.get(self.replica_name)
            if standby is None or not answered or leader != standby.name:
                if answered:
                    last_other = time.monotonic()
                await asyncio.sleep(interval_s)
                continue
            while not await _takes_writes(standby.cluster):
                await asyncio.sleep(interval_s)
            self._promotion_log().append(Promotion(last_other, time.monotonic(), "patroni"))
            demoted = self.patroni_nodes.get(self.primary_name)
            self._after_promotion(standby.cluster)
            if demoted is not None and demoted.process is not None and demoted.process.running():
                self._rejoining = asyncio.create_task(self._follow_rejoin(demoted))

    async def _reap_patronis_postmasters(self, interval_s: float = 0.2) -> None:
        """Patroni detaches its postmasters, and this process adopts them (a subreaper):
        one that stops (a demotion) must be reaped here, or Patroni waits for it forever."""
        while True:
            self.registry.reap_adopted()
            await asyncio.sleep(interval_s)

    async def _follow_rejoin(self, demoted: PatroniNode, timeout_s: float = 120) -> None:
        """A demoted leader whose Patroni lives (a switchover) comes back as the new
        leader's replica: recorded, and the ``pg-replica`` proxy follows it. A node that
        never does is left as it is (the run's logs say why)."""
        try:
            await demoted.wait_role("replica", timeout_s)
        except StackError as exc:
            log.warning("%s", exc)
            return
        self._rejoins.append(Rejoin(time.monotonic(), demoted.name))
        await self._repoint("pg-replica", demoted.cluster.port)

    @property
    def rejoins(self) -> list[Rejoin]:
        return list(self._rejoins)

    @property
    def pooler_log(self) -> Path | None:
        process = None if self.pooler is None else self.pooler.process
        return None if process is None else process.log_path

    async def restart_killed_primary(self) -> None:
        """The killed node's Patroni starts again with its own config and data: it finds
        another leader and rejoins as its replica, rewinding its diverged WAL first."""
        node = self._killed_node
        if node is None or self.dcs is None:
            await super().restart_killed_primary()  # raises: nothing would rejoin it
            return
        config = node.config(
            self.scenario.topology.patroni, self.dcs, self.passwords, self._settings(node.name)
        )
        node.start(self.registry, config, self.run_user)
        self._killed_node = None
        self._rejoining = asyncio.create_task(self._follow_rejoin(node))

    async def switchover(self, timeout_s: float) -> Handover:
        """Patroni's REST API hands the primary over (``POST /switchover`` to the leader);
        confirmed when the stack followed the new leader (``_follow_patroni``)."""
        leader = self.patroni_nodes.get(self.primary_name)
        candidate = self.patroni_nodes.get(self.replica_name)
        if leader is None or candidate is None:
            return await super().switchover(timeout_s)  # raises: nothing hands it over
        requested, promotions = time.monotonic(), len(self.promotions)
        status, answer = await asyncio.to_thread(
            leader.request_switchover,
            candidate.name,
            self.passwords[PATRONI_REST_USER],
            timeout_s,
        )

        async def followed() -> bool:
            return len(self.promotions) > promotions and self.primary_name == candidate.name

        remaining_s = max(5.0, requested + timeout_s - time.monotonic())
        confirmed = status == 200 and await poll_until(followed, remaining_s, interval_s=0.05)
        return Handover(
            requested,
            confirmed,
            leader.cluster.port,
            candidate.cluster.port,
            f"patroni answered {status}: {answer.strip()[:200]}",
        )

    async def _create_application(self, primary: PostgresCluster) -> None:
        """The application's role and database, as the server will connect."""
        self._versions["postgres"] = await primary.fetchval("SHOW server_version")
        await primary.execute(
            f"CREATE ROLE {APP_USER} WITH LOGIN PASSWORD '{self.passwords[APP_USER]}'"
        )
        await primary.execute(f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}")
        # The reference server's corrupting tool bypasses a trigger with it.
        await primary.execute(f"GRANT SET ON PARAMETER session_replication_role TO {APP_USER}")

    async def _start_replica(
        self, replication_proxy_port: int, name: str = "replica"
    ) -> PostgresCluster:
        """A hot standby cloned and streaming through the ``pg-replication`` proxy."""
        replica = self._cluster(name)
        await asyncio.to_thread(
            replica.basebackup_from,
            LOOPBACK,
            replication_proxy_port,
            self.passwords[REPLICATION_USER],
            self._settings(name),
            self.archive_dir,
        )
        await self._start_cluster(replica)
        return replica

    async def _wait_streaming(
        self, primary: PostgresCluster, replica: PostgresCluster, timeout_s: float = 30
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            streaming = await primary.fetchval(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            )
            if streaming:
                return
            await asyncio.sleep(0.05)
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

    async def _repoint(self, proxy: str, upstream_port: int) -> None:
        """Send a proxy to another cluster; it keeps its listen port (and toxics), and the
        connections open through it are dropped."""
        await asyncio.to_thread(
            self.toxiproxy.update_proxy, proxy, upstream=f"{LOOPBACK}:{upstream_port}"
        )

    def _app_dsn(self, *ports: int) -> str:
        hosts = ",".join(f"{LOOPBACK}:{p}" for p in ports)
        query = "?target_session_attrs=read-write" if len(ports) > 1 else ""
        return f"postgresql://{APP_USER}:{self.passwords[APP_USER]}@{hosts}/{APP_DATABASE}{query}"

    @property
    def server_database_url(self) -> str:
        """The DSN the server uses for the whole run: both proxies with a read-write target,
        or the writer endpoint alone (``topology.writer: endpoint``)."""
        if self.scenario.topology.pooler is not None:
            return self._app_dsn(self._proxy_port("pg-pooler"))
        if self.scenario.topology.writer == "endpoint":
            return self._app_dsn(self._proxy_port("pg-primary"))
        return self._app_dsn(self._proxy_port("pg-primary"), self._proxy_port("pg-replica"))

    async def _start_server(self) -> str:
        """The MCP server instance(s); with several, HAProxy in front. Returns the URL the
        ``mcp`` proxy forwards to."""
        config = self.scenario.server
        if config.setup_sql:
            await self._apply_setup_sql(Path(config.setup_sql))
        if config.url:
            if config.database_url_file:
                await self._hand_over_database_url(config)
            return config.url
        for index in range(config.instances):
            self.servers.append(await self._start_instance(index))
        if config.instances == 1:
            return self.servers[0].url

        async def start() -> HaproxyBalancer:
            balancer = HaproxyBalancer(free_port(), [s.port for s in self.servers], config.ready)
            balancer.start(self.registry)
            return balancer

        self.balancer = await _started_on_a_free_port(start)
        return f"http://{LOOPBACK}:{self.balancer.port}{config.path}"

    async def _hand_over_database_url(self, config: ServerConfig) -> None:
        """A server run by the user learns the run's database from a file, and is waited for."""
        assert config.url and config.database_url_file and config.database_url_env
        path = Path(config.database_url_file)
        write_database_url_file(path, config.database_url_env, self.server_database_url)
        self._database_url_file = path
        origin = urlsplit(config.url)
        ready = f"{origin.scheme}://{origin.netloc}{config.ready or origin.path}"
        await wait_until_ready(ready, config)

    async def _start_instance(self, index: int) -> McpServerProcess:
        """One server instance; a port taken meanwhile is retried on another."""
        name = self._instance_name(index)
        for attempt in range(START_ATTEMPTS):
            server = McpServerProcess(
                self.scenario.server,
                free_port(),
                self.server_database_url,
                statement_cache=not self._transaction_pooling,
            )
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

    @property
    def _transaction_pooling(self) -> bool:
        pooler = self.scenario.topology.pooler
        return pooler is not None and pooler.pool_mode == "transaction"

    def _instance_name(self, index: int) -> str:
        return "mcp-server" if self.scenario.server.instances == 1 else f"mcp-server-{index}"

    def _owned_servers(self) -> list[McpServerProcess]:
        if not self.servers:
            raise StackError(
                "the MCP server is not run by the harness (server.url): it cannot be killed, "
                "restarted or redeployed"
            )
        return self.servers

    async def _apply_setup_sql(self, path: Path) -> None:
        """The user's schema, as the application's role on its database (what the server
        will connect as), straight to the primary."""
        primary = self.clusters[self.primary_name]
        dsn = primary.dsn(user=APP_USER, password=self.passwords[APP_USER], database=APP_DATABASE)
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                await conn.execute(path.read_text(), timeout=60)
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            raise StackError(
                f"server.setup_sql {path} failed: {exc}. Fix the SQL (it runs as {APP_USER} "
                f"on database {APP_DATABASE}) and run again."
            ) from None

    def _instance(self, instance: int) -> McpServerProcess:
        return self._owned_servers()[instance]

    async def kill_server(self, instance: int = 0) -> KillResult:
        process = self._instance(instance).process
        assert process is not None
        await asyncio.to_thread(process.stop, 0, signal.SIGKILL)
        confirmed = await asyncio.to_thread(wait_gone, [process.pid], 5.0)
        return KillResult([process.pid], confirmed, time.monotonic())

    async def restart_server(self, instance: int = 0) -> None:
        async with self.server_lifecycle:
            await self._relaunch(instance, "restart")

    async def _relaunch(
        self, instance: int, event: str, release: ServerConfig | None = None
    ) -> float:
        """Start this (stopped) instance again on its port, in ``release`` if given, else in
        the release it ran; it is ready when this returns. Returns when it was started."""
        server = self._instance(instance)
        if server.process is not None and server.process.running():
            await asyncio.to_thread(server.stop)
        if release is not None:
            server.config = release
        server.start(self.registry, name=self._life_name(instance, event))
        started = time.monotonic()
        await server.wait_ready()
        return started

    def _life_name(self, instance: int, event: str) -> str:
        """``mcp-server-<i>-<event>-<n>``, n counting the instance's earlier lives: every
        start of an instance has its own process name and log file."""
        first = self._instance_name(instance)
        lives = sum(
            1
            for p in self.registry.processes
            if p.name == first or p.name.startswith(f"mcp-server-{instance}-")
        )
        return f"mcp-server-{instance}-{event}-{lives}"

    async def deploy_release(
        self, command: list[str] | None = None, fault_mode: str | None = None
    ) -> Rollout:
        release = self._release(command, fault_mode)
        first_started: float | None = None
        async with self.server_lifecycle:
            for index in range(len(self._owned_servers())):
                started = await self._relaunch(index, "release", release)
                first_started = first_started if first_started is not None else started
        assert first_started is not None, "_owned_servers refuses a stack without servers"
        return Rollout(first_started, time.monotonic())

    def _release(self, command: list[str] | None, fault_mode: str | None) -> ServerConfig:
        """The server settings of a release: the user's argv, the reference server in a
        fault mode, or (neither) the scenario's own."""
        config = self.scenario.server
        if command is not None and fault_mode is not None:
            raise StackError("deploy_release: give the release as command or fault_mode, not both")
        if command is not None:
            return config.model_copy(update={"command": list(command), "fault_mode": "none"})
        if fault_mode is None:
            return config
        if fault_mode not in FAULT_MODES:
            raise StackError(
                f"deploy_release: unknown fault mode {fault_mode!r}; known: {', '.join(FAULT_MODES)}"
            )
        if config.command:
            raise StackError(
                "deploy_release: fault modes belong to the reference server; for your server "
                "(server.command) give the argv of its faulty release as command"
            )
        return config.model_copy(update={"fault_mode": fault_mode})

    def server_metrics_urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{s.port}/metrics" for s in self.servers]

    def server_admin(self) -> list[AdminEndpoint]:
        return [
            AdminEndpoint(self._instance_name(index), server.admin_url, server.admin_token)
            for index, server in enumerate(self.servers)
            if server.admin_url is not None and server.admin_token is not None
        ]

    async def kill_primary(self) -> KillResult:
        node = self.patroni_nodes.get(self.primary_name)
        if node is not None:  # the machine dies, its Patroni with it
            self._killed_node = node
            return await asyncio.to_thread(node.kill)
        return await asyncio.to_thread(self.clusters[self.primary_name].kill)

    async def _promote_standby(self) -> None:
        if self.patroni_nodes:
            raise StackError(
                "topology.failover: patroni promotes by itself; the harness does not (use "
                "failover: scripted for a promotion of your own)"
            )
        standby = self.clusters.get(self.replica_name)
        if standby is None or standby.process is None or not standby.process.running():
            raise StackError(
                "no standby is running to promote (after a restore, rebuild_replica() first)"
            )
        await standby.promote(self.scenario.recovery.promote_timeout)
        self._after_promotion(standby)

    def _after_promotion(self, promoted: PostgresCluster) -> None:
        """The promoted node is the primary now; a writer endpoint follows it."""
        self.primary_name, self.replica_name = self.replica_name, self.primary_name
        if self.scenario.topology.writer == "endpoint":
            self._moving = asyncio.create_task(self._move_writer_endpoint(promoted))

    async def _move_writer_endpoint(self, promoted: PostgresCluster) -> None:
        """The writer endpoint follows the promotion after its propagation delay, as a
        service endpoint or DNS record does; connections still open through it drop."""
        await asyncio.sleep(self.scenario.topology.endpoint_move_delay)
        await self._repoint("pg-primary", promoted.port)
        self._writer_moves.append(WriterMove(time.monotonic(), promoted.name, promoted.port))

    @property
    def writer_moves(self) -> list[WriterMove]:
        return list(self._writer_moves)

    async def take_base_backup(self) -> BaseBackup:
        primary = self.clusters[self.primary_name]
        number = len(self.base_backups) + 1
        path = self.run_dir / f"base-backup-{number}"
        label = f"mcp-harness base backup {number}"
        shutil.rmtree(path, ignore_errors=True)  # what a failed attempt left
        started = time.monotonic()
        await asyncio.to_thread(primary.backup_to, path, label, self.passwords[REPLICATION_USER])
        done = time.monotonic()
        start_lsn = backup_start_lsn((path / "backup_label").read_text())
        backup = BaseBackup(path, label, start_lsn, dt.datetime.now(dt.UTC), done, done - started)
        self.base_backups.append(backup)
        return backup

    async def create_restore_point(self, name: str) -> RestorePoint:
        primary = self.clusters[self.primary_name]
        wall, t_start = dt.datetime.now(dt.UTC), time.monotonic()
        try:
            lsn = await primary.fetchval("SELECT pg_create_restore_point($1)::text", name)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StackError(
                f"could not create restore point {name!r} on {primary.name}: {exc}"
            ) from None
        return RestorePoint(name, str(lsn), t_start, time.monotonic(), wall)

    async def restore(self, target: RestoreTarget, timeout_s: float) -> RestoreReport:
        if not self.base_backups:
            raise StackError(
                "no base backup to restore from: the stack takes one at up() when "
                "recovery.restore is set, or call take_base_backup() first"
            )
        backup = self.base_backups[-1]
        deadline = time.monotonic() + timeout_s

        def remaining_s() -> float:
            return max(0.5, deadline - time.monotonic() - 0.5)

        clock = RestoreClock()
        holding = (
            False  # the server lifecycle lock, taken in the stop step (it may wait for a rollout)
        )
        try:
            async with asyncio.timeout(timeout_s):
                with clock.step("stop"):
                    await self.server_lifecycle.acquire()
                    holding = True
                    await self._stop_for_restore(min(60.0, remaining_s()))
                with clock.step("restore_base_backup"):
                    self.restore_count += 1
                    cluster = self._cluster(f"primary-r{self.restore_count}")
                    await asyncio.to_thread(
                        cluster.restore_from,
                        backup.path,
                        self.archive_dir,
                        self._settings(cluster.name),
                        recovery_settings(target, self.archive_dir),
                    )
                with clock.step("replay_wal"):
                    await self._replay_to_target(cluster, backup, remaining_s)
                    stopped_at_lsn = await cluster.fetchval("SELECT pg_last_wal_replay_lsn()::text")
                    last_commit = await cluster.fetchval("SELECT pg_last_xact_replay_timestamp()")
                with clock.step("promote"):
                    await cluster.end_recovery(60)
                    await asyncio.to_thread(cluster.drop_recovery_settings)
                    self.primary_name = cluster.name
                with clock.step("reattach_server"):
                    await self._reattach(cluster)
        except TimeoutError:
            raise clock.timed_out(timeout_s) from None
        finally:
            if holding:
                self.server_lifecycle.release()
        return RestoreReport(
            steps=clock.steps,
            target=target,
            stopped_at_lsn=str(stopped_at_lsn),
            last_replayed_commit=(
                last_commit.isoformat() if isinstance(last_commit, dt.datetime) else None
            ),
            base_backup=backup.label,
            new_primary_port=cluster.port,
        )

    async def _stop_for_restore(self, archive_timeout_s: float) -> None:
        """Servers first (no write lands after the last archived WAL), then the primary's
        current WAL into the archive, then every cluster (their data stays for forensics)."""
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in self.servers))
        primary = self.clusters[self.primary_name]
        if primary.process is not None and primary.process.running():
            await primary.archive_current_wal(self.archive_dir, archive_timeout_s)
        await asyncio.gather(*(asyncio.to_thread(c.stop) for c in self.clusters.values()))

    async def _replay_to_target(
        self, cluster: PostgresCluster, backup: BaseBackup, remaining_s: Callable[[], float]
    ) -> None:
        """Start the restored cluster and wait until replay pauses at the target."""
        try:
            await self._start_cluster(cluster, ready_timeout_s=remaining_s())
            await cluster.wait_replay_paused(remaining_s())
        except StackError as exc:
            tail = cluster.process.log_tail() if cluster.process else ""
            raise StackError(f"{exc}\n{replay_failure_hint(tail, backup)}") from None

    async def _reattach(self, cluster: PostgresCluster) -> None:
        """The proxies to the restored primary (pg-replica too, until a replica is rebuilt:
        the read-write target picks the primary anyway), then every server instance in
        the scenario's own release, started together."""
        await self._repoint("pg-primary", cluster.port)
        await self._repoint("pg-replica", cluster.port)
        await asyncio.gather(
            *(
                self._relaunch(index, "restore", self.scenario.server)
                for index in range(len(self.servers))
            )
        )

    async def rebuild_replica(self) -> float:
        started = time.monotonic()
        primary = self.clusters[self.primary_name]
        previous = self.clusters.get(self.replica_name)
        if previous is not None:
            await asyncio.to_thread(previous.stop)
        # After a promotion the server reaches the new primary through pg-replica (the DSN's
        # second host): pg-primary must lead to it before pg-replica leads to the standby.
        current = await asyncio.to_thread(self.toxiproxy.proxy, "pg-primary")
        if current.upstream != f"{LOOPBACK}:{primary.port}":
            await self._repoint("pg-primary", primary.port)
        await self._repoint("pg-replication", primary.port)
        number = sum(1 for name in self.clusters if name.startswith("replica-r")) + 1
        replica = await self._start_replica(
            self._proxy_port("pg-replication"), f"replica-r{number}"
        )
        await self._wait_streaming(primary, replica)
        await self._repoint("pg-replica", replica.port)
        self.replica_name = replica.name
        return time.monotonic() - started

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
            return  # up() made nothing yet (the registry exists as soon as the directory)
        for task in (self._moving, self._watching, self._rejoining):
            if task is not None:
                task.cancel()
        # Patroni stops its postmaster and waits for it to go: the reaper keeps going.
        for node in self.patroni_nodes.values():
            await asyncio.to_thread(node.stop)
        if self._reaping is not None:
            self._reaping.cancel()
        for cluster in self.clusters.values():
            await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(self.registry.stop_all)
        data = [c.data_dir for c in self.clusters.values()]
        for path in (*data, *self.run_dir.glob("base-backup-*"), self.archive_dir):
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.run_dir / "sock", ignore_errors=True)
        (self.run_dir / "owner.json").unlink(missing_ok=True)
        if self._database_url_file is not None:
            self._database_url_file.unlink(missing_ok=True)  # it holds the password

    def remove_run_dir(self) -> None:
        if self._run_dir is not None and self._run_dir.exists():
            shutil.rmtree(self._run_dir, ignore_errors=True)


async def _takes_writes(cluster: PostgresCluster) -> bool:
    try:
        return await cluster.fetchval("SELECT pg_is_in_recovery()", timeout_s=1) is False
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False


class _Waitable(Protocol):
    process: OwnedProcess | None

    async def wait_ready(self) -> None: ...


_Part = TypeVar("_Part", bound=_Waitable)


async def _started_on_a_free_port(start: Callable[[], Awaitable[_Part]]) -> _Part:
    """``start()`` a part on a free port until it answers, at most START_ATTEMPTS times (a
    port taken meanwhile); the last failure, with its log's tail, is raised."""
    for attempt in range(START_ATTEMPTS):
        part = await start()
        try:
            await part.wait_ready()
            return part
        except StackError:
            if part.process is not None:
                part.process.stop(2)
            if attempt + 1 == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")
