"""The docker backend's parts, one small class per service in the testcontainers style:
``PostgresPrimary``, ``PostgresReplica``, ``ToxiproxyContainer``, ``McpServerContainer``.

Each is a testcontainers ``DockerContainer`` fully configured at construction (image,
command, environment, network and alias, published ports, labels, wait strategy) and
started by ``start()``; building one contacts no engine when ``docker_client_kw`` names
the API version (the backend passes the version it negotiated once), so the unit tests
build the very objects the backend starts.

Topology inside the run's network (aliases; the same as ``harness/docker/compose.yaml``)::

    mcp-server:8000 --> toxiproxy:15432 (pg-primary) --> pg-primary:5432
                        toxiproxy:15433 (pg-replica) --> pg-replica:5433
    pg-replica  ------> toxiproxy:15434 (pg-replication) --> pg-primary:5432
    clients ----------> toxiproxy:18000 (mcp) --> mcp-server:8000

The two clusters listen on different ports (5432, 5433) so that ``current_setting('port')``
tells them apart, as the probes and the runbook expect. Every published port is bound to
127.0.0.1 on a host port chosen by the backend, kept across a container's restarts.

testcontainers' reaper (Ryuk) too: testcontainers 4.15 publishes its port on every
interface and has no setting to change that (``TESTCONTAINERS_RYUK_*`` / ``ryuk.*`` set
the image, privileged mode, socket and reconnection timeout only), and whoever reaches
that port can have it remove any container by label. ``install_loopback_reaper`` makes
testcontainers start ours instead: the same container, published on 127.0.0.1.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from typing import Any

from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer, Reaper
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import (
    ExecWaitStrategy,
    HttpWaitStrategy,
    LogMessageWaitStrategy,
)

from harness.config import DockerConfig, ServerConfig
from harness.shipped import DOCKER_DIR
from harness.stack.mcp_server import (
    ADMIN_TOKEN_ENV,
    fill,
    placeholders,
    reference_server_command,
)
from harness.stack.net import LOOPBACK
from harness.stack.postgres import APP_DATABASE, APP_USER, REPLICATION_USER, SUPERUSER

log = logging.getLogger(__name__)

PRIMARY_INIT_SCRIPT = DOCKER_DIR / "primary-init.sh"
REPLICA_ENTRYPOINT = DOCKER_DIR / "replica-entrypoint.sh"
PRIMARY_INIT_PATH = "/docker-entrypoint-initdb.d/10-mcp-harness.sh"
REPLICA_ENTRYPOINT_PATH = "/usr/local/bin/replica-entrypoint.sh"
TOXIPROXY_CONFIG_PATH = "/config/toxiproxy.json"

RUN_LABEL = "io.mcp-harness.run"
SERVICE_LABEL = "io.mcp-harness.service"

PRIMARY_ALIAS, REPLICA_ALIAS = "pg-primary", "pg-replica"
TOXIPROXY_ALIAS, SERVER_ALIAS = "toxiproxy", "mcp-server"
PRIMARY_PORT, REPLICA_PORT = 5432, 5433
SERVER_PORT = 8000
TOXIPROXY_API_PORT = 8474
PROXY_PORTS: dict[str, int] = {
    "mcp": 18000,
    "pg-primary": 15432,
    "pg-replica": 15433,
    "pg-replication": 15434,
}
"""The listen port of each Toxiproxy proxy inside its container."""
PROXY_UPSTREAMS: dict[str, str] = {
    "mcp": f"{SERVER_ALIAS}:{SERVER_PORT}",
    "pg-primary": f"{PRIMARY_ALIAS}:{PRIMARY_PORT}",
    "pg-replica": f"{REPLICA_ALIAS}:{REPLICA_PORT}",
    "pg-replication": f"{PRIMARY_ALIAS}:{PRIMARY_PORT}",
}

CLUSTER_SETTINGS: dict[str, str] = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",
    "track_commit_timestamp": "on",
    "shared_buffers": "64MB",
    "max_connections": "200",
    "log_min_messages": "warning",
}
"""What the topology needs of both clusters (as the local backend's BASE_SETTINGS, less
what a container decides: addresses, sockets, archiving); the scenario's come after."""


def toxiproxy_config() -> list[dict[str, Any]]:
    """The proxies Toxiproxy creates at start (``-config``), as in ``harness/docker/toxiproxy.json``."""
    return [
        {
            "name": name,
            "listen": f"0.0.0.0:{PROXY_PORTS[name]}",
            "upstream": PROXY_UPSTREAMS[name],
            "enabled": True,
        }
        for name in sorted(PROXY_PORTS)
    ]


