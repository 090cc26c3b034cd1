"""The stack on a shared machine: children get a minimal environment, the reaper trusts
only this user's own records of live processes it can identify, secrets are written
0600, a failed ``up`` leaves nothing behind, credentials files are checked before they
are trusted, Toxiproxy is not at trace level and Ryuk is published on loopback only."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.config import Scenario, ServerConfig
from harness.load.settings import SETTINGS_ENV
from harness.load.swarm import Swarm, SwarmShape, settings_for
from harness.stack import Endpoints, StackError
from harness.stack.attached import (
    CREDENTIALS_FILE,
    AttachedStack,
    running_stack_credentials,
    write_credentials,
)
from harness.stack.mcp_server import ADMIN_TOKEN_ENV, McpServerProcess
from harness.stack.postgres import PostgresCluster
from harness.stack.processes import (
    OWNER_FILE,
    PROGRAM_VARS,
    SYSTEM_VARS,
    ProcessRegistry,
    child_environment,
    cmdline_digest,
    let_user_through,
    private_dir,
    proc_cmdline_digest,
    proc_start_ticks,
    reap_stale_runs,
    write_private,
)

SECRET_NAME = "MCP_HARNESS_TEST_SECRET"
SECRET = "s3cr3t-value-of-the-ci"
PREFIX = "mcp-harness-"
DSN = "postgresql://mcp_app:pw-in-the-dsn@127.0.0.1:1,127.0.0.1:2/mcp"
ROOT = os.geteuid() == 0
as_root = pytest.mark.skipif(not ROOT, reason="needs root (chown to another account)")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness's environment as on a CI runner: a secret, a Postgres password for some
    other database, a Locust override; and the variables a child may keep."""
    monkeypatch.setenv(SECRET_NAME, SECRET)
    monkeypatch.setenv("PGPASSWORD", "password-of-another-database")
    monkeypatch.setenv("LOCUST_USERS", "999")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("TZ", "UTC")


# --- the environment of a child -----------------------------------------------------------


def test_child_environment_is_the_allow_list_plus_additions(secret_env: None) -> None:
    env = child_environment({"PGPASSWORD": "the-run's", "EXTRA": "1"})
    assert SECRET_NAME not in env and SECRET not in env.values()
    assert env["PGPASSWORD"] == "the-run's", "explicit additions win"
    assert env["EXTRA"] == "1"
    assert {"PATH", "LANG", "LC_TIME", "TZ"} <= set(env)
    assert "HOME" not in env, "a tool run as the Postgres user gets no home of the harness's"
    assert "LOCUST_USERS" not in env
    program = child_environment(keep=PROGRAM_VARS)
    assert "HOME" in program and SECRET_NAME not in program and "PGPASSWORD" not in program


def test_child_environment_keeps_names_and_prefixes_only() -> None:
    source = {"LC_ALL": "C", "LCX": "no", "PATHX": "no", "TMPDIR": "/t", "AWS_SECRET": "x"}
    assert child_environment(environ=source) == {
        "LC_ALL": "C",
        "TMPDIR": "/t",
        "PATH": os.defpath,  # always set: archive_command's shell needs one
    }
    assert set(SYSTEM_VARS) <= set(PROGRAM_VARS)


