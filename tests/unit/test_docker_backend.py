"""The docker backend without an engine: the real testcontainers objects it would start
(built, never started), the fault mapping on a stand-in for docker-py's container object
(pure logic), the compose file against the same topology, and the CLI's exit 3 when no
engine answers (real: this machine runs none)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import ExecWaitStrategy, HttpWaitStrategy

from harness.chaos import FaultContext, FaultRecord, run_fault
from harness.config import PROXY_NAMES, Partition, Scenario
from harness.shipped import DOCKER_DIR as SHIPPED_DOCKER_DIR
from harness.shipped import SCENARIOS_DIR
from harness.stack import PartitionCut, StackError, open_stack
from harness.stack.containers import (
    PRIMARY_INIT_PATH,
    PROXY_PORTS,
    REPLICA_ENTRYPOINT_PATH,
    RUN_LABEL,
    TOXIPROXY_CONFIG_PATH,
    app_dsn,
    toxiproxy_config,
)
from harness.stack.docker import (
    HOST_LABEL,
    OWNER_LABEL,
    DockerStack,
    RunSecrets,
    Topology,
    build_topology,
    connect_container,
    disconnect_container,
    docker_refusals,
    kill_container,
    network_gateway,
    owned_by_dead_run,
    stage_server_context,
)
from harness.stack.local import LocalStack

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = SHIPPED_DOCKER_DIR  # the files the package ships
API = {"version": "1.44"}
"""An explicit API version: docker-py then asks no engine at construction (the backend
passes the version it negotiated once at up())."""
PASSWORDS = {"postgres": "su-pw", "mcp_app": "app-pw", "replicator": "repl-pw"}
TOKEN = "admin-token-0123456789abcdef"


def _ports() -> Any:
    ports = iter(range(41000, 41100))
    return lambda: next(ports)


def _topology(scenario: Scenario, **overrides: Any) -> Topology:
    arguments: dict[str, Any] = {
        "run_id": "r1d2",
        "network": Network(docker_client_kw=API),
        "secrets": RunSecrets(PASSWORDS, TOKEN),
        "admin_allow": "172.30.0.1",
        "server_image": "mcp-harness-server:test",
        "docker_client_kw": API,
        "host_port": _ports(),
        **overrides,
    }
    return build_topology(scenario, **arguments)


def _settings(command: list[str]) -> dict[str, str]:
    pairs = [command[i + 1] for i, arg in enumerate(command) if arg == "-c"]
    return dict(pair.split("=", 1) for pair in pairs)


SCENARIO = Scenario(
    name="docker",
    backend="docker",
    postgres={
        "settings": {"wal_retrieve_retry_interval": "100ms"},
        "replica_settings": {"work_mem": "8MB"},
    },  # type: ignore[arg-type]
)


# --- the containers ------------------------------------------------------------------------


def test_every_container_is_on_the_run_network_under_its_alias_labelled_and_named() -> None:
    topology = _topology(SCENARIO)
    network = topology.network
    aliases = []
    for container in topology.containers():
        assert container._network is network
        assert container._network_aliases == [container.alias]
        assert container.name == f"mcp-harness-r1d2-{container.alias}"
        labels = container.options["labels"]
        assert labels[RUN_LABEL] == "r1d2" and labels[HOST_LABEL] and labels[OWNER_LABEL]
        aliases.append(container.alias)
    assert aliases == ["toxiproxy", "pg-primary", "pg-replica", "mcp-server"], "start order"


def test_published_ports_are_bound_to_loopback_only() -> None:
    topology = _topology(SCENARIO)
    published = [
        binding for container in topology.containers() for binding in container.ports.values()
    ]
    assert len(published) == 1 + 4 + 1 + 1 + 1  # toxiproxy API + proxies, 2 clusters, server
    assert all(host == "127.0.0.1" for host, _ in published)  # type: ignore[misc]
    assert len({port for _, port in published}) == len(published)  # type: ignore[misc]


def test_primary_runs_the_pinned_official_image_with_replication_settings_and_roles() -> None:
    primary = _topology(SCENARIO).primary
    assert primary.image == "postgres:18.6"
    assert primary.command[0] == "postgres"
    settings = _settings(primary.command)
    assert settings["port"] == "5432"
    assert settings["wal_level"] == "replica" and int(settings["max_wal_senders"]) >= 2
    assert settings["hot_standby"] == "on" and settings["track_commit_timestamp"] == "on"
    assert settings["wal_retrieve_retry_interval"] == "100ms", "the scenario's settings"
    assert "work_mem" not in settings, "replica_settings are the standby's"
    assert primary.env["POSTGRES_PASSWORD"] == "su-pw"
    assert primary.env["REPLICATION_PASSWORD"] == "repl-pw"
    assert primary.env["APP_PASSWORD"] == "app-pw"
    assert not any("pw" in arg for arg in primary.command), "passwords never in argv"
    script, mode = primary.files[PRIMARY_INIT_PATH]
    assert script == (DOCKER_DIR / "primary-init.sh").read_bytes() and mode == 0o755
    assert primary.ports == {"5432/tcp": ("127.0.0.1", primary.host_ports[5432])}
    wait = primary.wait_strategy
    assert isinstance(wait, ExecWaitStrategy)
    assert wait._command == ["pg_isready", "-h", "127.0.0.1", "-p", "5432"]
    assert wait._startup_timeout == 120


def test_replica_clones_through_the_replication_proxy_with_its_entrypoint_script() -> None:
    replica = _topology(SCENARIO).replica
    assert replica.image == "postgres:18.6"
    assert replica.options["entrypoint"] == [REPLICA_ENTRYPOINT_PATH]
    script, mode = replica.files[REPLICA_ENTRYPOINT_PATH]
    assert script == (DOCKER_DIR / "replica-entrypoint.sh").read_bytes() and mode == 0o755
    assert replica.env["PRIMARY_HOST"] == "toxiproxy"
    assert replica.env["PRIMARY_PORT"] == str(PROXY_PORTS["pg-replication"])
    assert replica.env["REPLICATION_USER"] == "replicator"
    assert replica.env["REPLICATION_PASSWORD"] == "repl-pw"
    settings = _settings(replica.command)
    assert settings["port"] == "5433", "a port of its own: current_setting('port') tells them apart"
    assert settings["work_mem"] == "8MB" and settings["wal_retrieve_retry_interval"] == "100ms"
    assert replica.command[0] == "-c", "arguments of postgres, after the script's own"
    assert isinstance(replica.wait_strategy, ExecWaitStrategy)
    assert replica.wait_strategy._command[-1] == "5433"


def test_toxiproxy_starts_with_the_four_proxies_and_waits_on_its_api() -> None:
    toxiproxy = _topology(SCENARIO).toxiproxy
    assert toxiproxy.image == "ghcr.io/shopify/toxiproxy:2.12.0"
    assert toxiproxy.command == ["-host=0.0.0.0", f"-config={TOXIPROXY_CONFIG_PATH}"]
    config = json.loads(toxiproxy.files[TOXIPROXY_CONFIG_PATH][0])
    assert sorted(p["name"] for p in config) == sorted(PROXY_NAMES)
    upstreams = {p["name"]: p["upstream"] for p in config}
    assert upstreams == {
        "mcp": "mcp-server:8000",
        "pg-primary": "pg-primary:5432",
        "pg-replica": "pg-replica:5433",
        "pg-replication": "pg-primary:5432",
    }
    assert set(toxiproxy.host_ports) == {8474, *PROXY_PORTS.values()}
    wait = toxiproxy.wait_strategy
    assert isinstance(wait, HttpWaitStrategy)
    assert (wait._port, wait._path, wait._status_codes) == (8474, "/version", {200})


def test_reference_server_gets_the_proxied_dsn_and_admin_settings_by_environment() -> None:
    server = _topology(SCENARIO).server
    assert server.image == "mcp-harness-server:test" and server.reference
    assert server.env["DATABASE_URL"] == app_dsn(
        "app-pw", "toxiproxy", (PROXY_PORTS["pg-primary"], PROXY_PORTS["pg-replica"])
    )
    assert server.env["DATABASE_URL"].endswith("?target_session_attrs=read-write")
    assert server.env["MCP_ADMIN_TOKEN"] == TOKEN
    assert server.env["MCP_ADMIN_ALLOW"] == "172.30.0.1", "the gateway only"
    assert TOKEN not in " ".join(server.command)
    assert server.command[:4] == ["--host", "0.0.0.0", "--port", "8000"]
    assert "--path" in server.command and "--max-sessions" in server.command
    wait = server.wait_strategy
    assert isinstance(wait, HttpWaitStrategy)
    assert (wait._port, wait._path) == (8000, "/healthz")
    predicate = wait._status_code_predicate
    assert predicate is not None and predicate(200) and not predicate(405)


def test_a_users_image_runs_its_command_with_its_variables() -> None:
    scenario = Scenario.model_validate(
        {
            "name": "own",
            "backend": "docker",
            "docker": {"server_image": "registry.example/my-mcp:1.2.3"},
            "server": {
                "command": ["my-mcp", "--listen", "0.0.0.0:{port}", "--db", "{database_url}"],
                "port_env": "PORT",
                "env": {"LOG_LEVEL": "info"},
                "ready": None,
            },
        }
    )
    image = scenario.docker.server_image  # what DockerStack._server_image picks
    server = _topology(scenario, admin_allow=None, server_image=image).server
    assert server.image == "registry.example/my-mcp:1.2.3" and not server.reference
    assert server.command[:3] == ["my-mcp", "--listen", "0.0.0.0:8000"]
    assert server.command[-1] == server.env["DATABASE_URL"]
    assert server.env["PORT"] == "8000" and server.env["LOG_LEVEL"] == "info"
    assert "MCP_ADMIN_TOKEN" not in server.env and "MCP_ADMIN_ALLOW" not in server.env
    predicate = server.wait_strategy._status_code_predicate
    assert predicate(405) and predicate(200), "no ready path: the MCP endpoint answering"
    assert server.wait_strategy._path == "/mcp"


def test_images_are_configurable_and_must_be_pinned() -> None:
    custom = Scenario.model_validate(
        {
            "name": "x",
            "backend": "docker",
            "docker": {
                "postgres_image": "mirror.local:5000/library/postgres:18.6-bookworm",
                "toxiproxy_image": "ghcr.io/shopify/toxiproxy@sha256:" + "a" * 64,
            },
        }
    )
    topology = _topology(custom)
    assert topology.primary.image == topology.replica.image
    assert topology.primary.image == "mirror.local:5000/library/postgres:18.6-bookworm"
    assert topology.toxiproxy.image.endswith("a" * 64)


# --- what it refuses -----------------------------------------------------------------------


def test_what_the_docker_backend_cannot_run_is_refused_naming_it_and_the_way_out() -> None:
    restore = Scenario.model_validate(
        {
            "name": "pitr",
            "backend": "docker",
            "faults": [{"kind": "kill_primary", "at": 5}],
            "recovery": {"restore": {"target": "restore_point"}},
        }
    )
    [message] = docker_refusals(restore)
    assert "recovery.restore" in message and "--backend local" in message
    with pytest.raises(StackError, match="recovery.restore.*--backend local"):
        open_stack(restore)
    two = Scenario.model_validate({"name": "two", "backend": "docker", "server": {"instances": 2}})
    assert "server.instances" in docker_refusals(two)[0]
    own = Scenario.model_validate(
        {"name": "own", "backend": "docker", "server": {"command": ["srv", "{port}"]}}
    )
    assert "docker.server_image" in docker_refusals(own)[0]
    url = Scenario.model_validate(
        {"name": "url", "backend": "docker", "server": {"url": "http://127.0.0.1:9/mcp"}}
    )
    assert "server.url" in docker_refusals(url)[0]
    assert docker_refusals(SCENARIO) == []


def test_operations_it_does_not_implement_raise_naming_them() -> None:
    stack = DockerStack(SCENARIO)
    for name, call in [
        ("take_base_backup", stack.take_base_backup()),
        ("restore", stack.restore(None, 1.0)),  # type: ignore[arg-type]
        ("rebuild_replica", stack.rebuild_replica()),
        ("deploy_release", stack.deploy_release()),
    ]:
        with pytest.raises(StackError, match=f"{name}.*--backend local"):
            asyncio.run(call)


def test_open_stack_dispatches_on_the_backend() -> None:
    assert isinstance(open_stack(SCENARIO), DockerStack)
    assert not isinstance(open_stack(Scenario(name="l")), DockerStack)


# --- the fault mapping on a stand-in for docker-py's Container -----------------------------


class FakeContainer:
    """What kill_container and the partition use of docker.models.containers.Container."""

    def __init__(self, dies_after_reloads: int | None = 1) -> None:
        self.status = "running"
        self.attrs: dict[str, Any] = {
            "State": {"Pid": 4242},
            "NetworkSettings": {"Networks": {"run-net": {}}},
        }
        self.signals: list[object] = []
        self.reloads = 0
        self.dies_after_reloads = dies_after_reloads

    def kill(self, signal: object = None) -> None:
        self.signals.append(signal)

    def reload(self) -> None:
        self.reloads += 1
        if self.signals and self.dies_after_reloads is not None:
            if self.reloads > self.dies_after_reloads:
                self.status = "exited"


class FakeNetwork:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def disconnect(self, container: FakeContainer, force: bool = False) -> None:
        self.calls.append(("disconnect", {"force": force}))
        container.attrs["NetworkSettings"]["Networks"].pop("run-net")

    def connect(self, container: FakeContainer, aliases: list[str] | None = None) -> None:
        self.calls.append(("connect", {"aliases": aliases}))
        container.attrs["NetworkSettings"]["Networks"]["run-net"] = {"Aliases": aliases}


def test_kill_is_a_sigkill_confirmed_when_the_engine_says_stopped() -> None:
    container = FakeContainer(dies_after_reloads=3)
    result = kill_container(container, timeout_s=2, poll_s=0)
    assert container.signals == ["SIGKILL"]
    assert result.confirmed and result.pids == [4242]


def test_a_kill_the_engine_never_confirms_is_reported_unconfirmed() -> None:
    container = FakeContainer(dies_after_reloads=None)
    result = kill_container(container, timeout_s=0.05, poll_s=0.01)
    assert container.signals == ["SIGKILL"] and not result.confirmed


def test_partition_disconnects_then_reconnects_under_the_alias() -> None:
    container, network = FakeContainer(), FakeNetwork()
    assert disconnect_container(network, container, "run-net") is True
    assert connect_container(network, container, "run-net", "pg-primary") is True
    assert network.calls == [
        ("disconnect", {"force": True}),
        ("connect", {"aliases": ["pg-primary"]}),
    ]


def test_network_gateway_is_read_from_the_ipam_config() -> None:
    attrs = {"IPAM": {"Config": [{"Subnet": "172.30.0.0/16", "Gateway": "172.30.0.1"}]}}
    assert network_gateway(attrs) == "172.30.0.1"
    assert network_gateway({"IPAM": {"Config": None}}) is None


def test_only_dead_runs_of_this_machine_are_reaped() -> None:
    import socket

    here = socket.gethostname()
    assert owned_by_dead_run({HOST_LABEL: here, OWNER_LABEL: "999999999"})
    assert not owned_by_dead_run({HOST_LABEL: here, OWNER_LABEL: str(os.getpid())})
    assert not owned_by_dead_run({HOST_LABEL: "another-machine", OWNER_LABEL: "999999999"})
    assert not owned_by_dead_run({})


class PartitionStack:
    """A stack that can cut a container off its network (the fault runner's view of
    DockerStack); records what it was asked."""

    backend = "docker"
    fault_kinds = ("partition",)

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def partition(self, target: str) -> PartitionCut:
        import time

        self.calls.append(f"partition {target}")
        return PartitionCut(target, f"mcp-harness-x-{target}", True, time.monotonic())

    async def heal_partition(self, result: PartitionCut) -> bool:
        self.calls.append(f"heal {result.container}")
        return True


def _fire(fault: Partition, stack: Any) -> FaultRecord:
    import time

    record = FaultRecord.planned(fault)
    events: list[tuple[float, str]] = []
    context = FaultContext(stack, SCENARIO, time.monotonic(), 0, events, print)
    asyncio.run(run_fault(fault, record, context))
    return record


def test_partition_fault_cuts_and_heals_after_its_duration() -> None:
    stack = PartitionStack()
    record = _fire(Partition(kind="partition", at=0, duration=0.05, target="replica"), stack)
    assert stack.calls == ["partition replica", "heal mcp-harness-x-replica"]
    assert record.confirmed and record.target == "replica" and record.t_end_s is not None


def test_partition_on_the_local_backend_is_refused_at_fault_time() -> None:
    fault = Partition(kind="partition", at=0, duration=1, target="primary")
    with pytest.raises(StackError, match="partition needs --backend docker"):
        _fire(fault, LocalStack.__new__(LocalStack))


# --- docker/ -------------------------------------------------------------------------------


def test_compose_file_brings_up_the_same_topology() -> None:
    compose = yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"pg-primary", "pg-replica", "toxiproxy", "mcp-server"}
    assert all(s["networks"] == ["stack"] for s in services.values())
    assert set(compose["networks"]) == {"stack"}
    topology = _topology(SCENARIO.model_copy(update={"postgres": Scenario(name="d").postgres}))
    assert services["pg-primary"]["command"] == topology.primary.command
    assert services["pg-replica"]["command"] == topology.replica.command
    assert services["pg-replica"]["entrypoint"] == [REPLICA_ENTRYPOINT_PATH]
    assert services["pg-primary"]["image"] == topology.primary.image
    assert services["toxiproxy"]["image"] == topology.toxiproxy.image
    assert services["toxiproxy"]["command"] == topology.toxiproxy.command
    env = services["pg-replica"]["environment"]
    assert (env["PRIMARY_HOST"], env["PRIMARY_PORT"]) == (
        "toxiproxy",
        str(PROXY_PORTS["pg-replication"]),
    )
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)
    toxi_ports = {int(p.rsplit(":", 1)[1]) for p in services["toxiproxy"]["ports"]}
    assert toxi_ports == {8474, *PROXY_PORTS.values()}
    mounts = " ".join(v for s in services.values() for v in s.get("volumes", []))
    assert f"./primary-init.sh:{PRIMARY_INIT_PATH}" in mounts
    assert f"./toxiproxy.json:{TOXIPROXY_CONFIG_PATH}" in mounts
    server_env = services["mcp-server"]["environment"]
    gateway = compose["networks"]["stack"]["ipam"]["config"][0]["gateway"]
    assert server_env["MCP_ADMIN_ALLOW"] == gateway
    assert "@toxiproxy:15432,toxiproxy:15433/mcp" in server_env["DATABASE_URL"]
    assert services["mcp-server"]["build"]["dockerfile"] == "harness/docker/Dockerfile"


def test_toxiproxy_json_is_the_backends_proxy_list() -> None:
    shipped = json.loads((DOCKER_DIR / "toxiproxy.json").read_text())
    assert sorted(shipped, key=lambda p: p["name"]) == toxiproxy_config()


def test_dockerfile_is_pinned_non_root_with_a_healthcheck() -> None:
    text = (DOCKER_DIR / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    [base] = [line for line in lines if line.startswith("FROM ")]
    assert base.startswith("FROM python:3.11.") and "-slim" in base
    assert any(line.startswith("USER ") and "root" not in line for line in lines)
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert "/healthz" in text
    assert 'ENTRYPOINT ["python", "-m", "harness.server"]' in text
    for requirement in (DOCKER_DIR / "server-requirements.txt").read_text().splitlines():
        if requirement and not requirement.startswith("#"):
            assert "==" in requirement, f"{requirement}: pin it"


def test_image_build_context_holds_what_the_dockerfile_copies_and_no_caches(
    tmp_path: Path,
) -> None:
    """Staged from the package alone (an installed harness has no checkout): every COPY
    source of the Dockerfile is there, the build file itself at the path the build names."""
    context = stage_server_context(tmp_path)
    assert (context / "harness" / "docker" / "Dockerfile").is_file()
    assert (context / "harness" / "server" / "__main__.py").is_file()
    dockerfile = (context / "harness" / "docker" / "Dockerfile").read_text()
    copies = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies and all((context / source).exists() for sources in copies for source in sources)
    assert (context / "pyproject.toml").is_file() and (context / "README.md").is_file()
    assert not list(context.rglob("__pycache__"))


# --- the CLI without an engine (real: none runs here) --------------------------------------


def _engine_answers() -> bool:
    from harness.stack.prerequisites import DockerUnreachable, docker_engine_info

    try:
        docker_engine_info()
    except DockerUnreachable:
        return False
    return True


@pytest.mark.skipif(_engine_answers(), reason="a Docker engine answers on this machine")
def test_run_with_backend_docker_and_no_engine_exits_3_saying_what_to_do() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            str(SCENARIOS_DIR / "primary_kill.yaml"),
            "--backend",
            "docker",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 3, result.stderr
    assert "Docker is not reachable" in result.stderr
    assert "--backend local" in result.stderr
    assert "results" not in result.stderr, "checked before anything started"


@pytest.mark.skipif(_engine_answers(), reason="a Docker engine answers on this machine")
def test_doctor_lists_the_engine_as_optional() -> None:
    from harness.stack.prerequisites import doctor_checks

    [engine] = [c for c in doctor_checks() if c.name == "docker engine"]
    assert not engine.ok and not engine.required
    assert "not reachable" in engine.detail and "--backend local" in engine.fix


def test_repeat_is_refused_on_docker_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from harness.cli import main

    scenario = str(SCENARIOS_DIR / "primary_kill.yaml")
    assert main(["run", scenario, "--backend", "docker", "--repeat", "2"]) == 2
    assert "--repeat" in capsys.readouterr().err


@pytest.mark.skipif(_engine_answers(), reason="a Docker engine answers on this machine")
def test_up_with_backend_docker_and_no_engine_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["up", "--backend", "docker"]) == 3
    assert "Docker is not reachable" in capsys.readouterr().err


def test_a_scenario_docker_cannot_run_exits_2_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from harness.cli import main

    pitr = str(SCENARIOS_DIR / "pitr_restore.yaml")
    assert main(["run", pitr, "--backend", "docker", "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "pitr_restore.yaml" in err and "recovery.restore" in err and "--backend local" in err
