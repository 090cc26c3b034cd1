"""A tiny real MCP server backed by PostgreSQL: a key-value store the harness did not write.

It stands for "a user's own server" in integration tests: its tool has its own name and
argument shape (``put_item(key, payload)``), its table its own layout, and the harness
knows it only through the scenario's ``server.command``, ``ledger`` and ``integrity``.

Run it with ``python tests/integration/kv_mcp_server.py --port N`` (binds 127.0.0.1);
the database is ``$DATABASE_URL`` (a multi-host DSN with ``target_session_attrs`` works:
asyncpg picks the read-write host). The table ``items`` is created at first use.

``--garbage`` is the faulty release: it acknowledges every write as usual but stores
``payload[::-1] + "~garbage"`` instead of the payload.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import asyncpg
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

CONNECT_TIMEOUT_S = 3.0
ACQUIRE_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 5.0
POOL_MAX_SIZE = 10
GARBAGE_SUFFIX = "~garbage"

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS items (
    k text PRIMARY KEY,
    v text NOT NULL,
    written_at timestamptz DEFAULT now()
)
"""
INSERT = "INSERT INTO items (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING"

# WARNING: at INFO the SDK logs every new session, which slows a restarted server that
# many clients reconnect to at once.
server = MCPServer("kv-items", log_level="WARNING")


class Store:
    """A lazily created asyncpg pool on ``$DATABASE_URL``; the table made at first use."""

    def __init__(self, garbage: bool = False) -> None:
        self.garbage = garbage
        self.pool: asyncpg.Pool | None = None
        self.table_ready = False
        self.lock = asyncio.Lock()

    async def _pool(self) -> asyncpg.Pool:
        if self.pool is not None and self.table_ready:
            return self.pool
        async with self.lock:
            if self.pool is None:
                dsn = os.environ.get("DATABASE_URL")
                if not dsn:
                    raise ToolError("DATABASE_URL is not set")
                self.pool = await asyncpg.create_pool(
                    dsn,
                    min_size=0,
                    max_size=POOL_MAX_SIZE,
                    timeout=CONNECT_TIMEOUT_S,
                    command_timeout=COMMAND_TIMEOUT_S,
                )
            if not self.table_ready:
                async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('kv_items'))")
                        await conn.execute(CREATE_TABLE)
                self.table_ready = True
            return self.pool

    async def put(self, key: str, payload: str) -> bool:
        """Store ``payload`` under ``key`` unless the key exists; True when it was new."""
        stored = payload[::-1] + GARBAGE_SUFFIX if self.garbage else payload
        try:
            pool = await self._pool()
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                status = await conn.execute(INSERT, key, stored)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise ToolError(f"database error: {type(exc).__name__}: {exc}") from None
        return status == "INSERT 0 1"

    async def close(self) -> None:
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 3.0)


store = Store()


@server.tool()
async def put_item(key: str, payload: str) -> str:
    """Store ``payload`` under ``key``; a key already present is left as it is."""
    return "stored" if await store.put(key, payload) else "exists"


@server.custom_route("/healthz", methods=["GET"])
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "garbage": store.garbage})


app = server.streamable_http_app()
_sdk_lifespan = app.router.lifespan_context


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    try:
        async with _sdk_lifespan(app):
            yield
    finally:
        await store.close()


app.router.lifespan_context = _lifespan


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--garbage", action="store_true", help="the faulty release: store mangled payloads"
    )
    args = parser.parse_args()
    store.garbage = args.garbage
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