def test_the_server_gets_the_allow_list_its_scenario_env_and_its_own_variables(
    secret_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KEY", "the-users-key")
    config = ServerConfig(
        command=["my-server", "--port", "{port}"],
        env={"API_KEY": "${API_KEY}", "MODE": "test"},  # the escape hatch
        port_env="PORT",
    )
    env = McpServerProcess(config, 8123, DSN).environment()
    assert SECRET_NAME not in env and SECRET not in "".join(env.values())
    assert "PGPASSWORD" not in env and "LOCUST_USERS" not in env
    assert env["API_KEY"] == "the-users-key" and env["MODE"] == "test"
    assert env["DATABASE_URL"] == DSN and env["PORT"] == "8123"
    allowed = set(child_environment(keep=PROGRAM_VARS))
    assert set(env) <= allowed | {"API_KEY", "MODE", "DATABASE_URL", "PORT"}


def test_the_reference_server_gets_its_dsn_and_token_from_the_environment_only(
    secret_env: None,
) -> None:
    server = McpServerProcess(ServerConfig(database_url_env=None), 8123, DSN)
    env = server.environment()
    assert env["DATABASE_URL"] == DSN, "the reference server reads DATABASE_URL, always"
    assert env[ADMIN_TOKEN_ENV] == server.admin_token
    assert not any("pw-in-the-dsn" in arg or "{database_url}" in arg for arg in server.argv())
    assert SECRET_NAME not in env


def test_a_dsn_on_the_command_line_still_works_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServerConfig(command=["my-server", "--db", "{database_url}"])
    server = McpServerProcess(config, 8123, DSN)
    assert server.argv() == ["my-server", "--db", DSN]
    registry = RecordingRegistry(tmp_path)
    with caplog.at_level(logging.WARNING):
        server.start(registry)  # type: ignore[arg-type]
    assert "password is on the server's command line" in caplog.text
    assert DSN not in caplog.text


def test_locust_gets_the_allow_list_and_its_settings_file(secret_env: None, tmp_path: Path) -> None:
    swarm = make_swarm(tmp_path)
    env = swarm.process_env()
    assert SECRET_NAME not in env and "PGPASSWORD" not in env
    assert not any(name.startswith("LOCUST_") for name in env)
    assert env[SETTINGS_ENV] == str(swarm.settings_path)
    assert str(Path(__file__).resolve().parents[2]) in env["PYTHONPATH"].split(os.pathsep)


def test_postgres_tools_get_the_system_variables_and_their_password_only(
    secret_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(kwargs["env"])
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr("harness.stack.postgres.subprocess.run", fake_run)
    cluster = make_cluster(tmp_path)
    cluster._basebackup("127.0.0.1", 1, "replication-pw", tmp_path / "target")
    (env,) = seen
    assert env["PGPASSWORD"] == "replication-pw", "the run's, not the harness's PGPASSWORD"
    assert SECRET_NAME not in env and "HOME" not in env
    assert set(env) <= set(child_environment()) | {"PGPASSWORD"}


def test_registry_children_get_the_system_variables_unless_told_otherwise(
    secret_env: None, tmp_path: Path
) -> None:
    registry = ProcessRegistry(tmp_path)
    proc = registry.start("env", ["env", "-0"])
    proc.popen.wait(10)
    names = {line.split("=", 1)[0] for line in proc.log_path.read_text().split("\0") if line}
    assert SECRET_NAME not in names and "PGPASSWORD" not in names
    assert names <= set(child_environment()) | {"_"}


def test_toxiproxy_runs_at_info_level_not_trace(secret_env: None, tmp_path: Path) -> None:
    from harness.stack.local import TOXIPROXY_LOG_LEVEL, LocalStack

    stack = LocalStack.__new__(LocalStack)
    stack.toxiproxy_bin = Path("/bin/false")
    stack.registry = RecordingRegistry(tmp_path)  # type: ignore[assignment]
    stack._versions = {}
    with pytest.raises(StackError):
        asyncio.run(stack._start_toxiproxy())
    name, _, env = stack.registry.started[0]  # type: ignore[attr-defined]
    assert name == "toxiproxy"
    assert env is not None and env["LOG_LEVEL"] == TOXIPROXY_LOG_LEVEL
    assert TOXIPROXY_LOG_LEVEL in ("info", "warn")
    assert SECRET_NAME not in env


# --- the reaper ---------------------------------------------------------------------------


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A live process of this test, for a record to name."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait(5)


def record_of(proc: subprocess.Popen[bytes], **changes: Any) -> dict[str, Any]:
    """A well-formed owner record of a run whose harness is dead (our pid with another
    start time: that pid was reused) naming ``proc``; ``changes`` to its process entry."""
    ticks = proc_start_ticks(proc.pid)
    assert ticks is not None
    entry = {
        "name": "victim",
        "pid": proc.pid,
        "start_ticks": ticks,
        "cmdline_sha256": [cmdline_digest(["sleep", "60"])],
    }
    entry.update(changes)
    entry = {k: v for k, v in entry.items() if v is not None}
    own_ticks = proc_start_ticks(os.getpid())
    assert own_ticks is not None
    return {
        "format": 2,
        "harness_pid": os.getpid(),
        "harness_start_ticks": own_ticks + 1,
        "processes": [entry],
    }


def plant(parent: Path, record: object, *, raw: str | None = None) -> Path:
    run_dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    write_private(run_dir / OWNER_FILE, raw if raw is not None else json.dumps(record))
    return run_dir


def reap(parent: Path, caplog: pytest.LogCaptureFixture) -> list[Path]:
    with caplog.at_level(logging.WARNING, logger="harness.stack.processes"):
        return reap_stale_runs(parent, PREFIX)


def test_a_well_formed_record_of_a_dead_run_is_reaped(
    tmp_path: Path, victim: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """The control: what the checks leave to the reaper still works."""
    run_dir = plant(tmp_path, record_of(victim))
    assert proc_cmdline_digest(victim.pid) == cmdline_digest(["sleep", "60"])
    assert reap(tmp_path, caplog) == [run_dir]
    assert victim.wait(5) is not None and proc_start_ticks(victim.pid) is None
    assert not run_dir.exists()


def test_the_records_a_registry_writes_identify_its_processes(tmp_path: Path) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=tmp_path))
    registry = ProcessRegistry(run_dir, cpus=frozenset({0}) if shutil.which("taskset") else None)
    proc = registry.start("sleeper", ["sleep", "60"])
    try:
        # taskset execs sleep after Popen returns: wait until it has, as a dead run's
        # processes long have (mid-exec, /proc may show no command line at all)
        deadline = time.monotonic() + 5
        while proc_cmdline_digest(proc.pid) != cmdline_digest(["sleep", "60"]):
            assert time.monotonic() < deadline, "sleep never started"
            time.sleep(0.01)
        assert mode(run_dir / OWNER_FILE) == 0o600
        owner = json.loads((run_dir / OWNER_FILE).read_text())
        (entry,) = owner["processes"]
        assert entry["start_ticks"] == proc_start_ticks(proc.pid)
        assert cmdline_digest(["sleep", "60"]) in entry["cmdline_sha256"]
        owner["harness_start_ticks"] += 1  # the harness is dead now
        write_private(run_dir / OWNER_FILE, json.dumps(owner))
        assert reap_stale_runs(tmp_path, PREFIX) == [run_dir]
        assert proc.popen.wait(5) is not None and proc_start_ticks(proc.pid) is None
    finally:
        proc.stop(1)


@as_root
def test_a_record_planted_by_another_account_is_left_alone(
    tmp_path: Path, victim: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    planted_file = plant(tmp_path, record_of(victim))
    os.chown(planted_file / OWNER_FILE, nobody, -1)
    planted_dir = plant(tmp_path, record_of(victim))
    os.chown(planted_dir, nobody, -1)
    assert reap(tmp_path, caplog) == []
    assert victim.poll() is None, "a planted record must not make root kill anything"
    assert planted_file.exists() and planted_dir.exists()
    assert caplog.text.count("not to this user") == 2


def test_a_record_others_may_write_is_left_alone(
    tmp_path: Path, victim: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    open_dir = plant(tmp_path, record_of(victim))
    open_dir.chmod(0o777)
    open_file = plant(tmp_path, record_of(victim))
    (open_file / OWNER_FILE).chmod(0o666)
    assert reap(tmp_path, caplog) == []
    assert victim.poll() is None
    assert caplog.text.count("writable by others") == 2


def test_a_symlinked_record_is_left_alone(
    tmp_path: Path, victim: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    real = tmp_path / "elsewhere.json"
    write_private(real, json.dumps(record_of(victim)))
    run_dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=tmp_path))
    (run_dir / OWNER_FILE).symlink_to(real)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / f"{PREFIX}link").symlink_to(plant(elsewhere, record_of(victim)))
    assert reap(tmp_path, caplog) == []
    assert victim.poll() is None and run_dir.exists()
    assert "cannot be opened safely" in caplog.text and "not a directory" in caplog.text


@pytest.mark.parametrize(
    "raw",
    [
        "{}",
        "[]",
        "not json",
        '{"format": 2, "harness_pid": 1, "harness_start_ticks": 5, "processes": []}',
        '{"format": 2, "harness_pid": "12", "harness_start_ticks": 5, "processes": []}',
        '{"format": 2, "harness_pid": 99999999, "harness_start_ticks": 5, "processes": {}}',
    ],
)
def test_a_malformed_record_is_skipped_with_a_warning_and_blocks_nothing(
    tmp_path: Path, victim: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture, raw: str
) -> None:
    malformed = plant(tmp_path, None, raw=raw)
    good = plant(tmp_path, record_of(victim))
    removed = reap(tmp_path, caplog)  # no KeyError, no TypeError
    assert removed == [good], "the malformed run blocks neither the start nor the other runs"
    assert malformed.exists()
    assert "malformed" in caplog.text


@pytest.mark.parametrize(
    "changes",
    [
        {"start_ticks": None},  # missing: is that pid still the process? unknown
        {"cmdline_sha256": None},  # an older harness's record: no command line
        {"pid": -1},  # kill(-1) would signal every process
        {"pid": 0},
        {"pid": True},
    ],
)
def test_a_record_without_full_process_identity_kills_nothing(
    tmp_path: Path,
    victim: subprocess.Popen[bytes],
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, Any],
) -> None:
    run_dir = plant(tmp_path, record_of(victim, **changes))
    assert reap(tmp_path, caplog) == []
    assert victim.poll() is None and run_dir.exists()
    assert "malformed" in caplog.text


