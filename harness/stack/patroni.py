"""Patroni with etcd as the failover manager (``topology.failover: patroni``).

Two Patroni nodes manage the two Postgres clusters: the first bootstraps the primary
(initdb), the second clones it and streams. A leader key in etcd with a ``ttl`` decides
who is primary: when the leader's machine dies, its key expires and the replica's Patroni
takes the lock and promotes. Nothing of the harness promotes in this topology; the stack
only watches each node's REST API and follows (the writer endpoint, the timeline).

etcd is Debian's ``etcd-server`` (3.4; Patroni's ``etcd3`` client speaks its v3 API).
Patroni runs from its own virtualenv under ``.tools/patroni`` made with the system's
Python: it runs as the Postgres user, which must be able to read the interpreter (a
Python under root's home is not). Both run as that user, on 127.0.0.1 only, with their
data and configs in the run directory.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from harness.config import PatroniConfig
from harness.stack.net import LOOPBACK, listens_on
from harness.stack.postgres import (
    REPLICATION_USER,
    SUPERUSER,
    KillResult,
    PostgresCluster,
    StackError,
)
from harness.stack.prerequisites import (
    MissingPrerequisite,
    binary_version,
    debian_binary,
    tool_dirs,
)
from harness.stack.processes import (
    OwnedProcess,
    ProcessRegistry,
    children_of,
    poll_until,
    private_dir,
    signal_pid,
    wait_gone,
    write_private,
)

PATRONI_ENV = "MCP_HARNESS_PATRONI"
SCOPE = "mcp-harness"
REST_TIMEOUT_S = 1.0
REST_USER = "harness"
"""Basic-auth user of Patroni's unsafe REST endpoints (switchover, restart, ...); its
password is the run's, in ``LocalStack.passwords`` under this name."""


def find_patroni() -> str | None:
    """``$MCP_HARNESS_PATRONI``, ``patroni/bin/patroni`` in the per-user tool directory or
    a checkout's ``.tools/`` (``mcp-harness bootstrap --patroni``, ``make patroni``), or
    PATH."""
    configured = os.environ.get(PATRONI_ENV)
    if configured:
        return configured if Path(configured).exists() else None
    for tools in tool_dirs():
        local = tools / "patroni" / "bin" / "patroni"
        if local.exists():
            return str(local)
    return shutil.which("patroni")


def find_etcd() -> str | None:
    return debian_binary("etcd")


def patroni_binaries() -> tuple[str, str]:
    """(patroni, etcd), or MissingPrerequisite (exit 3 before anything starts)."""
    patroni, etcd = find_patroni(), find_etcd()
    if patroni is None:
        raise MissingPrerequisite(
            "topology.failover: patroni needs Patroni: `make patroni` (a virtualenv of the "
            f"system Python in .tools/patroni), or set {PATRONI_ENV} to a patroni executable "
            "the Postgres user can run"
        )
    if etcd is None:
        raise MissingPrerequisite(
            "topology.failover: patroni needs etcd as its DCS: `apt-get install etcd-server` "
            "(or `make patroni` as root)"
        )
    return patroni, etcd


def patroni_versions() -> dict[str, str]:
    patroni, etcd = patroni_binaries()
    return {
        "patroni": binary_version([patroni, "--version"]),
        "etcd": binary_version([etcd, "--version"]),
    }


