"""Assembly of the reference server: MCP tools over the notes store, health and metrics.

The SDK builds the Starlette app (streamable HTTP, sessions, both protocol
eras); this module adds what a production server would: one process-wide
database pool opened in the app's lifespan (MCPServer's own `lifespan=` is not
the place: it belongs to the MCP layer, not the process), /healthz, /metrics,
a middleware on the SDK's request chain that counts every JSON-RPC request
of both the session and the sessionless path, the protection against
reconnection storms (`shield.py`; all off unless configured), and the admin
endpoint that changes that protection and the pool at runtime (`admin.py`;
off unless a token is configured).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
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

from harness.server.admin import ADMIN_PREFIX, AdminApi
from harness.server.faults import FaultSettings, PhantomSchedule, mangle_body, phantom_note
from harness.server.metrics import CONTENT_TYPE, Metrics, result_is_error, tool_name_of
from harness.server.notes import (
    CompactResult,
    CreateResult,
    DbSettings,
    Note,
    NotesError,
    NotesStore,
    Report,
    SearchResult,
)
from harness.server.protection import ProtectionSettings
from harness.server.shield import AdmissionMiddleware, Protection, refusal_text_middleware

SERVER_NAME = "mcp-harness-notes"
SERVER_VERSION = "0.1.0"
TOOL_NAMES = ("create_note", "get_note", "search_notes", "notes_report")
CORRUPT_STATE_TOOL_NAMES = (*TOOL_NAMES, "compact_notes")

logger = logging.getLogger(__name__)

NoteId = Annotated[str, Field(min_length=1, max_length=200, description="Client-chosen unique id")]
Title = Annotated[str, Field(min_length=1, max_length=500)]
Body = Annotated[str, Field(max_length=100_000)]
Query = Annotated[str, Field(max_length=500, description="Substring of the title, any case")]
Limit = Annotated[int, Field(ge=1, description="Maximum notes returned; capped at 100")]
Checksum = Annotated[
    str | None,
    Field(
        pattern="^[0-9a-f]{64}$",
        description="sha256 hex of title + '\\n' + body, computed by the client; stored as sent",
    ),
]
ParentId = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        description="Id of an earlier note this one refers to; it must exist",
    ),
]
DamageFraction = Annotated[float, Field(ge=0, le=1)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1, description="Same seed, same rows")]


def tool_names(faults: FaultSettings) -> tuple[str, ...]:
    """The tools this release lists: compact_notes exists only in corrupt-state."""
    return CORRUPT_STATE_TOOL_NAMES if faults.mode == "corrupt-state" else TOOL_NAMES


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
    faults: FaultSettings = field(default_factory=FaultSettings)
    admin_token: str | None = field(default=None, repr=False)
    """Turns the admin endpoint on (`admin.py`); never shown in a repr."""


class GarbageWriter:
    """create_note as the write-garbage release does it: a mangled body, now and then a phantom.

    The client's checksum is stored as sent and the call answers as usual, so
    the write is acknowledged while the row no longer matches it.
    """

    def __init__(self, store: NotesStore, phantom_every: int) -> None:
        self._store = store
        self._phantoms = PhantomSchedule(phantom_every)

    async def create_note(
        self, note_id: str, title: str, body: str, checksum: str | None, parent_id: str | None
    ) -> CreateResult:
        """The normal answer for a row that is not what the client wrote; a phantom may follow."""
        result = await self._store.create_note(
            note_id, title, mangle_body(body), checksum, parent_id
        )
        if result["created"] and self._phantoms.note_created():
            phantom = phantom_note()
            try:
                await self._store.create_note(phantom.id, phantom.title, phantom.body)
            except NotesError as exc:
                logger.warning("write-garbage: phantom %s not written: %s", phantom.id, exc)
        return result


def build_mcp_server(
    store: NotesStore, protection: Protection, faults: FaultSettings | None = None
) -> MCPServer[Any]:
    """The MCP server and its tools; tools/list is served from memory.

    Every tool runs through `protection.call_tool`, which also turns a
    database failure into a tool error; tools/list never does. `faults`
    makes it a faulty release (`faults.py`).
    """
    faults = faults or FaultSettings()
    garbage = GarbageWriter(store, faults.phantom_every) if faults.mode == "write-garbage" else None
    write_note = store.create_note if garbage is None else garbage.create_note
    server: MCPServer[Any] = MCPServer(
        SERVER_NAME,
        version=SERVER_VERSION,
        instructions="A notes service: create, fetch and search short notes.",
        log_level="WARNING",
    )

    async def create_note(
        id: NoteId,
        title: Title,
        body: Body,
        checksum: Checksum = None,
        parent_id: ParentId = None,
    ) -> CreateResult:
        """Create a note with a client-chosen id; an existing id is left unchanged.

        Returns {"id", "created"}: created is false when the id already existed,
        so a retried write is harmless and every write can be counted. A
        parent_id that names no existing note is a tool error.
        """
        return await protection.call_tool(
            "create_note", lambda: write_note(id, title, body, checksum, parent_id)
        )

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

    async def compact_notes(
        update_fraction: DamageFraction = 0.02,
        delete_fraction: DamageFraction = 0.01,
        invariant_fraction: DamageFraction = 0.01,
        seed: Seed = 0,
    ) -> CompactResult:
        """Compact the notes table: the maintenance tool of a deliberately faulty release.

        It damages data on purpose (fault mode corrupt-state): in one
        transaction it rewrites the body of update_fraction of the notes,
        deletes delete_fraction and blanks the title of invariant_fraction,
        chosen by seed. Returns the ids changed each way and the row count
        before it ran.
        """
        return await protection.call_tool(
            "compact_notes",
            lambda: store.compact_notes(update_fraction, delete_fraction, invariant_fraction, seed),
        )

    read_only = ToolAnnotations(read_only_hint=True)
    tools: list[tuple[Callable[..., Any], ToolAnnotations]] = [
        (create_note, ToolAnnotations(idempotent_hint=True, destructive_hint=False)),
        (get_note, read_only),
        (search_notes, read_only),
        (notes_report, read_only),
    ]
    if faults.mode == "corrupt-state":
        tools.append((compact_notes, ToolAnnotations(destructive_hint=True, idempotent_hint=False)))
    for fn, hints in tools:
        server.add_tool(fn, description=inspect.cleandoc(fn.__doc__ or ""), annotations=hints)
    assert tuple(fn.__name__ for fn, _ in tools) == tool_names(faults)
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
    tools = tool_names(config.faults)
    protection = Protection(
        config.protection, tools=tools, lane_timeout_s=config.db.acquire_timeout_s
    )
    server = build_mcp_server(store, protection, config.faults)
    metrics = Metrics(methods=SPEC_CLIENT_METHODS, tools=tools)
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
    fault_mode = config.faults.mode
    metrics.add_family(
        "mcp_fault_mode",
        "gauge",
        "The faulty release this process runs as (none: the good release).",
        lambda: [("", {"mode": fault_mode}, 1)],
    )

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "db": store.state, "fault_mode": fault_mode})

    @server.custom_route("/metrics", methods=["GET"])
    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    if config.admin_token:
        admin = AdminApi(
            token=config.admin_token, protection=protection, store=store, fault_mode=fault_mode
        )
        server.custom_route(admin.route_path, methods=["GET", "POST"], include_in_schema=False)(
            admin.handle
        )

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
        if fault_mode != "none":
            logger.warning(
                "fault mode %s: this server is a deliberately faulty release that damages data",
                fault_mode,
            )
        if config.admin_token:
            logger.info("admin endpoint on at %s/ (loopback clients with the token)", ADMIN_PREFIX)
        await store.start()
        try:
            async with sdk_lifespan(app):
                yield
        finally:
            await store.close()

    app.router.lifespan_context = lifespan
    # Always there (it passes requests on while admission is off: the admin endpoint can turn
    # it on); added first, so it sits inside the status counter: its 503s are counted too.
    app.add_middleware(AdmissionMiddleware, protection=protection, path=config.path)
    app.add_middleware(HTTPStatusCounter, metrics=metrics, path=config.path)
    app.state.store = store
    app.state.metrics = metrics
    app.state.protection = protection
    return app
