"""The stack under test: Postgres primary + streaming replica, the MCP server, and
Toxiproxy in front of every hop. ``Stack`` is the one interface; backends
(``local``: processes; ``docker``: containers) provide it, and scenario code never asks which
backend runs. ``open_stack`` is the entry point.
"""

from __future__ import annotations

import abc
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness import redaction
from harness.config import BACKEND_FAULTS, PROXY_NAMES, Scenario
from harness.stack.backup import (
    RESTORE_STEPS,
    BaseBackup,
    RestoreFailed,
    RestorePoint,
    RestoreReport,
    RestoreStep,
    RestoreTarget,
)
from harness.stack.mcp_server import Rollout
from harness.stack.postgres import KillResult, StackError
from harness.stack.processes import ProcessRegistry
from harness.stack.toxiproxy import ToxiproxyClient

__all__ = [
    "PROXY_NAMES",
    "RESTORE_STEPS",
    "AdminEndpoint",
    "BaseBackup",
    "Endpoints",
    "Handover",
    "KillResult",
    "PartitionCut",
    "RestoreFailed",
    "RestorePoint",
    "RestoreReport",
    "RestoreStep",
    "RestoreTarget",
    "Rollout",
    "Stack",
    "StackError",
    "open_stack",
]


@dataclass(frozen=True)
class Endpoints:
    """Where each part answers. DSNs carry the run's generated passwords."""

    mcp_url: str
    mcp_direct_url: str
    server_database_url: str
    primary_dsn: str
    replica_dsn: str
    primary_proxy_dsn: str
    replica_proxy_dsn: str
    toxiproxy_api: str
    run_dir: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def redacted(self) -> dict[str, str]:
        """The endpoints with every password replaced, fit to print or log."""
        return {name: redact(value) for name, value in asdict(self).items()}


@dataclass(frozen=True)
class AdminEndpoint:
    """One server instance's admin endpoint (the reference server's ``/admin``, loopback
    only): ``GET {url}/state``, ``POST {url}/admission`` ... with
    ``Authorization: Bearer <token>``. The token stays out of ``repr``: never log it."""

    name: str
    """The instance, as its process is named (``mcp-server``, ``mcp-server-1``)."""
    url: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class PartitionCut:
    """A container cut off the run's network: confirmed when the engine no longer lists
    the network among the container's."""

    target: str
    container: str
    confirmed: bool
    t_confirmed: float


def redact(text: str) -> str:
    """Every secret in ``text`` shown as ``***``: ``harness.redaction.redact``, the one
    redaction of every output."""
    return redaction.redact(text)


@dataclass(frozen=True)
class WriterMove:
    """The writer endpoint sent to a promoted node (``topology.writer: endpoint``), at
    ``at`` on CLOCK_MONOTONIC."""

    at: float
    node: str
    port: int


@dataclass(frozen=True)
class Handover:
    """A planned switchover: asked at ``requested`` (CLOCK_MONOTONIC); ``confirmed`` when
    the stack followed the new leader. ``detail`` is what the failover manager answered."""

    requested: float
    confirmed: bool
    old_port: int
    new_port: int
    detail: str


@dataclass(frozen=True)
class Rejoin:
    """A demoted primary back as a streaming replica of the new one, at ``at``."""

    at: float
    node: str


@dataclass(frozen=True)
class Promotion:
    """A standby promoted: asked at ``started``, writable at ``done`` (CLOCK_MONOTONIC)."""

    started: float
    done: float
    by: str = "harness"
    """Who promoted: the harness (a scripted delay, a runbook) or a failover manager."""


