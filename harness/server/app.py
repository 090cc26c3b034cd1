"""Assembly of the reference server: MCP tools over the notes store, health and metrics.

The SDK builds the Starlette app (streamable HTTP, sessions, both protocol
eras); this module adds what a production server would: one process-wide
database pool opened in the app's lifespan (MCPServer's own `lifespan=` is not
the place: it belongs to the MCP layer, not the process), /healthz, /metrics,
a middleware on the SDK's request chain that counts every JSON-RPC request
of both the session and the sessionless path, and the protection against
reconnection storms (`shield.py`; all off unless configured).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.types import ToolAnnotations
from mcp.types.methods import SPEC_CLIENT_METHODS
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harness.server.metrics import CONTENT_TYPE, Metrics, result_is_error, tool_name_of
from harness.server.notes import (
    CreateResult,
    DbSettings,
    Note,
    NotesStore,
    Report,
    SearchResult,
)
from harness.server.protection import ProtectionSettings
from harness.server.shield import AdmissionMiddleware, Protection, refusal_text_middleware

SERVER_NAME = "mcp-harness-notes"
SERVER_VERSION = "0.1.0"
TOOL_NAMES = ("create_note", "get_note", "search_notes", "notes_report")

NoteId = Annotated[str, Field(min_length=1, max_length=200, description="Client-chosen unique id")]
Title = Annotated[str, Field(min_length=1, max_length=500)]
Body = Annotated[str, Field(max_length=100_000)]
Query = Annotated[str, Field(max_length=500, description="Substring of the title, any case")]
Limit = Annotated[int, Field(ge=1, description="Maximum notes returned; capped at 100")]


@dataclass(frozen=True)
class ServerConfig:
    """Everything the app needs; the CLI fills it in."""

    db: DbSettings
    path: str = "/mcp"
    json_response: bool = False
    stateless: bool = False
    session_idle_timeout_s: float | None = 1800.0
    max_sessions: int | None = 10_000
    host: str = "127.0.0.1"
    protection: ProtectionSettings = field(default_factory=ProtectionSettings)


def build_mcp_server(store: NotesStore, protection: Protection) -> MCPServer[Any]:
    """The MCP server and its four tools; tools/list is served from memory.

    Every tool runs through `protection.call_tool`, which also turns a
    database failure into a tool error; tools/list never does.
    """
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        version=SERVER_VERSION,
        instructions="A notes service: create, fetch and search short notes.",
        log_level="WARNING",
    )

    async def create_note(id: NoteId, title: Title, body: Body) -> CreateResult:
        """Create a note with a client-chosen id; an existing id is left unchanged.

        Returns {"id", "created"}: created is false when the id already existed,
        so a retried write is harmless and every write can be counted.
        """
        return await protection.call_tool("create_note", lambda: store.create_note(id, title, body))

    async def get_note(id: NoteId) -> Note:
        """Fetch one note by id; an unknown id is a tool error."""
        return await protection.call_tool("get_note", lambda: store.get_note(id))

    async def search_notes(query: Query, limit: Limit = 10) -> SearchResult:
        """Notes whose title contains the query (case-insensitive), newest first."""
        return await protection.call_tool("search_notes", lambda: store.search_notes(query, limit))

    async def notes_report() -> Report:
        """Totals and a digest over all notes.

        Deliberately expensive: it holds a database connection for at least
        50 ms and scans, sorts and hashes the whole table, so a load test can
        put the database (and the pool) under pressure with one tool.
        """
        return await protection.call_tool("notes_report", store.notes_report)

    read_only = ToolAnnotations(read_only_hint=True)
    tools: list[tuple[Callable[..., Any], ToolAnnotations]] = [
        (create_note, ToolAnnotations(idempotent_hint=True, destructive_hint=False)),
        (get_note, read_only),
        (search_notes, read_only),
        (notes_report, read_only),
    ]
    for fn, hints in tools:
        server.add_tool(fn, description=inspect.cleandoc(fn.__doc__ or ""), annotations=hints)
    assert tuple(fn.__name__ for fn, _ in tools) == TOOL_NAMES
    return server


def metrics_middleware(metrics: Metrics) -> ServerMiddleware[Any]:
    """SDK server middleware: one observation per JSON-RPC request (notifications skipped)."""

    async def observe(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:
            return await call_next(ctx)
        tool = tool_name_of(ctx.method, ctx.params)
        start = time.perf_counter()
        error = True
        try:
            result = await call_next(ctx)
            error = result_is_error(result)
            return result
        finally:
            metrics.observe(ctx.method, tool, time.perf_counter() - start, error=error)

    return observe


class HTTPStatusCounter:
    """ASGI middleware counting response statuses of the MCP endpoint.

    Refusals such as 404 (unknown session), 503 (too many sessions) or 421/400
    are answered before any JSON-RPC handling, so only this layer sees them.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, path: str) -> None:
        self._app = app
        self._metrics = metrics
        self._path = path.rstrip("/") or "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"].rstrip("/") or "/") != self._path:
            await self._app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._metrics.observe_http_status(int(message["status"]))
            await send(message)

        await self._app(scope, receive, counting_send)