def test_a_live_pid_with_another_command_line_is_not_killed(
    tmp_path: Path, victim: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = plant(
        tmp_path, record_of(victim, cmdline_sha256=[cmdline_digest(["postgres", "-D", "x"])])
    )
    reap(tmp_path, caplog)
    assert victim.poll() is None, "same pid and start time, another program: not ours"
    assert not run_dir.exists(), "the dead run's directory is still cleaned up"


def test_a_live_pid_with_another_start_time_is_not_killed(
    tmp_path: Path, victim: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    ticks = proc_start_ticks(victim.pid)
    assert ticks is not None
    plant(tmp_path, record_of(victim, start_ticks=ticks + 7))
    reap(tmp_path, caplog)
    assert victim.poll() is None


def test_a_run_whose_harness_lives_is_left_alone(
    tmp_path: Path, victim: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    record = record_of(victim)
    record["harness_start_ticks"] = proc_start_ticks(os.getpid())
    run_dir = plant(tmp_path, record)
    assert reap(tmp_path, caplog) == []
    assert victim.poll() is None and run_dir.exists()


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory every account can reach (pytest's tmp_path is inside root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="stack-security-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def in_child_as(user: str, action: Any) -> int:
    """Run ``action()`` in a forked child with ``user``'s uid and gid; its exit code (0 when
    it returned, 1 when it raised)."""
    account = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@as_root
def test_another_users_stale_run_does_not_stop_a_start(
    shared_tmp: Path, victim: subprocess.Popen[bytes]
) -> None:
    """A run of another account (root's here, readable by all, as the old 0755 run
    directories were) naming processes this user cannot signal: a non-root harness used to
    die of PermissionError in kill(); now it passes by, and removes nothing."""
    theirs = plant(shared_tmp, record_of(victim))
    theirs.chmod(0o755)
    (theirs / OWNER_FILE).chmod(0o644)
    assert in_child_as("nobody", lambda: reap_stale_runs(shared_tmp, PREFIX)) == 0
    assert victim.poll() is None and theirs.exists()


# --- files holding secrets ----------------------------------------------------------------


def test_write_private_is_0600_from_the_first_byte_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_private(tmp_path / "secret", "pw")
        assert mode(path) == 0o600 and path.read_text() == "pw"
        path.chmod(0o644)
        write_private(path, "again")
        assert mode(path) == 0o600, "rewriting a loose file makes it private"
        assert private_dir(tmp_path / "d") and mode(tmp_path / "d") == 0o700
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_superuser_password_file_is_0600_while_initdb_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(self: PostgresCluster, argv: list[str], **kwargs: Any) -> None:
        pwfile = Path(next(a for a in argv if a.startswith("--pwfile=")).split("=", 1)[1])
        seen["mode"] = mode(pwfile)
        seen["argv"] = argv
        (self.data_dir / "postgresql.conf").write_text("")

    monkeypatch.setattr(PostgresCluster, "_run", fake_run)
    cluster = make_cluster(tmp_path)
    cluster.initdb(tmp_path / "archive", {})
    assert seen["mode"] == 0o600
    assert "--auth-local=scram-sha-256" in seen["argv"], "no trust for the socket"
    assert "--auth-host=scram-sha-256" in seen["argv"]
    assert not any(cluster.superuser_password in a for a in seen["argv"])
    assert not list(tmp_path.glob(".*.pw")), "removed once initdb has read it"
    assert mode(cluster.data_dir) == 0o700
    assert cluster.settings["unix_socket_permissions"] == "0700"


def test_load_settings_with_a_bearer_token_are_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_TOKEN", "bearer-secret")
    scenario = Scenario.model_validate(
        {"name": "t", "server": {"headers": {"Authorization": "Bearer ${MCP_TOKEN}"}}}
    )
    swarm = make_swarm(tmp_path, scenario)
    swarm.start()
    assert "bearer-secret" in swarm.settings_path.read_text()
    assert mode(swarm.settings_path) == 0o600


def test_the_credentials_file_is_0600(tmp_path: Path) -> None:
    path = write_credentials(tmp_path / CREDENTIALS_FILE, fake_stack(tmp_path), os.getpid())
    assert mode(path) == 0o600
    assert json.loads(path.read_text())["owner_pid"] == os.getpid()


@as_root
def test_let_user_through_lets_only_that_user_pass_and_only_pass(shared_tmp: Path) -> None:
    run_user = os.environ.get("MCP_HARNESS_PG_USER", "mcpharness")
    try:
        pwd.getpwnam(run_user)
    except KeyError:
        pytest.skip(f"no user {run_user}")
    run_dir = private_dir(shared_tmp / "run")
    write_private(run_dir / "harness-only", "x")  # as every file there that matters
    inner = private_dir(run_dir / "theirs", owner=run_user)
    let_user_through(run_dir, run_user)
    assert mode(run_dir) & 0o007 == 0

    def as_user(user: str, *argv: str) -> int:
        return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True).returncode

    assert as_user(run_user, "ls", str(inner)) == 0, "it reaches what it owns"
    assert as_user(run_user, "ls", str(run_dir)) != 0, "but cannot list the run directory"
    assert as_user(run_user, "cat", str(run_dir / "harness-only")) != 0
    assert as_user("nobody", "ls", str(inner)) != 0, "nobody else passes"


# --- a failed up, credentials files, the docker backend's reaper --------------------------


def test_a_failed_up_in_async_with_leaves_no_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.stack.local import LocalStack

    try:
        stack = LocalStack(Scenario(name="t"))
    except Exception as exc:  # no Postgres binaries / toxiproxy here
        pytest.skip(f"local backend prerequisites: {exc}")
    monkeypatch.setattr("harness.stack.local.tempfile.gettempdir", lambda: str(tmp_path))

    async def broken() -> None:
        raise StackError("toxiproxy-server did not come up")

    monkeypatch.setattr(stack, "_start_toxiproxy", broken)

    async def use() -> None:
        async with stack:
            raise AssertionError("not reached")

    with pytest.raises(StackError, match="did not come up"):
        asyncio.run(use())
    assert list(tmp_path.glob(f"{PREFIX}*")) == []


def credentials_in(parent: Path, name: str) -> Path:
    run_dir = private_dir(parent / f"{PREFIX}{name}")
    return write_private(run_dir / CREDENTIALS_FILE, json.dumps({"owner_pid": os.getpid()}))


def test_running_stack_credentials_refuses_a_file_others_may_read(tmp_path: Path) -> None:
    loose = credentials_in(tmp_path, "loose")
    loose.chmod(0o644)
    with pytest.raises(StackError, match=r"mode 644: others may read"):
        running_stack_credentials(tmp_path)
    good = credentials_in(tmp_path, "good")
    assert running_stack_credentials(tmp_path) == good
    with pytest.raises(StackError, match="refusing the credentials file"):
        AttachedStack(loose)


@as_root
def test_running_stack_credentials_refuses_a_file_of_another_account(tmp_path: Path) -> None:
    planted = credentials_in(tmp_path, "planted")
    os.chown(planted, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(StackError, match="not to you"):
        running_stack_credentials(tmp_path)
    with pytest.raises(StackError, match="another account wrote it"):
        AttachedStack(planted)


def test_ryuk_is_published_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from docker.utils import convert_port_bindings
    from testcontainers.core.container import Reaper

    from harness.stack.containers import (
        RYUK_PORT,
        install_loopback_reaper,
        loopback_ryuk_container,
    )

    container = loopback_ryuk_container({"version": "1.44"}, "/var/run/docker.sock")
    assert container.ports == {f"{RYUK_PORT}/tcp": ("127.0.0.1", None)}
    assert convert_port_bindings(container.ports) == {
        f"{RYUK_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]
    }
    assert container._name is not None and container._name.startswith("testcontainers-ryuk-")
    assert container._kwargs["auto_remove"] is True
    monkeypatch.setattr(Reaper, "_create_instance", Reaper._create_instance)
    monkeypatch.setattr(Reaper, "_instance", None)
    assert install_loopback_reaper({"version": "1.44"}) is True
    assert Reaper._create_instance.__func__.__name__ == "_create_loopback_reaper"  # type: ignore[attr-defined]


# --- helpers ------------------------------------------------------------------------------


class RecordingRegistry:
    """A registry that starts nothing: it records what it was asked to start."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.started: list[tuple[str, list[str], dict[str, str] | None]] = []

    def start(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None, **_: Any
    ) -> Any:
        self.started.append((name, list(argv), env))
        return SimpleNamespace(
            pid=999_999, name=name, running=lambda: False, stop=lambda *a, **k: None,
            log_tail=lambda *a: "",
        )  # fmt: skip


def make_swarm(tmp_path: Path, scenario: Scenario | None = None) -> Swarm:
    scenario = scenario or Scenario(name="t")
    settings = settings_for(scenario, tmp_path / "records.jsonl", "t")
    return Swarm(
        RecordingRegistry(tmp_path),
        settings,
        SwarmShape(base_url="http://127.0.0.1:1", users=1, spawn_rate=1, run_time_s=1),
    )


def make_cluster(tmp_path: Path) -> PostgresCluster:
    return PostgresCluster(
        name="primary",
        data_dir=tmp_path / "primary",
        bin_dir=tmp_path / "bin",
        port=1,
        socket_dir=tmp_path / "sock",
        run_user=None,
        superuser_password="superuser-pw",
    )


def fake_stack(tmp_path: Path) -> Any:
    endpoints = Endpoints(*(["x"] * 8), run_dir=str(tmp_path))
    return SimpleNamespace(
        endpoints=endpoints, server_metrics_urls=lambda: [], server_admin=lambda: []
    )


def test_a_primary_starts_without_synchronous_standbys_until_its_standby_streams() -> None:
    from harness.stack.postgres import SYNCHRONOUS_STANDBYS, until_standby_attached

    settings = {SYNCHRONOUS_STANDBYS: "*", "synchronous_commit": "on"}
    assert until_standby_attached(settings) == {"synchronous_commit": "on"}
    assert settings[SYNCHRONOUS_STANDBYS] == "*"  # the scenario's own dict is left alone
