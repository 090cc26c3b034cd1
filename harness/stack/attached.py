"""A stack that another process runs (``mcp-harness up``), reached through its real
interfaces only: the DSNs and proxies in its credentials file, Postgres itself
(``pg_promote``), the servers' /metrics and admin endpoints, Toxiproxy's API.

It is what ``mcp-harness runbook`` acts on. What needs the processes (kill, restart,
restore, a new replica) belongs to the process that owns them: those methods refuse,
saying so, and a runbook step that needs one reports a failed fix, not a pretend one.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import asyncpg
import psutil

from harness.stack import AdminEndpoint, Endpoints, Stack, StackError
from harness.stack.backup import BaseBackup, RestorePoint, RestoreReport, RestoreTarget
from harness.stack.local import RUN_DIR_PREFIX
from harness.stack.mcp_server import Rollout
from harness.stack.postgres import KillResult
from harness.stack.processes import write_private
from harness.stack.toxiproxy import ToxiproxyClient

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "endpoints.json"
CONNECT_TIMEOUT_S = 3.0


def write_credentials(path: Path, stack: Stack, owner_pid: int) -> Path:
    """What an attached stack needs, passwords and admin tokens included: mode 0600."""
    data = {
        **stack.endpoints.as_dict(),
        "owner_pid": owner_pid,
        "metrics_urls": stack.server_metrics_urls(),
        "admin": [{"name": a.name, "url": a.url, "token": a.token} for a in stack.server_admin()],
    }
    return write_private(path, json.dumps(data, indent=1))


def credentials_refusal(path: Path) -> str | None:
    """Why ``path`` must not be trusted as a credentials file, or None. It tells the runbook
    where the databases, proxies and admin endpoints are: one written by another account
    could send it (and the tokens it holds) anywhere, and one that others may read has
    leaked its passwords already."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    uid = os.geteuid()
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a symlink?)"
    if info.st_uid != uid:
        return f"belongs to uid {info.st_uid}, not to you (uid {uid}): another account wrote it"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return (
            f"has mode {mode:o}: others may read or change the passwords in it "
            f"(`chmod 600 {path}` if you made it yourself)"
        )
    return None


def check_credentials(path: Path) -> Path:
    """``path`` if it may be trusted (``credentials_refusal``); StackError saying why not."""
    refusal = credentials_refusal(path)
    if refusal is not None:
        raise StackError(f"refusing the credentials file {path}: it {refusal}")
    return path


def running_stack_credentials(parent: Path | None = None) -> Path:
    """The credentials file of the newest stack whose ``mcp-harness up`` still runs, among
    those this user may trust (its own, readable by it alone); a file that is not is
    skipped with a warning and named in the error when no other is found."""
    parent = parent or Path(tempfile.gettempdir())
    alive = []
    refused = []
    for path in parent.glob(f"{RUN_DIR_PREFIX}*/{CREDENTIALS_FILE}"):
        refusal = credentials_refusal(path)
        if refusal is not None:
            if not refusal.startswith("cannot be read"):  # another user's private run
                log.warning("skipping the credentials file %s: it %s", path, refusal)
                refused.append(f"{path} ({refusal})")
            continue
        try:
            pid = int(json.loads(path.read_text()).get("owner_pid", 0))
        except (OSError, ValueError, AttributeError):
            continue
        if pid and psutil.pid_exists(pid):
            alive.append((path.stat().st_mtime, path))
    if not alive:
        skipped = f"; refused: {'; '.join(refused)}" if refused else ""
        raise StackError(
            f"no running stack found under {parent}: start one with `mcp-harness up` "
            f"(or pass --stack with the credentials_file it printed){skipped}"
        )
    return max(alive)[1]