def settings_args(settings: dict[str, str]) -> list[str]:
    """``-c name=value`` for each setting (argv, no shell: values need no quoting)."""
    return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]


def app_dsn(app_password: str, host: str, ports: tuple[int, ...]) -> str:
    """The application's DSN on ``host`` at ``ports``; with several, the read-write one
    of them (the server's multi-host DSN through both proxies)."""
    hosts = ",".join(f"{host}:{port}" for port in ports)
    query = "?target_session_attrs=read-write" if len(ports) > 1 else ""
    return f"postgresql://{APP_USER}:{app_password}@{hosts}/{APP_DATABASE}{query}"


class HarnessContainer(DockerContainer):
    """A container of one run: named after the run and its alias on the run's network,
    labelled (testcontainers' own labels too, so Ryuk removes it if the harness dies),
    its ports published on 127.0.0.1 only."""

    alias: str

    def __init__(
        self,
        image: str,
        *,
        network: Network,
        run_id: str,
        startup_timeout_s: float,
        docker_client_kw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(image, docker_client_kw=docker_client_kw)
        self.run_id = run_id
        self.startup_timeout_s = startup_timeout_s
        self.host_ports: dict[int, int] = {}
        self.with_network(network).with_network_aliases(self.alias)
        self.with_name(f"mcp-harness-{run_id}-{self.alias}")
        self._kwargs["labels"] = {RUN_LABEL: run_id, SERVICE_LABEL: self.alias}

    @property
    def name(self) -> str:
        assert self._name is not None
        return self._name

    @property
    def command(self) -> list[str]:
        command = self._command
        assert isinstance(command, list)
        return command

    @property
    def wait_strategy(self) -> Any:
        return self._wait_strategy

    @property
    def options(self) -> dict[str, Any]:
        """What goes to the engine besides image, command, environment and ports."""
        return self._kwargs

    def publish(self, container_port: int, host_port: int) -> HarnessContainer:
        """Publish ``container_port`` on 127.0.0.1:``host_port`` (never on every interface)."""
        self.ports[f"{container_port}/tcp"] = (LOOPBACK, host_port)  # type: ignore[assignment]
        self.host_ports[container_port] = host_port
        return self

    def copy_in(self, content: bytes, path: str, mode: int = 0o644) -> HarnessContainer:
        """A file put into the container before it starts."""
        self.with_copy_into_container(content, path, mode)
        return self

    @property
    def files(self) -> dict[str, tuple[bytes, int]]:
        files = {}
        for spec in self._transferable_specs:
            content, path, mode = (*spec, 0o644)[:3]
            if isinstance(content, bytes):
                files[str(path)] = (content, int(mode))
        return files


class PostgresContainer(HarnessContainer):
    """A cluster of the official image: postgres on a port of its own with the topology's
    settings, then the scenario's; ready when ``pg_isready`` answers on TCP 127.0.0.1
    (the image's temporary init server listens on its socket only)."""

    port: int
    postgres_argv: list[str]
    """What comes before the settings: the image's ``postgres``, or nothing when an
    entrypoint of ours starts postgres itself."""

    def __init__(
        self,
        image: str,
        *,
        passwords: dict[str, str],
        settings: dict[str, str],
        host_port: int,
        **common: Any,
    ) -> None:
        super().__init__(image, **common)
        self.configure(passwords)
        args = settings_args({"port": str(self.port), **CLUSTER_SETTINGS, **settings})
        self.with_command([*self.postgres_argv, *args])
        self.publish(self.port, host_port)
        self.waiting_for(
            ExecWaitStrategy(["pg_isready", "-h", "127.0.0.1", "-p", str(self.port)])
            .with_startup_timeout(int(self.startup_timeout_s))
            .with_poll_interval(0.2)
        )

    def configure(self, passwords: dict[str, str]) -> None:
        """The environment and files of this cluster's role."""


class PostgresPrimary(PostgresContainer):
    """The primary: the official image's entrypoint creates the cluster with the superuser
    password, then ``harness/docker/primary-init.sh`` the replication and application roles,
    the application database and the pg_hba line for replication."""

    alias = PRIMARY_ALIAS
    port = PRIMARY_PORT
    postgres_argv = ["postgres"]

    def configure(self, passwords: dict[str, str]) -> None:
        self.with_envs(
            POSTGRES_USER=SUPERUSER,
            POSTGRES_PASSWORD=passwords[SUPERUSER],
            POSTGRES_DB="postgres",
            REPLICATION_USER=REPLICATION_USER,
            REPLICATION_PASSWORD=passwords[REPLICATION_USER],
            APP_USER=APP_USER,
            APP_PASSWORD=passwords[APP_USER],
            APP_DATABASE=APP_DATABASE,
        )
        self.copy_in(PRIMARY_INIT_SCRIPT.read_bytes(), PRIMARY_INIT_PATH, 0o755)


class PostgresReplica(PostgresContainer):
    """The hot standby: ``harness/docker/replica-entrypoint.sh`` waits for the primary through
    the ``pg-replication`` proxy, clones it with ``pg_basebackup -R`` and starts postgres
    on it (the same image, its entrypoint replaced; the settings are its arguments)."""

    alias = REPLICA_ALIAS
    port = REPLICA_PORT
    postgres_argv: list[str] = []

    def configure(self, passwords: dict[str, str]) -> None:
        self.with_envs(
            PRIMARY_HOST=TOXIPROXY_ALIAS,
            PRIMARY_PORT=str(PROXY_PORTS["pg-replication"]),
            REPLICATION_USER=REPLICATION_USER,
            REPLICATION_PASSWORD=passwords[REPLICATION_USER],
            PRIMARY_WAIT_S=str(int(self.startup_timeout_s)),
        )
        self.copy_in(REPLICA_ENTRYPOINT.read_bytes(), REPLICA_ENTRYPOINT_PATH, 0o755)
        self._kwargs["entrypoint"] = [REPLICA_ENTRYPOINT_PATH]


class ToxiproxyContainer(HarnessContainer):
    """Toxiproxy with the four proxies from its start (``-config``); its API and every
    proxy published. (testcontainers 4.15 has no Toxiproxy module.)"""

    alias = TOXIPROXY_ALIAS

    def __init__(self, image: str, *, host_ports: dict[int, int], **common: Any) -> None:
        super().__init__(image, **common)
        config = json.dumps(toxiproxy_config(), indent=2).encode()
        self.copy_in(config, TOXIPROXY_CONFIG_PATH)
        self.with_command(["-host=0.0.0.0", f"-config={TOXIPROXY_CONFIG_PATH}"])
        for port in (TOXIPROXY_API_PORT, *PROXY_PORTS.values()):
            self.publish(port, host_ports[port])
        self.waiting_for(
            HttpWaitStrategy(TOXIPROXY_API_PORT, "/version")
            .for_status_code(200)
            .with_startup_timeout(int(self.startup_timeout_s))
            .with_poll_interval(0.2)
        )


class McpServerContainer(HarnessContainer):
    """The MCP server: the reference server's image (``harness/docker/Dockerfile``) started with
    the scenario's options, or a user's image with ``server.command`` (or its own CMD).

    The reference server's admin endpoint gets a token through the environment and
    ``MCP_ADMIN_ALLOW`` = the run network's gateway, the address a request through the
    published port comes from; other containers on the network stay refused. The DSN is in
    ``server.database_url_env``; a ``server.command`` with ``{database_url}`` puts its
    password in the container's command, which ``ps`` on the host and ``docker inspect``
    show."""

    alias = SERVER_ALIAS
    port = SERVER_PORT

    def __init__(
        self,
        image: str,
        *,
        config: ServerConfig,
        reference: bool,
        database_url: str,
        admin_token: str,
        admin_allow: str | None,
        host_port: int,
        **common: Any,
    ) -> None:
        super().__init__(image, **common)
        self.config = config
        self.reference = reference
        values = placeholders(database_url, self.port)
        self.with_envs(**{k: fill(os.path.expandvars(v), values) for k, v in config.env.items()})
        if config.database_url_env:
            self.with_env(config.database_url_env, database_url)
        if config.port_env:
            self.with_env(config.port_env, str(self.port))
        if reference:
            self.with_env(ADMIN_TOKEN_ENV, admin_token)
            if admin_allow:
                self.with_env("MCP_ADMIN_ALLOW", admin_allow)
            self.with_command(reference_server_args(config))
        elif config.command is not None:
            self.with_command([fill(arg, values) for arg in config.command])
        self.publish(self.port, host_port)
        ready = config.ready or config.path
        self.waiting_for(
            HttpWaitStrategy(self.port, ready)
            .for_status_code_matching(
                lambda status: status == 200 or (config.ready is None and status in (400, 405, 406))
            )
            .with_startup_timeout(int(config.ready_timeout))
            .with_poll_interval(0.1)
        )


def reference_server_args(config: ServerConfig) -> list[str]:
    """The reference server's arguments in its image (whose entrypoint is ``python -m
    harness.server``): the local backend's, on every interface of the container."""
    argv = reference_server_command(config)
    module = argv.index("harness.server")
    args = [a.replace("{port}", str(SERVER_PORT)) for a in argv[module + 1 :]]
    return ["--host", "0.0.0.0", *args]


def server_image_tag(version: str) -> str:
    """The tag of the reference server's image built from ``harness/docker/Dockerfile``."""
    return f"mcp-harness-server:{version}"


def images(config: DockerConfig, reference_tag: str) -> dict[str, str]:
    """The image of each service (for result.json's environment)."""
    return {
        PRIMARY_ALIAS: config.postgres_image,
        REPLICA_ALIAS: config.postgres_image,
        TOXIPROXY_ALIAS: config.toxiproxy_image,
        SERVER_ALIAS: config.server_image or reference_tag,
    }


RYUK_PORT = 8080
RYUK_CONNECT_ATTEMPTS = 50


def loopback_ryuk_container(
    docker_client_kw: dict[str, Any] | None = None, docker_socket: str | None = None
) -> DockerContainer:
    """testcontainers' reaper container as testcontainers 4.15 builds it (image, name,
    the engine's socket, privileged mode and reconnection timeout from its configuration),
    its port published on 127.0.0.1 only (docker-py: ``(address, None)`` is that interface,
    any free port), ready when it says it started."""
    config = testcontainers_config
    container = (
        DockerContainer(config.ryuk_image, docker_client_kw=docker_client_kw)
        .with_name(f"testcontainers-ryuk-{SESSION_ID}")
        .with_volume_mapping(
            docker_socket or config.ryuk_docker_socket, "/var/run/docker.sock", "rw"
        )
        .with_kwargs(privileged=config.ryuk_privileged, auto_remove=True)
        .with_env("RYUK_RECONNECTION_TIMEOUT", config.ryuk_reconnection_timeout)
        .waiting_for(LogMessageWaitStrategy(r".* Started!").with_startup_timeout(20))
    )
    container.ports[f"{RYUK_PORT}/tcp"] = (LOOPBACK, None)  # type: ignore[assignment]
    return container


_reaper_client_kw: dict[str, Any] = {}


def _create_loopback_reaper(cls: type[Reaper]) -> Reaper:
    """``Reaper._create_instance`` of testcontainers 4.15, with ``loopback_ryuk_container``:
    start it, connect to it on 127.0.0.1 and tell it this session's label (it removes what
    carries the label once this process's connection is gone)."""
    container = loopback_ryuk_container(_reaper_client_kw or None).start()
    Reaper._container = container
    port = int(container.get_exposed_port(RYUK_PORT))
    last: OSError | None = None
    for _ in range(RYUK_CONNECT_ATTEMPTS):
        connection = socket.socket()
        connection.settimeout(1)
        try:
            connection.connect((LOOPBACK, port))
        except OSError as exc:
            connection.close()
            last = exc
            time.sleep(0.5)
            continue
        Reaper._socket = connection
        break
    else:
        assert last is not None
        raise last
    connection.send(f"label={LABEL_SESSION_ID}={SESSION_ID}\r\n".encode())
    Reaper._instance = Reaper()
    atexit.register(Reaper.delete_instance)
    return Reaper._instance


def install_loopback_reaper(docker_client_kw: dict[str, Any] | None = None) -> bool:
    """Make testcontainers start ``loopback_ryuk_container`` as its reaper (when it starts
    one: not with ``TESTCONTAINERS_RYUK_DISABLED``); the reaper's client uses
    ``docker_client_kw``. False when a reaper of this process runs already on
    testcontainers' own terms (started before the docker backend): it is left alone, with
    a warning."""
    _reaper_client_kw.clear()
    _reaper_client_kw.update(docker_client_kw or {})
    setattr(Reaper, "_create_instance", classmethod(_create_loopback_reaper))  # noqa: B010
    running = Reaper._container if Reaper._instance is not None else None
    if running is not None and running.ports.get(f"{RYUK_PORT}/tcp") != (LOOPBACK, None):
        log.warning(
            "testcontainers' reaper (Ryuk) was started before the docker backend: its port "
            "may be published on every interface"
        )
        return False
    return True
