"""The docker backend: the same topology as the local one, as containers (Testcontainers).

A Docker network per run; the primary and the hot standby from the official Postgres
image, Toxiproxy from its image with the four proxies, the MCP server from the image
built from ``harness/docker/Dockerfile`` (or a user's). The containers are specified in
``containers.py``; here they are started in order, faulted and stopped.

Faults are container operations: ``kill_primary`` is a SIGKILL of the primary's
container (its postgres is the container's first process: when it dies, the kernel
ends every other process in the container, as a machine losing power), ``kill_server``
and ``restart_server`` kill and start the server's container, ``partition`` disconnects
a container from the run's network and connects it again.

Cleanup: ``down()`` removes every container and the network (also after a failed
``up()``, on Ctrl-C or an exception: the run calls it in ``finally``). If the harness
itself dies, testcontainers' reaper (Ryuk) removes what carries its session label, and
the next ``up()`` removes containers and networks of this machine's dead runs (for an
engine where Ryuk is disabled). Ryuk's port is published on 127.0.0.1 only, like every
other (``containers.install_loopback_reaper``).

Not implemented here (StackError names the operation and points at ``--backend local``):
point-in-time restore (base backups, restore, rebuild of the replica), rolling
redeploys (``bad_deployment``), several server instances, and ``server.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from testcontainers.core.network import Network

import harness
from harness.config import Scenario
from harness.shipped import PACKAGE_DIR
from harness.stack import AdminEndpoint, Endpoints, PartitionCut, Stack
from harness.stack.backup import BaseBackup, RestorePoint, RestoreReport, RestoreTarget
from harness.stack.containers import (
    DOCKER_DIR,
    PROXY_PORTS,
    RUN_LABEL,
    SERVER_ALIAS,
    TOXIPROXY_API_PORT,
    HarnessContainer,
    McpServerContainer,
    PostgresPrimary,
    PostgresReplica,
    ToxiproxyContainer,
    app_dsn,
    images,
    install_loopback_reaper,
    server_image_tag,
)
from harness.stack.mcp_server import Rollout
from harness.stack.net import LOOPBACK, free_port
from harness.stack.postgres import (
    APP_DATABASE,
    APP_USER,
    REPLICATION_USER,
    SUPERUSER,
    SYNCHRONOUS_STANDBYS,
    KillResult,
    StackError,
    until_standby_attached,
)
from harness.stack.prerequisites import DockerUnreachable, docker_engine_info, docker_sdk
from harness.stack.processes import ProcessRegistry, become_subreaper, is_alive, private_dir
from harness.stack.toxiproxy import ToxiproxyClient

log = logging.getLogger(__name__)

RUN_DIR_PREFIX = "mcp-harness-docker-"
HOST_LABEL = "io.mcp-harness.host"
OWNER_LABEL = "io.mcp-harness.owner-pid"
STOPPED = ("exited", "dead")
LOCAL_ONLY = "run this scenario with --backend local"


def docker_refusals(scenario: Scenario) -> list[str]:
    """What of the scenario the docker backend cannot run, each saying what to do instead
    (empty: it can run all of it)."""
    refusals = []
    server = scenario.server
    if scenario.recovery.restore is not None:
        refusals.append(
            "recovery.restore: point-in-time restore (base backup, WAL archive, restore, "
            f"rebuild_replica) is not implemented by the docker backend; {LOCAL_ONLY}"
        )
    if server.url:
        refusals.append(
            "server.url: the docker backend runs the server in its network and cannot put "
            f"a server you run in front of its proxies; {LOCAL_ONLY}"
        )
    if server.instances > 1:
        refusals.append(
            f"server.instances: {server.instances} instances behind HAProxy are not "
            f"implemented by the docker backend (one instance); {LOCAL_ONLY}"
        )
    if server.command and not scenario.docker.server_image:
        refusals.append(
            "server.command: runs a program on this machine; for the docker backend give "
            "docker.server_image (an image holding your server; server.command then runs in "
            f"it), or {LOCAL_ONLY}"
        )
    return refusals


def kill_container(container: Any, timeout_s: float = 10.0, poll_s: float = 0.05) -> KillResult:
    """SIGKILL a (docker-py) container; confirmed when the engine reports it stopped.

    Its pid is the container's first process as the host sees it; when it dies the
    kernel kills every other process of the container's PID namespace."""
    container.reload()
    pid = int(container.attrs.get("State", {}).get("Pid") or 0)
    try:
        container.kill(signal="SIGKILL")
    except docker_sdk().errors.APIError as exc:  # not running (killed already): not a new kill
        raise StackError(f"could not kill container {container.name}: {exc}") from None
    deadline = time.monotonic() + timeout_s
    while True:
        container.reload()
        if container.status in STOPPED:
            return KillResult([pid], True, time.monotonic())
        if time.monotonic() >= deadline:
            return KillResult([pid], False, time.monotonic())
        time.sleep(poll_s)