class AttachedStack(Stack):
    """The stack described by a credentials file written by ``mcp-harness up``."""

    backend = "attached"

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        """Toxiproxy's faults only: the processes belong to the process that owns them."""
        return ("toxic", "proxy_down")

    def __init__(self, credentials: Path) -> None:
        check_credentials(credentials)
        try:
            data: dict[str, Any] = json.loads(credentials.read_text())
            self.endpoints = Endpoints(**{f.name: data[f.name] for f in fields(Endpoints)})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StackError(
                f"{credentials}: not a stack's credentials file ({exc!r}); start one with "
                "`mcp-harness up` and pass the credentials_file it prints"
            ) from None
        self.credentials = credentials
        self.owner_pid = int(data.get("owner_pid", 0))
        self._metrics_urls = [str(u) for u in data.get("metrics_urls", [])]
        self._admin = [
            AdminEndpoint(a["name"], a["url"], a["token"]) for a in data.get("admin", [])
        ]
        api = urlsplit(self.endpoints.toxiproxy_api)
        self.toxiproxy = ToxiproxyClient(api.hostname or "127.0.0.1", api.port or 8474)
        self.base_backups: list[BaseBackup] = []
        self._primary_dsn = self.endpoints.primary_dsn

    async def up(self) -> Endpoints:
        """Find which node is the primary now (a promotion may have happened since)."""
        for dsn in (self.endpoints.primary_dsn, self.endpoints.replica_dsn):
            try:
                conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
            except (OSError, asyncpg.PostgresError):
                continue
            try:
                if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                    self._primary_dsn = dsn
                    return self.endpoints
            finally:
                await conn.close()
        return self.endpoints

    async def down(self) -> None:
        """Nothing: the stack is its owner's to stop."""

    @property
    def current_primary_dsn(self) -> str:
        return self._primary_dsn

    @property
    def current_primary_port(self) -> int:
        return urlsplit(self._primary_dsn).port or 5432

    async def _promote_standby(self) -> None:
        """``pg_promote`` on the node that is in recovery: Postgres's own interface."""
        standby = (
            self.endpoints.replica_dsn
            if self._primary_dsn == self.endpoints.primary_dsn
            else self.endpoints.primary_dsn
        )
        try:
            conn = await asyncpg.connect(standby, timeout=CONNECT_TIMEOUT_S)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StackError(f"the standby does not answer, nothing to promote: {exc}") from None
        try:
            if not await conn.fetchval("SELECT pg_promote(true, 60)", timeout=70):
                raise StackError("pg_promote did not finish within 60 s")
        finally:
            await conn.close()
        self._primary_dsn = standby

    def server_metrics_urls(self) -> list[str]:
        return list(self._metrics_urls)

    def server_admin(self) -> list[AdminEndpoint]:
        return list(self._admin)

    def versions(self) -> dict[str, Any]:
        return {}

    def log_paths(self) -> list[str]:
        return []

    def remove_run_dir(self) -> None:
        """Nothing: the run directory is its owner's."""

    def inventory(self) -> list[dict[str, object]]:
        return []

    def _owned_by_up(self, what: str) -> NoReturn:
        raise StackError(
            f"{what} needs the processes, which belong to `mcp-harness up` (pid "
            f"{self.owner_pid}); do it there, or run a scenario that includes it"
        )

    async def kill_primary(self) -> KillResult:
        self._owned_by_up("killing the primary")

    async def kill_server(self, instance: int = 0) -> KillResult:
        self._owned_by_up("killing a server")

    async def restart_server(self, instance: int = 0) -> None:
        self._owned_by_up("restarting a server")

    async def deploy_release(
        self, command: list[str] | None = None, fault_mode: str | None = None
    ) -> Rollout:
        self._owned_by_up("a release swap")

    async def take_base_backup(self) -> BaseBackup:
        self._owned_by_up("a base backup")

    async def create_restore_point(self, name: str) -> RestorePoint:
        self._owned_by_up("a restore point")

    async def restore(self, target: RestoreTarget, timeout_s: float) -> RestoreReport:
        self._owned_by_up("a point-in-time restore")

    async def rebuild_replica(self) -> float:
        self._owned_by_up("a new replica")
