"""One real local stack on a machine shared with other accounts: its Postgres socket is
closed to them and needs a password anyway, no child carries a variable the allow-list
did not pass (a CI secret set before the start reaches none), the run directory and the
files holding secrets are private, no command line carries a password, Toxiproxy logs
at info, and the owner record identifies every live process of the run."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from harness.config import Scenario
from harness.load.settings import SETTINGS_ENV
from harness.load.swarm import SETTINGS_FILE, Swarm, SwarmShape, settings_for
from harness.stack.local import TOXIPROXY_LOG_LEVEL, LocalStack
from harness.stack.mcp_server import ADMIN_TOKEN_ENV
from harness.stack.postgres import SUPERUSER
from harness.stack.processes import (
    OWNER_FILE,
    PROGRAM_VARS,
    child_environment,
    children_of,
    read_owner_record,
)

SECRET_NAME = "MCP_HARNESS_TEST_SECRET"
SECRET = "ci-secret-that-must-reach-no-child"
TOKEN_NAME = "MCP_HARNESS_TEST_TOKEN"
TOKEN = "bearer-token-of-the-scenario"
ROOT = os.geteuid() == 0


class Running:
    def __init__(self, stack: LocalStack, swarm: Swarm) -> None:
        self.stack = stack
        self.swarm = swarm

    def processes(self) -> dict[int, str]:
        """Every live process of the run (the registry's and their descendants: the
        postmasters' backends, Locust's), pid -> the registry name it descends from."""
        found: dict[int, str] = {}
        for owned in self.stack.registry.processes:
            if not owned.running():
                continue
            todo = [owned.pid]
            while todo:
                pid = todo.pop()
                found[pid] = owned.name
                todo.extend(children_of(pid))
        return found


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    """The stack and a small Locust swarm through its registry, both started with a CI
    secret in the harness's environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_NAME, SECRET)
        patch.setenv(TOKEN_NAME, TOKEN)
        patch.setenv("PGPASSWORD", "password-of-another-database")
        scenario = Scenario.model_validate(
            {
                "name": "test-security",
                "server": {"headers": {"X-Test-Token": f"${{{TOKEN_NAME}}}"}},
                "load": {"think_time": ["500ms", "1s"]},
            }
        )
        stack = LocalStack(scenario)
        try:
            asyncio.run(stack.up())
            settings = settings_for(scenario, stack.run_dir / "records.jsonl", "sec")
            mcp = stack.endpoints.mcp_url.rsplit("/", 1)[0]
            swarm = Swarm(
                stack.registry,
                settings,
                # Stopped when the module ends; its own bound only has to outlast the
                # module's tests, which may wait for the machine (tests/conftest.py).
                SwarmShape(base_url=mcp, users=1, spawn_rate=1, run_time_s=600),
            )
            swarm.start()
            try:
                deadline = time.monotonic() + 30
                while not swarm.records_path.exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
                yield Running(stack, swarm)
            finally:
                swarm.stop(5)
        finally:
            asyncio.run(stack.down())
            stack.remove_run_dir()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def in_child_as(user: str, action: Any) -> int:
    """``action()`` in a forked child as ``user`` (uid, gid, no supplementary groups):
    exit code 0 when it returned True, 1 when it returned False, 2 when it raised."""
    account = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 2
        try:
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            code = 0 if action() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def socket_path(stack: LocalStack, cluster: str = "primary") -> Path:
    return stack.run_dir / "sock" / f".s.PGSQL.{stack.clusters[cluster].port}"


@pytest.mark.skipif(not ROOT, reason="another account is needed: runs as root, as CI")
def test_the_socket_is_closed_to_another_account(running: Running) -> None:
    stack = running.stack
    path = socket_path(stack)
    assert stat.S_ISSOCK(os.stat(path).st_mode)

    def refused() -> bool:
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
        except PermissionError:
            return True
        finally:
            probe.close()
        return False

    assert in_child_as("nobody", refused) == 0, "nobody reached the Postgres socket"
    assert mode(path.parent) == 0o700 and mode(path) == 0o700