def sessions_open_reader(server: MCPServer[Any], stateless: bool) -> Callable[[], float | None]:
    """Open sessions, read from the SDK session manager's table of live transports.

    `_server_instances` is private, but it is the table the SDK itself checks
    against max_sessions: a session enters it when admitted and leaves on
    DELETE, idle expiry, crash or a failed initialize. If a future SDK renames
    it the gauge is left out rather than wrong.
    """

    def read() -> float | None:
        if stateless:
            return 0.0
        instances = getattr(server.session_manager, "_server_instances", None)
        return float(len(instances)) if isinstance(instances, dict) else None

    return read


def build_app(config: ServerConfig) -> Starlette:
    """The ASGI app uvicorn serves."""
    store = NotesStore(config.db)
    protection = Protection(
        config.protection, tools=TOOL_NAMES, lane_timeout_s=config.db.acquire_timeout_s
    )
    server = build_mcp_server(store, protection)
    metrics = Metrics(methods=SPEC_CLIENT_METHODS, tools=TOOL_NAMES)
    protection.register_metrics(metrics)
    server.middleware.append(metrics_middleware(metrics))
    server.middleware.append(refusal_text_middleware())
    metrics.add_gauge(
        "mcp_sessions_open",
        "Stateful MCP sessions currently open (2025-11-25 and earlier handshakes).",
        sessions_open_reader(server, config.stateless),
    )
    metrics.add_gauge(
        "mcp_db_pool_waiting",
        "Tool calls waiting for a pooled database connection right now.",
        lambda: float(store.pool_waiting),
    )
    metrics.add_gauge(
        "mcp_db_pool_wait_seconds_total",
        "Time tool calls spent waiting for a pooled database connection.",
        lambda: store.pool_wait_s_total,
    )
    metrics.add_gauge(
        "mcp_db_up",
        "1 when the last database operation succeeded, 0 when it failed, absent before any.",
        lambda: {"ok": 1.0, "unreachable": 0.0}.get(store.state),
    )

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "db": store.state})

    @server.custom_route("/metrics", methods=["GET"])
    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    app = server.streamable_http_app(
        streamable_http_path=config.path,
        json_response=config.json_response,
        stateless_http=config.stateless,
        session_idle_timeout=config.session_idle_timeout_s,
        max_sessions=config.max_sessions,
        host=config.host,
    )
    sdk_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.start()
        try:
            async with sdk_lifespan(app):
                yield
        finally:
            await store.close()

    app.router.lifespan_context = lifespan
    if config.protection.watches_sessions:
        # Added first, so it sits inside the status counter: its 503s are counted too.
        app.add_middleware(AdmissionMiddleware, protection=protection, path=config.path)
    app.add_middleware(HTTPStatusCounter, metrics=metrics, path=config.path)
    app.state.store = store
    app.state.metrics = metrics
    app.state.protection = protection
    return app