def disconnect_container(network: Any, container: Any, network_name: str) -> bool:
    """Cut a (docker-py) container off a network; True when it is confirmed gone from it."""
    network.disconnect(container, force=True)
    container.reload()
    return network_name not in container.attrs.get("NetworkSettings", {}).get("Networks", {})


def connect_container(network: Any, container: Any, network_name: str, alias: str) -> bool:
    """Connect it again under its alias (Toxiproxy resolves names per connection, so
    the proxies find it at its new address); True when the engine lists it there."""
    network.connect(container, aliases=[alias])
    container.reload()
    return network_name in container.attrs.get("NetworkSettings", {}).get("Networks", {})


def network_gateway(attrs: dict[str, Any]) -> str | None:
    """The gateway address of a network (``docker network inspect``), if it has one."""
    for config in attrs.get("IPAM", {}).get("Config") or []:
        if config.get("Gateway"):
            return str(config["Gateway"]).split("/")[0]
    return None


def server_context_digest() -> str:
    """A digest of what goes into the reference server's image: a changed server or
    Dockerfile gets a new tag, so a stale image is never run."""
    digest = hashlib.sha256()
    sources = [
        DOCKER_DIR / "Dockerfile",
        DOCKER_DIR / "server-requirements.txt",
        *sorted((PACKAGE_DIR / "server").glob("*.py")),
    ]
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


SERVER_IMAGE_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mcp-harness"
version = "{version}"

[tool.setuptools.packages.find]
include = ["harness*"]
"""
"""The image installs the package without its dependencies (the server imports none of
them): a pyproject of its own, so an installed harness (no checkout) builds it too."""


def stage_server_context(target: Path) -> Path:
    """The build context of the reference server's image, laid out as the repository is
    (``harness/``, ``harness/docker/``) with a small pyproject.toml and README.md (the
    Dockerfile copies both), nothing else."""
    (target / "pyproject.toml").write_text(
        SERVER_IMAGE_PYPROJECT.format(version=harness.__version__)
    )
    (target / "README.md").write_text("The reference MCP server of mcp-harness.\n")
    shutil.copytree(PACKAGE_DIR, target / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    return target


@dataclass
class Topology:
    """The run's containers, in start order, built but not started."""

    network: Network
    toxiproxy: ToxiproxyContainer
    primary: PostgresPrimary
    replica: PostgresReplica
    server: McpServerContainer

    def containers(self) -> list[HarnessContainer]:
        return [self.toxiproxy, self.primary, self.replica, self.server]


@dataclass(frozen=True)
class RunSecrets:
    """The run's generated secrets: the database roles' passwords and the admin token."""

    passwords: dict[str, str] = field(repr=False)
    admin_token: str = field(repr=False)


