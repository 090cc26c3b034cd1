"""The reference server's checksum, parent reference, guard trigger and fault modes, on the
shared stack's real Postgres.

Each test gets a database of its own (owned by the app role, dropped afterwards), so the
shared `notes` table other tests read is never touched. The store is driven directly, and
the tools through the MCP server in process (no HTTP: what is tested here is what the tools
write, not the transport).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest
from mcp.server.mcpserver.exceptions import ToolError

from harness.server.app import build_mcp_server, tool_names
from harness.server.faults import COMPACTED_SUFFIX, GARBAGE_SUFFIX, FaultSettings, mangle_body
from harness.server.notes import (
    DatabaseError,
    DbSettings,
    NoteNotFound,
    NotesStore,
    PermissionMissing,
    is_infrastructure_failure,
)
from harness.server.protection import ProtectionSettings
from harness.server.shield import Protection
from harness.stack.local import LocalStack
from harness.stack.postgres import APP_USER

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""

T = TypeVar("T")

OLD_SCHEMA_SQL = """
CREATE TABLE notes (
    id text PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
"""The notes table as servers before checksums created it."""

INVARIANTS = {
    "checksum": "SELECT id FROM notes WHERE checksum IS NOT NULL"
    " AND checksum <> encode(sha256(convert_to(title || E'\\n' || body, 'UTF8')), 'hex')",
    "title_not_blank": "SELECT id FROM notes WHERE btrim(title) = ''",
    "parent_exists": "SELECT n.id FROM notes n WHERE n.parent_id IS NOT NULL"
    " AND NOT EXISTS (SELECT FROM notes p WHERE p.id = n.parent_id)",
}
"""The invariants of the reference data as an integrity checker states them: the rows
breaking each (the harness's own checks also read when each row changed)."""


def checksum(title: str, body: str) -> str:
    return hashlib.sha256(f"{title}\n{body}".encode()).hexdigest()


def superuser_dsn(stack: LocalStack, database: str = "postgres") -> str:
    return stack.clusters["primary"].dsn(database=database)


def app_dsn(stack: LocalStack, database: str) -> str:
    """The server's own DSN (both proxies, read-write target) pointed at another database."""
    return urlsplit(stack.endpoints.server_database_url)._replace(path=f"/{database}").geturl()


async def _sql(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def app_database(local_stack: LocalStack) -> Iterator[str]:
    """A fresh database owned by the app role, whose role may set session_replication_role."""
    name = f"fm_test_{secrets.token_hex(4)}"
    admin = superuser_dsn(local_stack)
    asyncio.run(
        _sql(
            admin,
            f"GRANT SET ON PARAMETER session_replication_role TO {APP_USER}",
            f"CREATE DATABASE {name} OWNER {APP_USER}",
        )
    )
    try:
        yield name
    finally:
        asyncio.run(_sql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def with_store(dsn: str, use: Callable[[NotesStore], Awaitable[T]]) -> T:
    """Run `use` with a started store on `dsn`, closing it whatever happens."""

    async def run() -> T:
        store = NotesStore(DbSettings(dsn=dsn))
        await store.start()
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(run())


async def call(server: Any, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One tools/call in process; the structured content of a successful result."""
    result = await server.call_tool(tool, arguments)
    assert not result.is_error, result
    return dict(result.structured_content)


def mcp_server(store: NotesStore, faults: FaultSettings) -> Any:
    protection = Protection(ProtectionSettings(), tools=tool_names(faults), lane_timeout_s=5.0)
    return build_mcp_server(store, protection, faults)


async def rows(dsn: str) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        records = await conn.fetch("SELECT id, title, body, checksum, parent_id FROM notes")
    finally:
        await conn.close()
    return {r["id"]: r for r in records}


async def violations(dsn: str) -> dict[str, set[str]]:
    """Ids breaking each invariant."""
    conn = await asyncpg.connect(dsn)
    try:
        return {name: {r[0] for r in await conn.fetch(sql)} for name, sql in INVARIANTS.items()}
    finally:
        await conn.close()


def test_checksum_and_parent_are_stored_and_returned(
    local_stack: LocalStack, app_database: str
) -> None:
    dsn = app_dsn(local_stack, app_database)

    async def use(store: NotesStore) -> None:
        sum_a = checksum("a", "first")
        assert await store.create_note("a", "a", "first", sum_a) == {"id": "a", "created": True}
        created = await store.create_note("b", "b", "second", checksum("b", "second"), "a")
        assert created == {"id": "b", "created": True}
        retried = await store.create_note("b", "b", "second", checksum("b", "second"), "a")
        assert retried == {"id": "b", "created": False}
        note = await store.get_note("b")
        assert (note["checksum"], note["parent_id"]) == (checksum("b", "second"), "a")
        assert (await store.get_note("a"))["parent_id"] is None
        found = await store.search_notes("b", 10)
        assert [n["parent_id"] for n in found["notes"]] == ["a"]
        await store.create_note("plain", "plain", "no checksum")
        assert (await store.get_note("plain"))["checksum"] is None

    with_store(dsn, use)
    assert asyncio.run(violations(dsn)) == {
        "checksum": set(),
        "title_not_blank": set(),
        "parent_exists": set(),
    }


def test_unknown_parent_is_a_caller_error_and_writes_nothing(
    local_stack: LocalStack, app_database: str
) -> None:
    dsn = app_dsn(local_stack, app_database)

    async def use(store: NotesStore) -> None:
        with pytest.raises(NoteNotFound, match="parent note not found: 'missing'"):
            await store.create_note("orphan", "t", "b", None, "missing")
        with pytest.raises(NoteNotFound):
            await store.get_note("orphan")

    with_store(dsn, use)


def test_trigger_refuses_a_blank_title_and_a_malformed_checksum(
    local_stack: LocalStack, app_database: str
) -> None:
    dsn = app_dsn(local_stack, app_database)

    async def use(store: NotesStore) -> list[DatabaseError]:
        refused = []
        for title, note_checksum in (("   ", None), ("t", "NOT-A-SHA256"), ("t", "A" * 64)):
            with pytest.raises(DatabaseError) as caught:
                await store.create_note("bad", title, "body", note_checksum)
            refused.append(caught.value)
        return refused

    for error in with_store(dsn, use):
        assert getattr(error.__cause__, "sqlstate", None) == "23514"
        assert not is_infrastructure_failure(error)
    assert asyncio.run(rows(dsn)) == {}

    async def bypass_update() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO notes (id, title, body) VALUES ('ok', 't', 'b')")
            with pytest.raises(asyncpg.exceptions.CheckViolationError, match="blank"):
                await conn.execute("UPDATE notes SET title = '' WHERE id = 'ok'")
        finally:
            await conn.close()

    asyncio.run(bypass_update())


def test_an_older_table_is_migrated(local_stack: LocalStack, app_database: str) -> None:
    dsn = app_dsn(local_stack, app_database)
    asyncio.run(
        _sql(dsn, OLD_SCHEMA_SQL, "INSERT INTO notes (id, title, body) VALUES ('old', 't', 'b')")
    )

    async def use(store: NotesStore) -> None:
        old = await store.get_note("old")
        assert (old["checksum"], old["parent_id"]) == (None, None)
        await store.create_note("new", "t", "b", checksum("t", "b"), "old")
        with pytest.raises(DatabaseError):
            await store.create_note("blank", " ", "b")

    with_store(dsn, use)


def test_write_garbage_acknowledges_mangled_writes_and_adds_phantoms(
    local_stack: LocalStack, app_database: str
) -> None:
    dsn = app_dsn(local_stack, app_database)
    faults = FaultSettings(mode="write-garbage", phantom_every=3)
    written = {f"w{i}": (f"title {i}", f"body {i}") for i in range(7)}

    async def use(store: NotesStore) -> None:
        server = mcp_server(store, faults)
        for note_id, (title, body) in written.items():
            arguments = {"id": note_id, "title": title, "body": body}
            arguments["checksum"] = checksum(title, body)
            assert await call(server, "create_note", arguments) == {"id": note_id, "created": True}
        retry = {"id": "w0", "title": "title 0", "body": "body 0"}
        assert await call(server, "create_note", retry) == {"id": "w0", "created": False}

    with_store(dsn, use)
    stored = asyncio.run(rows(dsn))
    for note_id, (title, body) in written.items():
        row = stored[note_id]
        assert row["body"] == mangle_body(body)
        assert row["body"].endswith(GARBAGE_SUFFIX)
        assert row["checksum"] == checksum(title, body)
    phantoms = {note_id: row for note_id, row in stored.items() if note_id not in written}
    assert len(phantoms) == 2  # after the 3rd and the 6th created note; the retry created none
    for note_id, row in phantoms.items():
        assert note_id.startswith("garbage-") and len(note_id) == len("garbage-") + 16
        assert (row["checksum"], row["parent_id"]) == (None, None)
        assert row["title"].strip()
    found = asyncio.run(violations(dsn))
    assert found["checksum"] == set(written)
    assert found["title_not_blank"] == found["parent_exists"] == set()


def test_good_release_stores_what_the_client_wrote(
    local_stack: LocalStack, app_database: str
) -> None:
    dsn = app_dsn(local_stack, app_database)

    async def use(store: NotesStore) -> None:
        server = mcp_server(store, FaultSettings())
        for i in range(6):
            arguments = {"id": f"g{i}", "title": "t", "body": f"b{i}"}
            arguments["checksum"] = checksum("t", f"b{i}")
            await call(server, "create_note", arguments)
        with pytest.raises(ToolError, match="Unknown tool"):
            await server.call_tool("compact_notes", {})
        with pytest.raises(ToolError, match="parent note not found"):
            await server.call_tool(
                "create_note", {"id": "x", "title": "t", "body": "b", "parent_id": "nope"}
            )

    with_store(dsn, use)
    stored = asyncio.run(rows(dsn))
    assert sorted(stored) == [f"g{i}" for i in range(6)]
    assert all(stored[f"g{i}"]["body"] == f"b{i}" for i in range(6))


async def seed_notes(store: NotesStore, count: int) -> None:
    """`count` good notes, each after the first naming an earlier one as its parent, and a
    phantom (which compact_notes leaves alone)."""
    for i in range(count):
        title, body = f"title {i}", f"body {i}"
        parent = f"n{i // 2}" if i else None
        await store.create_note(f"n{i}", title, body, checksum(title, body), parent)
    await store.create_note("garbage-0123456789abcdef", "junk", "junk")


def test_compact_notes_damages_exactly_the_disjoint_sets_it_returns(
    local_stack: LocalStack, app_database: str
) -> None:
    dsn = app_dsn(local_stack, app_database)
    arguments = {
        "update_fraction": 0.05,
        "delete_fraction": 0.03,
        "invariant_fraction": 0.02,
        "seed": 11,
    }

    async def compact(store: NotesStore) -> dict[str, Any]:
        server = mcp_server(store, FaultSettings(mode="corrupt-state"))
        assert "compact_notes" in {tool.name for tool in await server.list_tools()}
        return await call(server, "compact_notes", arguments)

    async def seed_then_compact(store: NotesStore) -> dict[str, Any]:
        await seed_notes(store, 200)
        return await compact(store)

    before = {f"n{i}" for i in range(200)}
    result = with_store(dsn, seed_then_compact)
    updated, deleted = set(result["updated"]), set(result["deleted"])
    broken = set(result["invariant_broken"])
    assert result["rows_before"] == 201
    assert (len(updated), len(deleted), len(broken)) == (10, 6, 4)
    assert not (updated & deleted or updated & broken or deleted & broken)
    assert updated | deleted | broken <= before

    stored = asyncio.run(rows(dsn))
    assert set(stored) == (before - deleted) | {"garbage-0123456789abcdef"}
    for note_id in before - deleted:
        row = stored[note_id]
        i = int(note_id[1:])
        title, body = f"title {i}", f"body {i}"
        if note_id in updated:
            assert (row["title"], row["body"]) == (title, body + COMPACTED_SUFFIX)
            assert row["checksum"] == checksum(title, body)
        elif note_id in broken:
            assert (row["title"], row["body"]) == ("", body)  # past the trigger
            assert row["checksum"] == checksum("", body)
        else:
            assert (row["title"], row["body"], row["checksum"]) == (
                title,
                body,
                checksum(title, body),
            )

    found = asyncio.run(violations(dsn))
    assert found["checksum"] == updated
    assert found["title_not_blank"] == broken
    children = {note_id for note_id, row in stored.items() if row["parent_id"] in deleted}
    assert found["parent_exists"] == children

    assert with_store(dsn, compact)["rows_before"] == 201 - len(deleted)


def test_compact_notes_chooses_the_same_rows_for_the_same_seed(
    local_stack: LocalStack, app_database: str
) -> None:
    admin = superuser_dsn(local_stack)
    twin = f"{app_database}_twin"
    asyncio.run(_sql(admin, f"CREATE DATABASE {twin} OWNER {APP_USER}"))

    async def seed_then_compact(store: NotesStore) -> Any:
        await seed_notes(store, 50)
        return await store.compact_notes(0.1, 0.1, 0.1, 3)

    try:
        results = [
            with_store(app_dsn(local_stack, database), seed_then_compact)
            for database in (app_database, twin)
        ]
        assert results[0] == results[1]
        assert len(results[0]["updated"]) == 5
    finally:
        asyncio.run(_sql(admin, f"DROP DATABASE IF EXISTS {twin} WITH (FORCE)"))


def test_compact_notes_without_the_grant_fails_clearly_and_changes_nothing(
    local_stack: LocalStack, app_database: str
) -> None:
    role, password = f"fm_nogrant_{secrets.token_hex(4)}", secrets.token_hex(12)
    admin = superuser_dsn(local_stack)
    database = f"{app_database}_nogrant"
    asyncio.run(
        _sql(
            admin,
            f"CREATE ROLE {role} LOGIN PASSWORD '{password}'",
            f"CREATE DATABASE {database} OWNER {role}",
        )
    )
    primary = local_stack.clusters["primary"]
    dsn = primary.dsn(user=role, password=password, database=database)
    try:

        async def use(store: NotesStore) -> None:
            await seed_notes(store, 20)
            with pytest.raises(PermissionMissing, match=f"GRANT SET ON PARAMETER .* TO {role}"):
                await store.compact_notes(0.5, 0.2, 0.2, 0)

        with_store(dsn, use)
        stored = asyncio.run(rows(dsn))
        assert len(stored) == 21
        assert all(
            row["title"] and not row["body"].endswith(COMPACTED_SUFFIX) for row in stored.values()
        )
    finally:
        asyncio.run(
            _sql(
                admin,
                f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
                f"DROP ROLE IF EXISTS {role}",
            )
        )
