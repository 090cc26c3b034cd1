"""PgBouncer between the MCP server and the writer endpoint (``topology.pooler``).

The server connects to the ``pg-pooler`` proxy, which leads to PgBouncer; PgBouncer's one
database leads to the ``pg-primary`` proxy, the writer endpoint the stack moves after a
promotion. A failover through a pooler is then what users meet in production: PgBouncer
notices its server connections broke, waits ``server_login_retry`` after a failed login,
and reaches the promoted node only once the endpoint leads there.

PgBouncer runs as the Postgres user (it refuses to run as root), logs to stderr (the
run's log file) and listens on 127.0.0.1 only; its auth file holds the application
role's password, readable by that user alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.config import PoolerConfig
from harness.stack.net import LOOPBACK, listens_on
from harness.stack.postgres import StackError
from harness.stack.prerequisites import MissingPrerequisite, binary_version, debian_binary
from harness.stack.processes import (
    OwnedProcess,
    ProcessRegistry,
    poll_until,
    private_dir,
    write_private,
)

DEFAULT_LIMITS = {"max_client_conn": "2000", "default_pool_size": "20"}
"""Room for every client a scenario can run; the scenario's settings override them."""


def find_pgbouncer() -> str | None:
    return debian_binary("pgbouncer")


def pgbouncer_binary() -> str:
    """The binary, or MissingPrerequisite (exit 3 before anything starts) saying how to get it."""
    found = find_pgbouncer()
    if not found:
        raise MissingPrerequisite(
            "topology.pooler needs PgBouncer: `apt-get install pgbouncer` (or `make pgbouncer` "
            "as root), or remove topology.pooler"
        )
    return found


def pgbouncer_version() -> str:
    """``pgbouncer --version``'s first line's number, for the run's environment."""
    return binary_version([pgbouncer_binary(), "--version"])


def render_config(
    pooler: PoolerConfig, port: int, database: str, upstream_port: int, auth_file: Path
) -> str:
    """pgbouncer.ini: ``database`` on 127.0.0.1:``port``, leading to 127.0.0.1:``upstream_port``."""
    settings = {
        "listen_addr": LOOPBACK,
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "scram-sha-256",
        "auth_file": str(auth_file),
        "pool_mode": pooler.pool_mode,
        **DEFAULT_LIMITS,
        **pooler.settings,
    }
    lines = [
        "[databases]",
        f"{database} = host={LOOPBACK} port={upstream_port} dbname={database}",
        "[pgbouncer]",
        *(f"{key} = {value}" for key, value in settings.items()),
    ]
    return "\n".join(lines) + "\n"


def auth_line(user: str, password: str) -> str:
    """One userlist.txt entry: both fields double-quoted, a quote inside doubled."""
    return f'"{user}" "{password.replace(chr(34), chr(34) * 2)}"\n'


@dataclass
class PgBouncerPooler:
    """One PgBouncer process owned by the run."""

    config: PoolerConfig
    port: int
    database: str
    upstream_port: int
    process: OwnedProcess | None = None

    def start(
        self, registry: ProcessRegistry, user: str, password: str, run_user: str | None
    ) -> OwnedProcess:
        directory = private_dir(registry.run_dir / "pgbouncer", owner=run_user)
        auth_file = write_private(
            directory / "userlist.txt", auth_line(user, password), owner=run_user
        )
        ini = write_private(
            directory / "pgbouncer.ini",
            render_config(self.config, self.port, self.database, self.upstream_port, auth_file),
            owner=run_user,
        )
        self.process = registry.start("pgbouncer", [pgbouncer_binary(), str(ini)], user=run_user)
        return self.process

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Listening on its own port (a port taken by another process is not ours)."""
        process = self.process
        assert process is not None, "start() first"

        async def listening() -> bool:
            return listens_on(process.pid, self.port)

        if await poll_until(listening, timeout_s, process=process, interval_s=0.05):
            return
        tail = process.log_tail()
        raise StackError(f"pgbouncer did not come up on {LOOPBACK}:{self.port}. Log tail:\n{tail}")