class Stack(abc.ABC):
    """One topology, whatever runs it. Use as ``async with``: up on enter, down on exit."""

    backend: ClassVar[str]
    """The scenario's ``backend`` this class runs."""
    endpoints: Endpoints
    toxiproxy: ToxiproxyClient
    registry: ProcessRegistry
    """The run's processes; the load's Locust processes are started through it too."""
    base_backups: list[BaseBackup]
    """Base backups taken so far, oldest first; a restore starts from the last one."""

    @abc.abstractmethod
    async def up(self) -> Endpoints: ...

    @abc.abstractmethod
    async def down(self) -> None: ...

    @abc.abstractmethod
    async def kill_primary(self) -> KillResult:
        """Kill the current primary like a dead machine; confirmed when none of its processes remain."""

    @abc.abstractmethod
    async def kill_server(self, instance: int = 0) -> KillResult:
        """SIGKILL one MCP server instance; confirmed when it is gone. Refused for a server the
        harness does not own (``server.url``)."""

    @abc.abstractmethod
    async def restart_server(self, instance: int = 0) -> None:
        """Start that instance again on the same port and wait until it is ready."""

    @abc.abstractmethod
    def server_metrics_urls(self) -> list[str]:
        """Each server instance's own /metrics (direct, not through a proxy or the balancer)."""

    @abc.abstractmethod
    def server_admin(self) -> list[AdminEndpoint]:
        """The admin endpoint of each server instance that has one (the reference server),
        in instance order; empty for a user's server, which has none the harness knows."""

    async def promote_replica(self) -> None:
        """Promote the standby; it becomes the current primary. Timed (``promotions``):
        a failover's detection ends where its promotion starts."""
        started = time.monotonic()
        await self._promote_standby()
        self._promotion_log().append(Promotion(started, time.monotonic()))

    @abc.abstractmethod
    async def _promote_standby(self) -> None:
        """The backend's promotion of the standby, done when it takes writes."""

    @property
    def promotions(self) -> list[Promotion]:
        """Every promotion of the run, in order."""
        return list(self._promotion_log())

    def _promotion_log(self) -> list[Promotion]:
        log: list[Promotion] = self.__dict__.setdefault("_promotions", [])
        return log

    @property
    def writer_moves(self) -> list[WriterMove]:
        """When the writer endpoint followed a promotion; empty where nothing moves."""
        return []

    @property
    def pooler_log(self) -> Path | None:
        """The connection pooler's own log (``topology.pooler``); None without one."""
        return None

    @property
    def rejoins(self) -> list[Rejoin]:
        """When a demoted primary came back as a replica; empty where none does."""
        return []

    async def restart_killed_primary(self) -> None:
        """Boot the machine ``kill_primary`` killed again, as its failover manager's node:
        it rejoins as a replica of the new primary (``rejoins``)."""
        raise StackError(
            "restarting a killed primary needs topology.failover: patroni: nothing else "
            "would rejoin it as a replica"
        )

    async def switchover(self, timeout_s: float) -> Handover:
        """Ask the failover manager to hand the primary over to the replica; confirmed
        when the stack follows the new leader within ``timeout_s``."""
        raise StackError(
            "switchover needs topology.failover: patroni: with a scripted failover nothing "
            "hands the primary over (kill_primary and recovery.promote_after model a failover)"
        )

    @abc.abstractmethod
    async def deploy_release(
        self, command: list[str] | None = None, fault_mode: str | None = None
    ) -> Rollout:
        """Rolling redeploy of every server instance on its own port, one after the other
        (each stopped gracefully, started, ready), to the argv ``command`` (placeholders as
        ``server.command``) or the reference server in ``fault_mode``; neither: the
        scenario's own release. Refused for ``server.url``."""

    @abc.abstractmethod
    async def take_base_backup(self) -> BaseBackup:
        """A base backup of the current primary, out of band (not through a proxy); with
        the WAL archive it is what a restore starts from."""

    @abc.abstractmethod
    async def create_restore_point(self, name: str) -> RestorePoint:
        """A named point in the current primary's WAL, for a restore to stop at."""

    @abc.abstractmethod
    async def restore(self, target: RestoreTarget, timeout_s: float) -> RestoreReport:
        """Point-in-time restore into a fresh cluster that becomes the primary, behind the
        same proxies (the server's DSN does not change). Timed steps, in order: ``stop``
        (servers, then the clusters once the primary's WAL is archived),
        ``restore_base_backup``, ``replay_wal`` (to the target, paused), ``promote``,
        ``reattach_server`` (proxies repointed, servers started and ready). Raises
        RestoreFailed (a StackError) naming the step, with the steps finished."""

    @abc.abstractmethod
    async def rebuild_replica(self) -> float:
        """A new streaming replica of the current primary (after a restore), behind the
        ``pg-replication`` and ``pg-replica`` proxies. Returns the seconds it took."""

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        """The fault kinds this backend can inject."""
        return BACKEND_FAULTS[self.backend]

    async def partition(self, target: str) -> PartitionCut:
        """Cut ``target`` off the run's network (backends whose parts sit on one)."""
        raise StackError(
            f"partition needs --backend docker: the {self.backend} backend's parts share one "
            "loopback interface (cut a hop with proxy_down instead)"
        )

    async def heal_partition(self, cut: PartitionCut) -> bool:
        """Connect the container of ``cut`` again; True when the engine lists it back."""
        raise StackError(f"the {self.backend} backend cannot partition")

    @property
    @abc.abstractmethod
    def current_primary_dsn(self) -> str:
        """Direct superuser DSN of the node that is primary now (the promoted one after failover)."""

    @property
    @abc.abstractmethod
    def current_primary_port(self) -> int:
        """The server port of the current primary (what ``current_setting('port')`` returns on it)."""

    @abc.abstractmethod
    def versions(self) -> dict[str, Any]:
        """Versions of the parts, for result.json's environment."""

    @abc.abstractmethod
    def log_paths(self) -> list[str]: ...

    @abc.abstractmethod
    def remove_run_dir(self) -> None:
        """Remove what the stack left on disk (after its logs were collected)."""

    @abc.abstractmethod
    def inventory(self) -> list[dict[str, object]]:
        """Every process the run started (name, pid, start time, exit code), for logs/processes.json."""

    async def __aenter__(self) -> Stack:
        """Up; when that fails, everything it started is stopped and its run directory
        removed (an ``async with`` body never ran, so nobody would remove it: the failure's
        log tail is in the error). A caller that wants the logs of a failed up calls
        ``up()`` itself and collects ``log_paths()`` before ``remove_run_dir()``."""
        try:
            await self.up()
        except BaseException:
            try:
                await self.down()
            finally:
                self.remove_run_dir()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.down()


def open_stack(
    scenario: Scenario, *, pg_bin: str | None = None, cpus: frozenset[int] | None = None
) -> Stack:
    """The stack for ``scenario.backend``; ``cpus`` pins its processes."""
    if scenario.backend == "local":
        from harness.stack.local import LocalStack

        return LocalStack(scenario, pg_bin=pg_bin, cpus=cpus)
    if scenario.backend == "docker":
        from harness.stack.docker import DockerStack

        return DockerStack(scenario, cpus=cpus)
    raise StackError(f"backend {scenario.backend!r} is not known; use --backend local or docker")
