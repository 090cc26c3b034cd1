"""server.setup_sql: the user's schema is applied as the application's role before the
server starts; broken SQL stops the stack with the file named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from harness.config import load_scenario
from harness.stack import StackError
from harness.stack.local import LocalStack
from harness.stack.processes import is_alive
from tests.helpers import processes_naming

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""


def scenario_with(tmp_path: Path, sql: str) -> LocalStack:
    (tmp_path / "schema.sql").write_text(sql)
    (tmp_path / "s.yaml").write_text("server: {setup_sql: schema.sql}\n")
    return LocalStack(load_scenario(tmp_path / "s.yaml"))


def test_setup_sql_runs_as_the_application_role(tmp_path: Path) -> None:
    stack = scenario_with(
        tmp_path, "CREATE TABLE widgets (id int PRIMARY KEY);\nINSERT INTO widgets VALUES (7);"
    )

    async def check() -> tuple[int, str]:
        async with stack:
            conn = await asyncpg.connect(stack.endpoints.primary_proxy_dsn, timeout=10)
            try:
                row = await conn.fetchrow(
                    "SELECT (SELECT id FROM widgets), tableowner FROM pg_tables "
                    "WHERE tablename = 'widgets'"
                )
            finally:
                await conn.close()
        return row[0], row[1]

    try:
        assert asyncio.run(check()) == (7, "mcp_app")
    finally:
        stack.remove_run_dir()


def test_broken_setup_sql_names_the_file(tmp_path: Path) -> None:
    stack = scenario_with(tmp_path, "CREATE TABLE broken (")
    with pytest.raises(StackError, match=r"server.setup_sql .*schema.sql failed"):
        asyncio.run(stack.__aenter__())
    stack.remove_run_dir()


def test_a_failed_up_called_directly_stops_what_it_started(tmp_path: Path) -> None:
    """Not through ``async with``: up() itself stops Toxiproxy and the clusters it started.
    Judged on this stack's own processes (its inventory, and anything naming its run
    directory), not on the machine's: another test's stack may be starting beside it."""
    stack = scenario_with(tmp_path, "CREATE TABLE broken (")
    with pytest.raises(StackError, match=r"server.setup_sql .*schema.sql failed"):
        asyncio.run(stack.up())
    started = stack.inventory()
    assert {"toxiproxy", "postgres-primary"} <= {p["name"] for p in started}, started
    assert not [p for p in started if is_alive(int(p["pid"]), p["start_ticks"])], started
    assert not processes_naming(stack.run_dir)
    stack.remove_run_dir()