def test_a_local_connection_needs_the_password(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = running.stack
    monkeypatch.delenv("PGPASSWORD", raising=False)
    sock_dir, port = str(socket_path(stack).parent), stack.clusters["primary"].port

    async def connect(password: str | None) -> object:
        conn = await asyncpg.connect(
            host=sock_dir,
            port=port,
            user=SUPERUSER,
            password=password,
            database="postgres",
            passfile="/nonexistent",
            timeout=10,
        )
        try:
            return await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)) as refused:
        asyncio.run(connect(None))
    assert "password" in str(refused.value).lower()
    assert asyncio.run(connect(stack.passwords["postgres"])) == 1


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if item)
    return {pair[0]: pair[1] if len(pair) > 1 else "" for pair in pairs}


def test_no_child_holds_a_variable_the_allow_list_did_not_pass(running: Running) -> None:
    processes = running.processes()
    names = set(processes.values())
    assert {"toxiproxy", "postgres-primary", "postgres-replica", "mcp-server"} <= names
    assert {"locust-master", "locust-worker-0"} <= names
    system = set(child_environment())
    program = set(child_environment(keep=PROGRAM_VARS))
    expected_extra = {
        "toxiproxy": {"LOG_LEVEL"},
        "mcp-server": {"DATABASE_URL", ADMIN_TOKEN_ENV},
        "locust-master": {SETTINGS_ENV, "PYTHONPATH"},
        "locust-worker-0": {SETTINGS_ENV, "PYTHONPATH"},
    }
    checked = 0
    for owned in running.stack.registry.processes:
        if not owned.running():
            continue
        env = environ_of(owned.pid)
        allowed = program if owned.name.startswith(("mcp-server", "locust")) else system
        extra = set(env) - allowed - expected_extra.get(owned.name, set())
        assert not extra, f"{owned.name} got {sorted(extra)}"
        checked += 1
    assert checked >= 6
    for pid, name in processes.items():
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue  # ended meanwhile (a backend)
        assert SECRET.encode() not in raw and SECRET_NAME.encode() not in raw, name
        assert b"password-of-another-database" not in raw, name
    toxiproxy = next(p for p in running.stack.registry.processes if p.name == "toxiproxy")
    assert environ_of(toxiproxy.pid)["LOG_LEVEL"] == TOXIPROXY_LOG_LEVEL
    assert '"level":"trace"' not in toxiproxy.log_path.read_text()


def test_the_run_directory_and_the_files_with_secrets_are_private(running: Running) -> None:
    stack = running.stack
    run_dir = stack.run_dir
    assert mode(run_dir) & 0o077 in (0, 0o010), oct(mode(run_dir))  # 0o010: the ACL's mask
    for name in ("sock", "wal-archive", "primary", "replica", "logs"):
        assert mode(run_dir / name) == 0o700, name
    for name in (OWNER_FILE, SETTINGS_FILE):
        assert mode(run_dir / name) == 0o600, name
    assert TOKEN in (run_dir / SETTINGS_FILE).read_text(), "the file that needs it"
    assert not list(run_dir.glob(".*.pw")), "the password file went after initdb"
    if ROOT:
        assert in_child_as("nobody", lambda: bool(os.listdir(run_dir))) == 2
        if stack.run_user is not None:
            inner = run_dir / "primary"
            assert in_child_as(stack.run_user, lambda: bool(os.listdir(inner))) == 0
            assert in_child_as(stack.run_user, lambda: bool(os.listdir(run_dir))) == 2


def test_no_command_line_holds_a_password(running: Running) -> None:
    secrets = [*running.stack.passwords.values(), TOKEN]
    for pid, name in running.processes().items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert not any(s.encode() in cmdline for s in secrets), name


def test_the_owner_record_identifies_every_live_process(running: Running) -> None:
    """What the reaper of a later run checks: each recorded process, as /proc shows it."""
    record = read_owner_record(running.stack.run_dir)
    assert record is not None
    live = {p.pid for p in running.stack.registry.processes if p.running()}
    identified = {p.pid for p in record.processes if p.is_running()}
    assert live and live <= identified
