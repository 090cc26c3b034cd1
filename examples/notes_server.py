"""A small notes service over MCP, written the way a team typically writes one.

This is the kind of server people ship after reading the MCP Python SDK's
README: `MCPServer`, a lifespan that opens one asyncpg pool, a few tools, and
`server.run(transport="streamable-http")`. Nothing in it is broken on purpose,
and nothing in it is hardened either: SDK defaults throughout (stateful
sessions, SSE-framed replies, INFO logging with uvicorn's access log), asyncpg's
default pool (10 connections, no command timeout), no admission control, no
circuit breakers.

It has the same tools as the harness's reference server, so the shipped
scenarios' tool mix and the default write ledger work on it unchanged:

    create_note(id, title, body, checksum=None, parent_id=None)
    get_note(id)
    search_notes(query, limit=10)
    notes_report()

Run it:

    DATABASE_URL=postgresql://user:pass@127.0.0.1:5432/app python examples/notes_server.py --port 8000

and point the harness at it (see examples/README.md):

    mcp-harness run scenarios/reconnect_storm.yaml \\
        --set 'server.command=[python, examples/notes_server.py, --port, "{port}"]'
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.responses import JSONResponse

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id text PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    checksum text,
    parent_id text,
    created_at timestamptz DEFAULT now()
)
"""


@dataclass
class AppContext:
    pool: asyncpg.Pool


@asynccontextmanager
async def lifespan(server: MCPServer) -> AsyncIterator[AppContext]:
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"])
    try:
        await pool.execute(SCHEMA)
        yield AppContext(pool=pool)
    finally:
        await pool.close()


mcp = MCPServer("notes", lifespan=lifespan)
Ctx = Context[AppContext, Any]


def get_pool(ctx: Ctx) -> asyncpg.Pool:
    return ctx.request_context.lifespan_context.pool


def note_to_dict(row: asyncpg.Record) -> dict[str, Any]:
    note = dict(row)
    note["created_at"] = note["created_at"].isoformat()
    return note


@mcp.tool()
async def create_note(
    id: str,
    title: str,
    body: str,
    ctx: Ctx,
    checksum: str | None = None,
    parent_id: str | None = None,
) -> dict[str, Any]:
    """Create a note. Creating an id that already exists changes nothing."""
    pool = get_pool(ctx)
    inserted = await pool.fetchval(
        "INSERT INTO notes (id, title, body, checksum, parent_id) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        id,
        title,
        body,
        checksum,
        parent_id,
    )
    return {"id": id, "created": inserted is not None}


@mcp.tool()
async def get_note(id: str, ctx: Ctx) -> dict[str, Any]:
    """Fetch one note by id."""
    row = await get_pool(ctx).fetchrow(
        "SELECT id, title, body, checksum, parent_id, created_at FROM notes WHERE id = $1", id
    )
    if row is None:
        raise ToolError(f"note not found: {id}")
    return note_to_dict(row)


@mcp.tool()
async def search_notes(query: str, ctx: Ctx, limit: int = 10) -> list[dict[str, Any]]:
    """Notes whose title contains the query (any case), newest first."""
    rows = await get_pool(ctx).fetch(
        "SELECT id, title, body, checksum, parent_id, created_at FROM notes "
        "WHERE title ILIKE '%' || $1 || '%' ORDER BY created_at DESC LIMIT $2",
        query,
        min(limit, 100),
    )
    return [note_to_dict(row) for row in rows]


@mcp.tool()
async def notes_report(ctx: Ctx) -> dict[str, Any]:
    """How many notes there are, how big they are, and the newest one's time."""
    row = await get_pool(ctx).fetchrow(
        "SELECT count(*) AS notes, coalesce(sum(octet_length(body)), 0) AS body_bytes, "
        "count(DISTINCT title) AS distinct_titles, max(created_at) AS newest FROM notes"
    )
    report = dict(row)
    report["newest"] = report["newest"].isoformat() if report["newest"] else None
    return report


@mcp.custom_route("/healthz", methods=["GET"])
async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    mcp.run(transport="streamable-http", host=args.host, port=args.port)