def _get_json(url: str) -> tuple[int | None, dict[str, Any]]:
    """(HTTP status, JSON body); (None, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=REST_TIMEOUT_S) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), json.loads(exc.read() or b"{}")
        except ValueError:
            return int(exc.code), {}
    except (urllib.error.URLError, OSError, ValueError):
        return None, {}


def _post_json(
    url: str, body: dict[str, Any], password: str, timeout_s: float
) -> tuple[int | None, str]:
    """(HTTP status, the answer's text) of a POST with basic auth; (None, why) when
    nothing answers."""
    token = base64.b64encode(f"{REST_USER}:{password}".encode()).decode()
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return None, repr(exc)


@dataclass
class EtcdServer:
    """One etcd member: the DCS both Patroni nodes share."""

    client_port: int
    peer_port: int
    data_dir: Path
    process: OwnedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.client_port}"

    def start(self, registry: ProcessRegistry, run_user: str | None) -> OwnedProcess:
        private_dir(self.data_dir, owner=run_user)
        peer = f"http://{LOOPBACK}:{self.peer_port}"
        argv = [
            patroni_binaries()[1],
            "--name", "dcs",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"dcs={peer}",
        ]  # fmt: skip
        self.process = registry.start("etcd", argv, user=run_user)
        return self.process

    def leader(self) -> tuple[bool, str | None]:
        """(answered, the node holding Patroni's leader lock): etcd's v3 JSON gateway."""
        key = base64.b64encode(f"/service/{SCOPE}/leader".encode()).decode()
        request = urllib.request.Request(
            f"{self.url}/v3/kv/range",
            data=json.dumps({"key": key}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=REST_TIMEOUT_S) as response:
                body = json.loads(response.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError):
            return False, None
        kvs = body.get("kvs") or []
        return True, base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    async def wait_ready(self, timeout_s: float = 15.0) -> None:
        process = self.process
        assert process is not None, "start() first"

        async def healthy() -> bool:
            if not listens_on(process.pid, self.client_port):
                return False
            status, body = await asyncio.to_thread(_get_json, f"{self.url}/health")
            return status == 200 and body.get("health") == "true"

        if await poll_until(healthy, timeout_s, process=process):
            return
        tail = process.log_tail()
        raise StackError(f"etcd did not come up at {self.url}. Log tail:\n{tail}")


@dataclass
class PatroniNode:
    """One Patroni process and the Postgres cluster it manages (``cluster.process`` stays
    None: the postmaster is Patroni's child, found through ``postmaster.pid``)."""

    cluster: PostgresCluster
    rest_port: int
    process: OwnedProcess | None = None

    @property
    def name(self) -> str:
        return self.cluster.name

    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rest_port}"

    def config(
        self, dcs: PatroniConfig, etcd: EtcdServer, passwords: dict[str, str], pg: dict[str, str]
    ) -> dict[str, Any]:
        """patroni.yml: this node's REST API and Postgres on 127.0.0.1, both nodes'
        bootstrap ``dcs`` (used by whichever initializes the cluster)."""
        cluster = self.cluster
        return {
            "scope": SCOPE,
            "name": self.name,
            "restapi": {
                "listen": f"{LOOPBACK}:{self.rest_port}",
                "connect_address": f"{LOOPBACK}:{self.rest_port}",
                "authentication": {"username": REST_USER, "password": passwords[REST_USER]},
            },
            "etcd3": {"hosts": f"{LOOPBACK}:{etcd.client_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": int(dcs.ttl),
                    "loop_wait": int(dcs.loop_wait),
                    "retry_timeout": int(dcs.retry_timeout),
                    "maximum_lag_on_failover": dcs.maximum_lag_on_failover,
                    "synchronous_mode": dcs.synchronous_mode,
                    # a killed leader that boots again rejoins by rewinding what it
                    # wrote after the replica stopped following (initdb's checksums allow it)
                    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": pg},
                },
                "initdb": [
                    {"encoding": "UTF8"},
                    {"auth-local": "scram-sha-256"},
                    {"auth-host": "scram-sha-256"},
                ],
                "pg_hba": [
                    "local all all scram-sha-256",
                    f"host all all {LOOPBACK}/32 scram-sha-256",
                    f"host replication {REPLICATION_USER} {LOOPBACK}/32 scram-sha-256",
                ],
            },
            "postgresql": {
                "listen": f"{LOOPBACK}:{cluster.port}",
                "connect_address": f"{LOOPBACK}:{cluster.port}",
                "data_dir": str(cluster.data_dir),
                "bin_dir": str(cluster.bin_dir),
                "pgpass": str(cluster.data_dir.parent / "patroni" / f"{self.name}.pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": passwords[SUPERUSER]},
                    "replication": {
                        "username": REPLICATION_USER,
                        "password": passwords[REPLICATION_USER],
                    },
                },
                "parameters": {"unix_socket_directories": str(cluster.socket_dir)},
                # a spread checkpoint makes a clone wait minutes for nothing
                "basebackup": [{"checkpoint": "fast"}],
            },
        }

    def start(
        self, registry: ProcessRegistry, config: dict[str, Any], run_user: str | None
    ) -> OwnedProcess:
        directory = private_dir(registry.run_dir / "patroni", owner=run_user)
        path = write_private(directory / f"{self.name}.yml", yaml.safe_dump(config), owner=run_user)
        self.process = registry.start(
            f"patroni-{self.name}", [patroni_binaries()[0], str(path)], user=run_user
        )
        return self.process

    def request_switchover(
        self, candidate: str, password: str, timeout_s: float
    ) -> tuple[int | None, str]:
        """POST /switchover from this node (the leader) to ``candidate``; Patroni answers
        once the leader lock moved (200) or the switchover failed (412, 503)."""
        return _post_json(
            f"{self.rest_url}/switchover",
            {"leader": self.name, "candidate": candidate},
            password,
            timeout_s,
        )

    def state(self) -> dict[str, Any]:
        """GET /patroni: this node's role and state as Patroni reports them ({} if none)."""
        return _get_json(f"{self.rest_url}/patroni")[1]

    async def wait_role(self, role: str, timeout_s: float) -> None:
        """Until Patroni reports this node running in ``role`` (``primary``, ``replica``)."""
        process = self.process
        assert process is not None, "start() first"
        state: dict[str, Any] = {}

        async def in_role() -> bool:
            nonlocal state
            state = await asyncio.to_thread(self.state)
            running = state.get("role") == role and state.get("state") == "running"
            return running and (role != "replica" or state.get("replication_state") == "streaming")

        if await poll_until(in_role, timeout_s, process=process, interval_s=0.2):
            return
        tail = process.log_tail()
        raise StackError(
            f"patroni {self.name} did not run as {role} within {timeout_s:g}s (last state: "
            f"{state or 'no answer'}). Log tail:\n{tail}"
        )

    async def wait_synchronous_standby(self, standby: str, timeout_s: float) -> None:
        """Until this leader's Patroni names ``standby`` its synchronous standby: before
        that, synchronous mode forbids promoting it, and a kill would find no failover."""
        members: list[Any] = []

        async def named() -> bool:
            nonlocal members
            _, cluster = await asyncio.to_thread(_get_json, f"{self.rest_url}/cluster")
            members = cluster.get("members") or []
            return any(
                m.get("name") == standby and m.get("role") == "sync_standby" for m in members
            )

        if await poll_until(named, timeout_s, process=self.process, interval_s=0.2):
            return
        raise StackError(
            f"patroni {self.name} did not name {standby} its synchronous standby within "
            f"{timeout_s:g}s (synchronous_mode); members: {members}"
        )

    def postmaster_pid(self) -> int | None:
        """The running postmaster of this node's data directory (its pid file, checked
        against the process's command line: a pid file left behind names nobody)."""
        try:
            pid = int((self.cluster.data_dir / "postmaster.pid").read_text().split()[0])
            if str(self.cluster.data_dir) in " ".join(psutil.Process(pid).cmdline()):
                return pid
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
        return None

    def kill(self, timeout_s: float = 10) -> KillResult:
        """The node's machine loses power: Patroni, the postmaster and every backend get
        SIGKILL (stopped first, so that nothing forks or restarts in between)."""
        pids = [p for p in (self.process.pid if self.process else None, self.postmaster_pid()) if p]
        for pid in pids:
            signal_pid(pid, signal.SIGSTOP)
        victims = [*pids, *(child for pid in pids for child in children_of(pid))]
        for pid in victims:
            signal_pid(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.popen.wait(timeout_s)
        confirmed = wait_gone(victims, timeout_s)
        return KillResult(victims, confirmed, time.monotonic())

    def stop(self, timeout_s: float = 15) -> None:
        """Patroni stops its Postgres on SIGTERM; what is left then is killed."""
        if self.process is not None:
            self.process.stop(timeout_s)
        postmaster = self.postmaster_pid()
        if postmaster is not None:
            victims = [postmaster, *children_of(postmaster)]
            for pid in victims:
                signal_pid(pid, signal.SIGKILL)
            wait_gone(victims, 5)
