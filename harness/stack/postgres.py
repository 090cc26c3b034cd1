"""One PostgreSQL cluster run from real server binaries as a process of the run.

Who may connect. Every client of the harness (the harness itself, pg_basebackup, the
server, probes) connects over TCP to 127.0.0.1 with a password (``--auth-host``, scram);
nothing uses the Unix socket. The socket is still there (Postgres always makes one unless
told otherwise) and is closed two ways, each enough on its own:

- its directory and the socket are the Postgres user's alone (0700): another local
  account cannot even reach it (on a shared CI runner, every job's account could
  otherwise connect);
- local connections need the superuser's password as well (``--auth-local``, scram):
  what can pass the directory (root, a process of the Postgres user) still cannot log
  in without it. ``trust`` would make any such account superuser, and a superuser can
  run commands as the Postgres user (``COPY ... TO PROGRAM``).

The clusters' processes get the system variables of ``child_environment`` only: what
runs as the Postgres user can read their ``/proc/<pid>/environ``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from harness.stack.net import listens_on
from harness.stack.processes import (
    OwnedProcess,
    ProcessRegistry,
    child_environment,
    children_of,
    private_dir,
    run_as,
    signal_pid,
    wait_gone,
    write_private,
)

DB_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection cut mid-operation
)
"""What a query over a path that may break (a proxy, a failover) can raise: a failed
attempt to record, never the end of a probe or a check."""


SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
APP_USER = "mcp_app"
APP_DATABASE = "mcp"

RECOVERY_CONF = "harness-recovery.conf"
"""The recovery target of a restore, in its own file: dropped after promotion, so a
replica cloned from the restored primary does not stop at the same target."""
BACKUP_LEFTOVERS = (
    "backup_label.old",
    "postmaster.pid",
    "postmaster.opts",
    "backup_manifest",
    "standby.signal",
    "recovery.signal",
    RECOVERY_CONF,
)
"""Files a copied base backup must not carry into a fresh cluster: state of the cluster
it was taken from (or of an earlier restore of it)."""

# Settings that make the topology work; scenario settings are applied after these.
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_permissions": "0700",  # the socket too, not only its directory
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",
    "archive_mode": "on",
    "track_commit_timestamp": "on",  # when each row was committed: finds the earliest damage
    "shared_buffers": "'64MB'",
    "max_connections": "200",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}


class StackError(RuntimeError):
    """A part of the stack did not come up or did not do what it was asked."""


@dataclass(frozen=True)
class KillResult:
    """What a kill did: the processes it ended, and whether all of them are gone."""

    pids: list[int]
    confirmed: bool
    t_confirmed: float


@dataclass
class PostgresCluster:
    """A data directory and the postmaster serving it, owned by the run."""

    name: str
    data_dir: Path
    bin_dir: Path
    port: int
    socket_dir: Path
    run_user: str | None
    superuser_password: str
    process: OwnedProcess | None = None
    settings: dict[str, str] = field(default_factory=dict)

    def _bin(self, tool: str) -> str:
        return str(self.bin_dir / tool)

    def _run(
        self, argv: list[str], *, env: dict[str, str] | None = None, timeout_s: float = 120
    ) -> None:
        """Run a Postgres tool as the run user; raise with its output on failure."""
        try:
            result = subprocess.run(
                argv,
                **run_as(self.run_user),
                env=child_environment(env),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd="/",
            )
        except subprocess.TimeoutExpired:
            raise StackError(
                f"{self.name}: {' '.join(argv[:2])} did not finish within {timeout_s:g}s"
            ) from None
        if result.returncode != 0:
            raise StackError(
                f"{self.name}: {' '.join(argv[:2])} failed ({result.returncode}):\n"
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )

    def _own(self, path: Path) -> None:
        """A directory of the run user's alone (0700)."""
        private_dir(path, owner=self.run_user)

    def initdb(self, archive_dir: Path, scenario_settings: dict[str, str]) -> None:
        """Create a fresh primary cluster with a superuser password and WAL archiving; every
        connection needs a password, the socket's too (the module's docstring says why)."""
        self._own(self.data_dir)
        pwfile = write_private(
            self.data_dir.parent / f".{self.name}.pw",
            self.superuser_password + "\n",
            owner=self.run_user,
        )
        try:
            self._run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self.write_settings(archive_dir, scenario_settings)

    def basebackup_from(
        self,
        host: str,
        port: int,
        replication_password: str,
        scenario_settings: dict[str, str],
        archive_dir: Path,
    ) -> None:
        """Clone a primary into this (empty) data directory as a streaming hot standby."""
        self._basebackup(host, port, replication_password, self.data_dir, "-R")
        self.write_settings(archive_dir, scenario_settings)

    def backup_to(self, target: Path, label: str, replication_password: str) -> None:
        """A plain-format base backup of this cluster (with its manifest) into ``target``,
        straight from its own port: a backup is out of band, no proxy or toxic in its way."""
        self._basebackup("127.0.0.1", self.port, replication_password, target, "-l", label)

    def _basebackup(
        self, host: str, port: int, replication_password: str, target: Path, *extra: str
    ) -> None:
        self._own(target)
        conninfo = f"host={host} port={port} user={REPLICATION_USER}"
        self._run(
            [
                self._bin("pg_basebackup"),
                "-d",
                conninfo,
                "-D",
                str(target),
                "-F",
                "p",
                "-X",
                "stream",
                "-c",
                "fast",
                *extra,
            ],
            env={"PGPASSWORD": replication_password},
        )

    def restore_from(
        self,
        backup: Path,
        archive_dir: Path,
        scenario_settings: dict[str, str],
        recovery_settings: dict[str, str],
    ) -> None:
        """Make this (new) data directory a copy of a verified base backup that, once
        started, replays the WAL archive up to the target in ``recovery_settings``."""
        try:
            self._run([self._bin("pg_verifybackup"), str(backup)])
        except StackError as exc:
            raise StackError(
                f"base backup {backup} does not verify, so it cannot be restored: {exc}\n"
                "Take a new base backup (Stack.take_base_backup) and restore from that."
            ) from None
        self._own(self.data_dir)
        self._run(["cp", "-a", f"{backup}/.", str(self.data_dir)])
        self.data_dir.chmod(0o700)
        for leftover in BACKUP_LEFTOVERS:
            (self.data_dir / leftover).unlink(missing_ok=True)
        self.write_settings(archive_dir, scenario_settings)
        self._write_owned(RECOVERY_CONF, _render_conf(recovery_settings))
        self._include(RECOVERY_CONF)
        self._write_owned("recovery.signal", "")

    def drop_recovery_settings(self) -> None:
        """After promotion: the recovery target is spent (and must not reach a clone)."""
        (self.data_dir / RECOVERY_CONF).unlink(missing_ok=True)

    def _write_owned(self, name: str, text: str) -> None:
        write_private(self.data_dir / name, text, owner=self.run_user)

    def _include(self, conf_name: str) -> None:
        """Make postgresql.conf read ``conf_name`` (once; later lines win)."""
        main_conf = self.data_dir / "postgresql.conf"
        line = f"include_if_exists = '{conf_name}'"
        text = main_conf.read_text()
        if line not in text:
            main_conf.write_text(text + f"\n{line}\n")

    def write_settings(self, archive_dir: Path, scenario_settings: dict[str, str]) -> None:
        archive = str(archive_dir)
        settings = {
            **BASE_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            # Copied under a temporary name, then renamed: a copy cut off by a kill leaves no
            # truncated segment under the real name for a restore to trip on. A segment
            # already archived succeeds only if identical: a promoted standby archives the
            # old timeline's segments the dead primary had archived already, and a plain
            # "refuse if present" would stop its archiver for good.
            "archive_command": (
                f"'if test -f {archive}/%f; then cmp -s %p {archive}/%f; "
                f"else cp %p {archive}/%f.part && mv {archive}/%f.part {archive}/%f; fi'"
            ),
            **{k: _quote(v) for k, v in scenario_settings.items()},
        }
        self.settings = settings
        self._write_owned("harness.conf", _render_conf(settings))
        self._include("harness.conf")

    def start(self, registry: ProcessRegistry) -> OwnedProcess:
        stale = self.data_dir / "postmaster.pid"
        stale.unlink(missing_ok=True)
        self.process = registry.start(
            f"postgres-{self.name}",
            [self._bin("postgres"), "-D", str(self.data_dir)],
            user=self.run_user,
            cwd=self.data_dir,
        )
        return self.process

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def dsn(
        self, user: str = SUPERUSER, password: str | None = None, database: str = "postgres"
    ) -> str:
        return f"postgresql://{user}:{password or self.superuser_password}@127.0.0.1:{self.port}/{database}"

    async def wait_ready(self, timeout_s: float) -> None:
        """Until the cluster accepts a query; raises with the log tail if it does not."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and not self.process.running():
                break
            if self.process is not None and not listens_on(self.process.pid, self.port):
                await asyncio.sleep(0.05)  # not yet, or a stranger holds the port
                continue
            try:
                conn = await asyncpg.connect(self.dsn(), timeout=2)
                await conn.close()
                return
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                last = exc
                await asyncio.sleep(0.05)
        tail = self.process.log_tail() if self.process else "(not started)"
        raise StackError(
            f"postgres {self.name} did not come up on 127.0.0.1:{self.port} ({last}). Log tail:\n{tail}"
        )

    async def wait_replay_paused(self, timeout_s: float) -> None:
        """Until recovery has reached its target and paused there (``recovery_target_action =
        pause``); raises with the log tail if the postmaster exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        state: object = None
        while time.monotonic() < deadline:
            if self.process is not None and not self.process.running():
                raise StackError(
                    f"postgres {self.name} exited during recovery "
                    f"({self.process.popen.returncode}). Log tail:\n{self.process.log_tail()}"
                )
            try:
                state = await self.fetchval(
                    "SELECT CASE WHEN pg_is_in_recovery() "
                    "THEN pg_get_wal_replay_pause_state() ELSE 'promoted' END",
                    timeout_s=2,
                )
            except (OSError, asyncpg.PostgresError):
                state = None
            if state == "paused":
                return
            if state == "promoted":
                raise StackError(
                    f"postgres {self.name} ended recovery without pausing at the target "
                    "(recovery_target_action was overridden?)"
                )
            await asyncio.sleep(0.05)
        tail = self.process.log_tail() if self.process else ""
        raise StackError(
            f"postgres {self.name} did not reach the recovery target within {timeout_s:g}s "
            f"(replay state: {state}). Log tail:\n{tail}"
        )

    async def archive_current_wal(self, archive_dir: Path, timeout_s: float) -> str:
        """Close the current WAL file and wait until the archiver has copied it, so the
        archive holds every commit made so far (all a restore can replay). Returns its name."""
        walfile = str(await self.fetchval("SELECT pg_walfile_name(pg_switch_wal())"))
        deadline = time.monotonic() + timeout_s
        while not (archive_dir / walfile).exists():
            if time.monotonic() >= deadline:
                archiver = await self.fetchval(
                    "SELECT format('last archived %s, %s failures, last failed %s', "
                    "last_archived_wal, failed_count, last_failed_wal) FROM pg_stat_archiver"
                )
                raise StackError(
                    f"WAL file {walfile} of {self.name} did not reach the archive {archive_dir} "
                    f"within {timeout_s:g}s ({archiver}); a restore would lose the commits in "
                    f"it. Check archive_command errors in the log of postgres-{self.name} and "
                    "the free disk space, then restore again."
                )
            await asyncio.sleep(0.05)
        return walfile

    async def execute(self, sql: str, *args: object, timeout_s: float = 10) -> str:
        conn = await asyncpg.connect(self.dsn(), timeout=timeout_s)
        try:
            return str(await conn.execute(sql, *args, timeout=timeout_s))
        finally:
            await conn.close()

    async def fetchval(
        self, sql: str, *args: object, database: str = "postgres", timeout_s: float = 10
    ) -> object:
        conn = await asyncpg.connect(self.dsn(database=database), timeout=timeout_s)
        try:
            return await conn.fetchval(sql, *args, timeout=timeout_s)
        finally:
            await conn.close()

    def kill(self, timeout_s: float = 10) -> KillResult:
        """SIGKILL the postmaster and every child, as a machine that lost power.

        The postmaster is stopped first so it cannot fork while its children are
        listed; the kill is confirmed when none of those processes remains.
        """
        if self.process is None or not self.process.running():
            return KillResult([], False, time.monotonic())
        postmaster = self.process.pid
        signal_pid(postmaster, signal.SIGSTOP)
        victims = [postmaster, *children_of(postmaster)]
        for pid in victims:
            signal_pid(pid, signal.SIGKILL)
        self.process.popen.wait(timeout_s)
        confirmed = wait_gone(victims, timeout_s)
        return KillResult(victims, confirmed, time.monotonic())

    async def promote(self, timeout_s: float = 30) -> None:
        """Promote this standby and wait until it accepts writes."""
        ok = await self.fetchval(
            "SELECT pg_promote(true, $1)", int(timeout_s), timeout_s=timeout_s + 5
        )
        if ok is not True:
            raise StackError(f"pg_promote on {self.name} did not finish within {timeout_s}s")

    async def end_recovery(self, timeout_s: float = 60) -> None:
        """Promote a cluster paused at its recovery target and wait until it takes writes.

        ``pg_wal_replay_resume()`` ends a recovery paused at its target (documented for
        ``recovery_target_action = pause``) and wakes the startup process at once;
        ``pg_promote()`` would wait for its next one-second check of the pause.
        """
        await self.execute("SELECT pg_wal_replay_resume()")
        deadline = time.monotonic() + timeout_s
        while await self.fetchval("SELECT pg_is_in_recovery()"):
            if time.monotonic() >= deadline:
                raise StackError(f"{self.name} was still in recovery {timeout_s:g}s after resume")
            await asyncio.sleep(0.01)

    def stop(self, timeout_s: float = 10) -> None:
        """Fast shutdown (SIGINT), then SIGKILL."""
        if self.process is not None:
            self.process.stop(timeout_s, sig=signal.SIGINT)


def _quote(value: str) -> str:
    """Quote a setting value for postgresql.conf unless it is a plain number or word."""
    text = str(value)
    if (
        text.startswith("'")
        or text.replace(".", "", 1).isdigit()
        or text in ("on", "off", "true", "false")
    ):
        return text
    return conf_string(text)


def conf_string(text: str) -> str:
    """A postgresql.conf string literal (its parser reads backslash escapes too)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


SYNCHRONOUS_STANDBYS = "synchronous_standby_names"


def until_standby_attached(settings: dict[str, str]) -> dict[str, str]:
    """A primary's settings before its standby exists: without synchronous replication,
    whose commits (the stack's own setup) would wait for a standby not cloned yet. Each
    backend turns it on once the standby streams."""
    return {k: v for k, v in settings.items() if k != SYNCHRONOUS_STANDBYS}


def _render_conf(settings: dict[str, str]) -> str:
    return "".join(f"{k} = {v}\n" for k, v in settings.items())