def build_topology(
    scenario: Scenario,
    *,
    run_id: str,
    network: Network,
    secrets: RunSecrets,
    admin_allow: str | None,
    server_image: str,
    docker_client_kw: dict[str, Any],
    host_port: Callable[[], int] = free_port,
) -> Topology:
    """Every container of the run as it will be started (nothing contacts the engine)."""
    docker = scenario.docker
    pg = scenario.postgres
    passwords = secrets.passwords
    labels = owner_labels()
    common: dict[str, Any] = {
        "network": network,
        "run_id": run_id,
        "startup_timeout_s": docker.startup_timeout,
        "docker_client_kw": docker_client_kw,
    }
    toxiproxy = ToxiproxyContainer(
        docker.toxiproxy_image,
        host_ports={p: host_port() for p in (TOXIPROXY_API_PORT, *PROXY_PORTS.values())},
        **common,
    )
    primary = PostgresPrimary(
        docker.postgres_image,
        passwords=passwords,
        settings=until_standby_attached(dict(pg.settings)),
        host_port=host_port(),
        **common,
    )
    replica = PostgresReplica(
        docker.postgres_image,
        passwords=passwords,
        settings={**pg.settings, **pg.replica_settings},
        host_port=host_port(),
        **common,
    )
    server = McpServerContainer(
        server_image,
        config=scenario.server,
        reference=scenario.docker.server_image is None,
        database_url=app_dsn(
            passwords[APP_USER],
            toxiproxy.alias,
            (PROXY_PORTS["pg-primary"], PROXY_PORTS["pg-replica"]),
        ),
        admin_token=secrets.admin_token,
        admin_allow=admin_allow,
        host_port=host_port(),
        **common,
    )
    topology = Topology(network, toxiproxy, primary, replica, server)
    for container in topology.containers():
        container.options["labels"].update(labels)
    return topology


