"""The skeleton every gallery server shares: the notes table, the two tools, /healthz, startup.

``Notes`` keeps notes in PostgreSQL behind a lazily created asyncpg pool on
``$DATABASE_URL`` (a multi-host DSN with ``target_session_attrs=read-write`` works: asyncpg
tries the hosts in order and keeps the read-write one), creating the table at first use.
Every wait is bounded and every database failure is a ``DatabaseFailure``, which the tools
report as an MCP tool error (``isError``), as a careful server does. ``build`` registers
``create_note(id, title, body, checksum, parent_id)`` and ``get_note(id)`` on an SDK
server, the shapes the harness's ledger defaults call, plus ``/healthz``; ``serve`` parses
``--port`` and runs the app with uvicorn on 127.0.0.1.

A member changes one thing: a ``Notes`` subclass (how notes are stored), an SDK server
subclass (what tools/list does) or an ASGI wrapper around the app (``serve(wrap=...)``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import astuple, dataclass
from typing import Any, TypeVar

import asyncpg
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

T = TypeVar("T")

CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 5.0
ACQUIRE_TIMEOUT_S = 5.0
POOL_MAX_SIZE = 10
SCHEMA_LOCK_KEY = 0x67616C6C657279
"""Advisory lock around CREATE TABLE IF NOT EXISTS (concurrent ones can collide)."""

INSERT_SQL = (
    "INSERT INTO notes (id, title, body, checksum, parent_id) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (id) DO NOTHING"
)
SELECT_SQL = "SELECT id, title, body, created_at, checksum, parent_id FROM notes WHERE id = $1"
DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. no read-write host yet, a connection in a bad state
    OSError,
    TimeoutError,
)

log = logging.getLogger("gallery")


def schema_sql(primary_key: bool = True) -> str:
    """The notes table of the reference server (without its trigger)."""
    key = " PRIMARY KEY" if primary_key else ""
    return f"""
CREATE TABLE IF NOT EXISTS notes (
    id text NOT NULL{key},
    title text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    checksum text,
    parent_id text
)"""


def database_url() -> str:
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        sys.exit("DATABASE_URL is not set")
    return dsn


class DatabaseFailure(Exception):
    """The database could not be reached in time, or refused the statement."""


@dataclass(frozen=True)
class Note:
    """One create_note call's arguments."""

    id: str
    title: str
    body: str
    checksum: str | None = None
    parent_id: str | None = None

    def row(self) -> tuple[Any, ...]:
        """The INSERT_SQL arguments, in order."""
        return astuple(self)


def note_of(row: Any) -> dict[str, Any]:
    """A notes row as get_note returns it."""
    note = dict(row)
    note["created_at"] = note["created_at"].isoformat()
    return note


class Notes:
    """The notes table behind one asyncpg pool, created at first use (no database needed to
    start). ``primary_key`` and ``insert_sql`` say how the table is keyed and written."""

    primary_key = True
    insert_sql = INSERT_SQL

    def __init__(self, dsn: str | None = None, pool_max_size: int = POOL_MAX_SIZE) -> None:
        self.dsn = dsn or database_url()
        self.pool_max_size = pool_max_size
        self._pool: asyncpg.Pool | None = None
        self._table_ready = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Run when the server starts; nothing here: the pool connects at first use."""

    async def close(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 3.0)

    async def create_table(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
            await conn.execute(schema_sql(self.primary_key))

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None and self._table_ready:
            return self._pool
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=0,
                    max_size=self.pool_max_size,
                    timeout=CONNECT_TIMEOUT_S,
                    command_timeout=COMMAND_TIMEOUT_S,
                )
            if not self._table_ready:
                async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                    await self.create_table(conn)
                self._table_ready = True
        return self._pool

    async def run(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``op`` on a pooled connection; every database failure a ``DatabaseFailure``."""
        try:
            pool = await self.pool()
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                return await op(conn)
        except DB_ERRORS as exc:
            raise DatabaseFailure(f"database error: {type(exc).__name__}: {exc}") from exc

    async def insert(self, note: Note) -> bool:
        """Store ``note``; True when a row was added."""
        status = await self.run(lambda conn: conn.execute(self.insert_sql, *note.row()))
        return status == "INSERT 0 1"

    async def fetch(self, note_id: str) -> dict[str, Any] | None:
        row = await self.run(lambda conn: conn.fetchrow(SELECT_SQL, note_id))
        return None if row is None else note_of(row)

    async def create_note(self, note: Note) -> dict[str, Any]:
        """What the create_note tool returns."""
        return {"id": note.id, "created": await self.insert(note)}

    async def get_note(self, note_id: str) -> dict[str, Any]:
        """What the get_note tool returns."""
        note = await self.fetch(note_id)
        if note is None:
            raise ToolError(f"note not found: {note_id!r}")
        return note


def build(notes: Notes, server: MCPServer | str) -> MCPServer:
    """``server`` (or a new SDK server of that name) with the notes tools and /healthz."""
    if isinstance(server, str):
        # At INFO the SDK logs every new session, which slows a reconnect storm down.
        server = MCPServer(server, log_level="WARNING")
    name = server.name

    @server.tool()
    async def create_note(
        id: str,
        title: str,
        body: str,
        checksum: str | None = None,
        parent_id: str | None = None,
    ) -> dict[str, Any]:
        """Store a note under a client-chosen id; an id already stored is left as it is."""
        try:
            return await notes.create_note(Note(id, title, body, checksum, parent_id))
        except DatabaseFailure as exc:
            raise ToolError(str(exc)) from None

    @server.tool()
    async def get_note(id: str) -> dict[str, Any]:
        """One note by id."""
        try:
            return await notes.get_note(id)
        except DatabaseFailure as exc:
            raise ToolError(str(exc)) from None

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "server": name})

    return server


def serve(
    server: MCPServer,
    notes: Notes,
    *,
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Parse ``--port``, then serve ``server`` (JSON replies) on 127.0.0.1 until stopped;
    ``notes`` is started with the app and closed with it."""
    parser = argparse.ArgumentParser(description=server.name)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # One line per message on stderr (the SDK's handler on the root logger wraps lines).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False
    app = server.streamable_http_app(json_response=True)
    sdk_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await notes.start()
        try:
            async with sdk_lifespan(app):
                yield
        finally:
            await notes.close()

    app.router.lifespan_context = lifespan
    uvicorn.run(
        app if wrap is None else wrap(app),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