class DockerStack(Stack):
    backend = "docker"

    def __init__(self, scenario: Scenario, *, cpus: frozenset[int] | None = None) -> None:
        refusals = docker_refusals(scenario)
        if refusals:
            raise StackError("the docker backend cannot run this scenario: " + "; ".join(refusals))
        self.scenario = scenario
        self.cpus = cpus
        self.run_id = secrets.token_hex(4)
        self.passwords = {
            name: secrets.token_urlsafe(18) for name in (SUPERUSER, APP_USER, REPLICATION_USER)
        }
        self.admin_token = secrets.token_urlsafe(32)
        self.base_backups: list[BaseBackup] = []
        self.topology: Topology | None = None
        self.started: list[HarnessContainer] = []
        self.starting: list[asyncio.Future[Any]] = []
        """Each container's start, running in a thread: a cancelled up() does not stop it,
        so down() waits for them before it removes anything."""
        self.network: Network | None = None
        self.primary_alias, self.replica_alias = "primary", "replica"
        self.server_lifecycle = asyncio.Lock()
        self._run_dir: Path | None = None
        self._versions: dict[str, Any] = {}
        self._container_inventory: list[dict[str, object]] = []
        self._logs: list[Path] = []

    # --- up -------------------------------------------------------------------------------

    async def up(self) -> Endpoints:
        become_subreaper()  # Locust's processes are started through the registry
        run_dir = self._run_dir = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
        self.registry = ProcessRegistry(run_dir, cpus=self.cpus)
        private_dir(run_dir)  # logs, owner record, load settings (headers): this user's alone
        self.registry.save()
        try:
            engine = await asyncio.to_thread(docker_engine_info)
        except DockerUnreachable as exc:
            raise StackError(str(exc)) from None
        self._versions["docker_engine"] = engine.get("Version")
        client_kw: dict[str, Any] = {"version": engine["ApiVersion"]}
        install_loopback_reaper(client_kw)
        await asyncio.to_thread(reap_dead_runs, client_kw)
        server_image = await asyncio.to_thread(self._server_image, client_kw)
        labels = {RUN_LABEL: self.run_id, **owner_labels()}
        network = Network(docker_client_kw=client_kw, docker_network_kw={"labels": labels})
        await asyncio.to_thread(network.create)
        self.network = network
        gateway = network_gateway(network._unwrap_network.attrs)
        topology = self.topology = build_topology(
            self.scenario,
            run_id=self.run_id,
            network=network,
            secrets=RunSecrets(self.passwords, self.admin_token),
            admin_allow=gateway,
            server_image=server_image,
            docker_client_kw=client_kw,
        )
        self._versions["images"] = images(self.scenario.docker, server_image)
        await self._start(topology.toxiproxy)
        api = topology.toxiproxy.host_ports[TOXIPROXY_API_PORT]
        self.toxiproxy = ToxiproxyClient(LOOPBACK, api)
        self._versions["toxiproxy"] = await asyncio.to_thread(self.toxiproxy.version)
        await self._start(topology.primary)
        self._versions["postgres"] = await self._fetchval(self.primary_alias, "SHOW server_version")
        await self._start(topology.replica)
        await self._wait_streaming()
        await self._synchronous_once_streaming()
        if self.scenario.server.setup_sql:
            await self._apply_setup_sql(Path(self.scenario.server.setup_sql))
        await self._start(topology.server)
        proxy = topology.toxiproxy.host_ports
        path = self.scenario.server.path
        self.endpoints = Endpoints(
            mcp_url=f"http://{LOOPBACK}:{proxy[PROXY_PORTS['mcp']]}{path}",
            mcp_direct_url=f"http://{LOOPBACK}:{self._server_port}{path}",
            server_database_url=app_dsn(
                self.passwords[APP_USER],
                LOOPBACK,
                (proxy[PROXY_PORTS["pg-primary"]], proxy[PROXY_PORTS["pg-replica"]]),
            ),
            primary_dsn=self._dsn("primary"),
            replica_dsn=self._dsn("replica"),
            primary_proxy_dsn=app_dsn(
                self.passwords[APP_USER], LOOPBACK, (proxy[PROXY_PORTS["pg-primary"]],)
            ),
            replica_proxy_dsn=app_dsn(
                self.passwords[APP_USER], LOOPBACK, (proxy[PROXY_PORTS["pg-replica"]],)
            ),
            toxiproxy_api=self.toxiproxy.base_url,
            run_dir=str(run_dir),
        )
        return self.endpoints

    def _server_image(self, client_kw: dict[str, Any]) -> str:
        """The scenario's image, or the reference server's, built from ``docker/`` unless an
        image of the same sources is there already."""
        if self.scenario.docker.server_image:
            return self.scenario.docker.server_image
        docker = docker_sdk()
        tag = server_image_tag(f"{harness.__version__}-{server_context_digest()}")
        client = docker.from_env(**client_kw)
        try:
            try:
                client.images.get(tag)
                return tag
            except docker.errors.ImageNotFound:
                pass
            with tempfile.TemporaryDirectory(prefix="mcp-harness-build-") as context:
                stage_server_context(Path(context))
                try:
                    client.images.build(
                        path=context,
                        dockerfile="harness/docker/Dockerfile",
                        tag=tag,
                        rm=True,
                        labels={RUN_LABEL: "reference-server"},
                    )
                except docker.errors.DockerException as exc:
                    raise StackError(
                        f"building the reference server's image {tag} from harness/docker/Dockerfile "
                        f"failed: {exc}. Build it by hand in the repository (docker build -f "
                        f"harness/docker/Dockerfile -t {tag} .): the next run finds it; or use "
                        "--backend local."
                    ) from None
            return tag
        finally:
            client.close()

    async def _start(self, container: HarnessContainer) -> None:
        """Start a container and wait for its wait strategy; known to down() at once."""
        self.started.append(container)
        start = asyncio.ensure_future(asyncio.to_thread(container.start))
        self.starting.append(start)
        try:
            await asyncio.shield(start)
        except Exception as exc:  # docker errors, a wait strategy's timeout
            raise StackError(
                f"container {container.alias} ({container.image}) did not come up: {exc}\n"
                f"Log tail:\n{self._log_tail(container)}"
            ) from None

    def _log_tail(self, container: HarnessContainer, lines: int = 40) -> str:
        try:
            raw = container.get_wrapped_container().logs(tail=lines)
        except Exception:  # not created, or gone
            return "(no log)"
        return bytes(raw).decode(errors="replace")

    async def _wait_streaming(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            streaming = await self._fetchval(
                self.primary_alias,
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            )
            if streaming:
                return
            await asyncio.sleep(0.1)
        assert self.topology is not None
        raise StackError(
            f"the replica did not start streaming from the primary within {timeout_s:g}s. "
            f"Replica log:\n{self._log_tail(self.topology.replica)}"
        )

    async def _apply_setup_sql(self, path: Path) -> None:
        """The user's schema, as the application's role on its database, on the primary."""
        try:
            async with self._connection(self.primary_alias, APP_USER, APP_DATABASE) as conn:
                await conn.execute(path.read_text(), timeout=60)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StackError(
                f"server.setup_sql {path} failed: {exc}. Fix the SQL (it runs as {APP_USER} "
                f"on database {APP_DATABASE}) and run again."
            ) from None

    # --- where things are -----------------------------------------------------------------

    def _cluster(self, role: str) -> PostgresPrimary | PostgresReplica:
        """``primary`` / ``replica``: the container first started as that."""
        assert self.topology is not None, "stack is not up"
        return self.topology.primary if role == "primary" else self.topology.replica

    def _dsn(self, role: str, user: str = SUPERUSER, database: str = "postgres") -> str:
        cluster = self._cluster(role)
        port = cluster.host_ports[cluster.port]
        return f"postgresql://{user}:{self.passwords[user]}@{LOOPBACK}:{port}/{database}"

    @contextlib.asynccontextmanager
    async def _connection(
        self, role: str, user: str = SUPERUSER, database: str = "postgres", timeout_s: float = 10
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection straight to a cluster's published port (no proxy in between)."""
        conn = await asyncpg.connect(self._dsn(role, user, database), timeout=timeout_s)
        try:
            yield conn
        finally:
            await conn.close()

    async def _synchronous_once_streaming(self) -> None:
        """Synchronous replication as the scenario asks, now that the standby streams (the
        primary started without it: ``until_standby_attached``)."""
        wanted = self.scenario.postgres.settings.get(SYNCHRONOUS_STANDBYS)
        if wanted:
            literal = "'" + wanted.replace("'", "''") + "'"
            await self._fetchval(
                self.primary_alias, f"ALTER SYSTEM SET {SYNCHRONOUS_STANDBYS} TO {literal}"
            )
            await self._fetchval(self.primary_alias, "SELECT pg_reload_conf()")

    async def _fetchval(self, role: str, sql: str, *args: object, timeout_s: float = 10) -> Any:
        async with self._connection(role, timeout_s=timeout_s) as conn:
            return await conn.fetchval(sql, *args, timeout=timeout_s)

    @property
    def _server_port(self) -> int:
        assert self.topology is not None, "stack is not up"
        server = self.topology.server
        return server.host_ports[server.port]

    @property
    def current_primary_dsn(self) -> str:
        return self._dsn(self.primary_alias)

    @property
    def current_primary_port(self) -> int:
        return self._cluster(self.primary_alias).port

    def server_metrics_urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{self._server_port}/metrics"]

    def server_admin(self) -> list[AdminEndpoint]:
        assert self.topology is not None, "stack is not up"
        if not self.topology.server.reference:
            return []
        url = f"http://{LOOPBACK}:{self._server_port}/admin"
        return [AdminEndpoint(SERVER_ALIAS, url, self.admin_token)]

    # --- faults ---------------------------------------------------------------------------

    async def kill_primary(self) -> KillResult:
        container = self._cluster(self.primary_alias).get_wrapped_container()
        return await asyncio.to_thread(kill_container, container)

    async def kill_server(self, instance: int = 0) -> KillResult:
        assert self.topology is not None, "stack is not up"
        if instance != 0:
            raise StackError(f"kill_server: the docker backend runs one instance, not {instance}")
        container = self.topology.server.get_wrapped_container()
        return await asyncio.to_thread(kill_container, container)

    async def restart_server(self, instance: int = 0) -> None:
        """Start the (killed) server container again: same container, same published port."""
        assert self.topology is not None, "stack is not up"
        server = self.topology.server
        async with self.server_lifecycle:
            await asyncio.to_thread(server.get_wrapped_container().start)
            try:
                await asyncio.to_thread(server.wait_strategy.wait_until_ready, server)
            except TimeoutError as exc:
                raise StackError(
                    f"the MCP server container did not become ready after its restart: {exc}\n"
                    f"Log tail:\n{self._log_tail(server)}"
                ) from None

    def _target(self, target: str) -> HarnessContainer:
        assert self.topology is not None, "stack is not up"
        if target in ("primary", "replica"):
            return self._cluster(self.primary_alias if target == "primary" else self.replica_alias)
        if target == "server":
            return self.topology.server
        if target == "toxiproxy":
            return self.topology.toxiproxy
        raise StackError(
            f"partition: no container {target!r} (primary, replica, server, toxiproxy)"
        )

    async def partition(self, target: str) -> PartitionCut:
        """Cut ``target`` (primary: the current one) off the run's network."""
        container = self._target(target)
        network = self._network()
        confirmed = await asyncio.to_thread(
            disconnect_container,
            network._unwrap_network,
            container.get_wrapped_container(),
            network.name,
        )
        return PartitionCut(target, container.name, confirmed, time.monotonic())

    async def heal_partition(self, cut: PartitionCut) -> bool:
        """Connect the container of ``cut`` again under its alias."""
        assert self.topology is not None, "stack is not up"
        container = next(c for c in self.topology.containers() if c.name == cut.container)
        network = self._network()
        return await asyncio.to_thread(
            connect_container,
            network._unwrap_network,
            container.get_wrapped_container(),
            network.name,
            container.alias,
        )

    def _network(self) -> Network:
        assert self.network is not None, "stack is not up"
        return self.network

    async def _promote_standby(self) -> None:
        """``pg_promote`` on the standby, straight to its published port."""
        timeout_s = self.scenario.recovery.promote_timeout
        try:
            promoted = await self._fetchval(
                self.replica_alias,
                "SELECT pg_promote(true, $1)",
                int(timeout_s),
                timeout_s=timeout_s + 5,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StackError(f"promoting the replica container failed: {exc}") from None
        if promoted is not True:
            raise StackError(f"pg_promote on the replica did not finish within {timeout_s:g}s")
        self.primary_alias, self.replica_alias = self.replica_alias, self.primary_alias

    async def create_restore_point(self, name: str) -> RestorePoint:
        wall, t_start = dt.datetime.now(dt.UTC), time.monotonic()
        try:
            lsn = await self._fetchval(
                self.primary_alias, "SELECT pg_create_restore_point($1)::text", name
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StackError(f"could not create restore point {name!r}: {exc}") from None
        return RestorePoint(name, str(lsn), t_start, time.monotonic(), wall)

    # --- what this backend does not do ----------------------------------------------------

    async def deploy_release(
        self, command: list[str] | None = None, fault_mode: str | None = None
    ) -> Rollout:
        raise StackError(
            f"deploy_release (a rolling redeploy) is not implemented by the docker backend; "
            f"{LOCAL_ONLY}"
        )

    async def take_base_backup(self) -> BaseBackup:
        raise StackError(
            f"take_base_backup is not implemented by the docker backend (no WAL archive); "
            f"{LOCAL_ONLY}"
        )

    async def restore(self, target: RestoreTarget, timeout_s: float) -> RestoreReport:
        raise StackError(
            f"restore (point-in-time recovery) is not implemented by the docker backend; "
            f"{LOCAL_ONLY}"
        )

    async def rebuild_replica(self) -> float:
        raise StackError(f"rebuild_replica is not implemented by the docker backend; {LOCAL_ONLY}")

    # --- the record and the end -----------------------------------------------------------

    def versions(self) -> dict[str, Any]:
        return dict(self._versions)

    def log_paths(self) -> list[str]:
        processes = (
            [str(p.log_path) for p in self.registry.processes] if hasattr(self, "registry") else []
        )
        return processes + [str(p) for p in self._logs]

    def inventory(self) -> list[dict[str, object]]:
        processes = self.registry.inventory() if hasattr(self, "registry") else []
        return processes + self._container_inventory

    def _record(self, container: HarnessContainer, run_dir: Path) -> None:
        """Its log into the run directory and its line in the inventory, before removal."""
        try:
            wrapped = container.get_wrapped_container()
            wrapped.reload()
        except Exception:  # never created
            return
        path = run_dir / f"container-{container.alias}.log"
        with contextlib.suppress(Exception):
            path.write_bytes(bytes(wrapped.logs(timestamps=True)))
            self._logs.append(path)
        state = wrapped.attrs.get("State", {})
        self._container_inventory.append(
            {
                "name": container.name,
                "container_id": wrapped.short_id,
                "image": container.image,
                "status": wrapped.status,
                "exit_code": state.get("ExitCode"),
            }
        )

    async def down(self) -> None:
        """Every container and the network of the run, also after a failed up(); logs kept."""
        run_dir = self._run_dir
        if run_dir is None:
            return
        if hasattr(self, "registry"):
            await asyncio.to_thread(self.registry.stop_all)
        pending = [start for start in self.starting if not start.done()]
        if pending:  # an up() cancelled mid-start: the container may still come up
            await asyncio.wait(pending, timeout=self.scenario.docker.startup_timeout + 30)
            for start in pending:  # its error was the cancelled up()'s to report, not ours
                if start.done() and not start.cancelled():
                    start.exception()
        self.starting.clear()
        for container in reversed(self.started):
            await asyncio.to_thread(self._record, container, run_dir)
            try:
                await asyncio.to_thread(container.stop)
            except Exception as exc:  # already gone: Ryuk or a person was faster
                log.warning("removing container %s: %s", container.name, exc)
        self.started.clear()
        network = self.network
        if network is not None:
            try:
                await asyncio.to_thread(network.remove)
            except Exception as exc:
                log.warning("removing network %s: %s", network.name, exc)
            self.network = None
        (run_dir / "owner.json").unlink(missing_ok=True)

    def remove_run_dir(self) -> None:
        if self._run_dir is not None and self._run_dir.exists():
            shutil.rmtree(self._run_dir, ignore_errors=True)


def owner_labels() -> dict[str, str]:
    """Which machine and harness process own a container or network: what
    ``reap_dead_runs`` checks."""
    return {HOST_LABEL: socket.gethostname(), OWNER_LABEL: str(os.getpid())}


def owned_by_dead_run(labels: dict[str, str]) -> bool:
    """Whether these labels say: a run of this machine whose harness process is gone."""
    if labels.get(HOST_LABEL) != socket.gethostname():
        return False
    owner = labels.get(OWNER_LABEL, "")
    return owner.isdigit() and not is_alive(int(owner))


def reap_dead_runs(client_kw: dict[str, Any]) -> list[str]:
    """Remove the containers and networks of this machine's runs whose harness is dead
    (Ryuk does it unless it is disabled). Returns the names removed."""
    docker = docker_sdk()
    client = docker.from_env(**client_kw)
    removed = []
    try:
        for container in client.containers.list(all=True, filters={"label": RUN_LABEL}):
            if not owned_by_dead_run(container.labels):
                continue
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True, v=True)
                removed.append(container.name)
        for network in client.networks.list(filters={"label": RUN_LABEL}):
            if not owned_by_dead_run(network.attrs.get("Labels") or {}):
                continue
            with contextlib.suppress(docker.errors.DockerException):
                network.remove()
                removed.append(network.name)
    finally:
        client.close()
    for name in removed:
        log.warning("removed what a dead run left behind: %s", name)
    return removed
