"""The server's protection in place: session admission in front of the SDK, a guard on tools.

`protection.py` decides; this module applies its decisions to HTTP requests
and tool calls, and exposes their counts to /metrics. Everything runs on the
server's one event loop, so the shared state needs no locks.

- `AdmissionMiddleware` (ASGI) sees each new session before the SDK spends
  anything on it: an initialize without a session id, or, in the sessionless
  2026-07-28 revision, the first request of a new TCP connection. It admits
  it, makes it wait its turn, or answers 503 with Retry-After at once.
- `Protection.call_tool` wraps every tool: it defers expensive tools during a
  storm, fails fast while a tool's circuit breaker is open, and runs the call
  in a bounded lane. tools/list never passes here: it is answered from memory
  and queues behind no tool call.
- `refusal_text_middleware` gives those refusals their own words on the wire.

The admin endpoint (`admin.py`) changes admission and breakers while the
server runs: `Protection.set_admission` and `Protection.set_breaker` act
between two requests, and every reader looks the state up anew each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harness.server.metrics import Histogram, Metrics, Sample
from harness.server.notes import NotesError, is_infrastructure_failure
from harness.server.protection import (
    AdmissionControl,
    BreakerState,
    CircuitBreaker,
    Clock,
    ConnectionTracker,
    ProtectionSettings,
    Shed,
    StormDetector,
)

T = TypeVar("T")

EXPENSIVE_TOOLS = frozenset({"notes_report"})
"""Tools deferred during a storm: they hold a database connection for long."""

DEFERRED_TEXT = "retryable: deferred during reconnection storm"
CIRCUIT_OPEN_TEXT = "circuit open"
BUSY_TEXT = "retryable: server busy"
REFUSAL_PREFIXES = ("retryable: ", f"{CIRCUIT_OPEN_TEXT}: ")
"""How every refusal by the protections begins; a database failure never does."""

OVERLOADED = -32000
"""JSON-RPC code of a refused new session (the implementation-defined server-error range)."""

MAX_SNIFF_BYTES = 64 * 1024
"""Body bytes read to find an initialize. Initialize requests are a few hundred
bytes; a longer body is not taken for one, and the rest of it streams on to the
SDK unread, so the SDK's own body limit (it runs after this) still applies."""

NewWhat = Literal["sessions", "connections"]

BreakerMode = Literal["auto", "open", "closed"]
"""How a tool's circuit is run: by its automatic breaker (if breakers are on), or held
open (every call fails fast) or closed (every call goes through) by an operator."""
BREAKER_MODES: tuple[BreakerMode, ...] = ("auto", "open", "closed")
HELD_OPEN_TEXT = "held open by an operator"


class Protection:
    """Protection state of one server process, shared by the middleware and the tool guard."""

    def __init__(
        self,
        settings: ProtectionSettings,
        *,
        tools: Iterable[str],
        lane_timeout_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self.tools = tuple(tools)
        self._clock = clock
        self.admission = (
            AdmissionControl(
                settings.admission_rate,
                settings.admission_burst,
                settings.admission_queue,
                settings.admission_max_wait_s,
                clock=clock,
            )
            if settings.admission_on
            else None
        )
        self.storm = (
            StormDetector(settings.storm_threshold, clock=clock)
            if settings.watches_sessions
            else None
        )
        self.connections = ConnectionTracker(settings.keep_alive_s, clock=clock)
        self.breakers = (
            {
                tool: CircuitBreaker(
                    settings.breaker_error_rate,
                    settings.breaker_window_s,
                    settings.breaker_min_calls,
                    settings.breaker_cooldown_s,
                    clock=clock,
                )
                for tool in self.tools
            }
            if settings.breakers_on
            else {}
        )
        self._lane = (
            asyncio.Semaphore(settings.tool_concurrency) if settings.tool_concurrency else None
        )
        self._lane_timeout_s = lane_timeout_s
        self.admitted = 0
        self.shed = 0
        self.wait_seconds = Histogram()
        self.deferred = dict.fromkeys(sorted(EXPENSIVE_TOOLS), 0)
        self.held: dict[str, BreakerState] = {}
        """Tools whose circuit an operator holds open or closed, over their automatic breaker."""
        self.held_rejected = dict.fromkeys(self.tools, 0)
        self._metrics: Metrics | None = None

    def set_admission(self, rate: float, burst: int, queue: int, max_wait_s: float) -> None:
        """Admission at `rate` new sessions per second from now on (0 turns it off).

        Validated as the flags are (ValueError). Turning it on starts a full
        bucket; changing it keeps the bucket's level and the waiters' turns;
        turning it off lets the waiters already queued go at their turn.
        """
        settings = dataclasses.replace(
            self.settings,
            admission_rate=rate,
            admission_burst=burst,
            admission_queue=queue,
            admission_max_wait_s=max_wait_s,
        )
        if not settings.admission_on:
            self.admission = None
        elif self.admission is None:
            self.admission = AdmissionControl(rate, burst, queue, max_wait_s, clock=self._clock)
        else:
            self.admission.reconfigure(rate, burst, queue, max_wait_s)
        if settings.watches_sessions and self.storm is None:
            self.storm = StormDetector(settings.storm_threshold, clock=self._clock)
        self.settings = settings
        self._register_families()

    def set_breaker(self, tool: str, mode: BreakerMode) -> None:
        """Hold a tool's circuit open or closed, or give it back to its automatic breaker.

        Back to auto, the automatic breaker starts closed with an empty window:
        the operator's word is that the cause is dealt with. A tool without an
        automatic breaker (breakers off) is then simply never refused.
        """
        if tool not in self.tools:
            raise KeyError(tool)
        if mode == "auto":
            self.held.pop(tool, None)
            breaker = self.breakers.get(tool)
            if breaker is not None:
                breaker.reset()
        elif mode in ("open", "closed"):
            self.held[tool] = BreakerState.OPEN if mode == "open" else BreakerState.CLOSED
        else:
            raise ValueError(f"unknown breaker mode {mode!r}; one of {', '.join(BREAKER_MODES)}")
        self._register_families()

    def breaker_mode(self, tool: str) -> BreakerMode:
        held = self.held.get(tool)
        if held is None:
            return "auto"
        return "open" if held is BreakerState.OPEN else "closed"

    def breaker_state(self, tool: str) -> BreakerState:
        """The state calls of this tool meet now: held, automatic, or closed when neither."""
        held = self.held.get(tool)
        if held is not None:
            return held
        breaker = self.breakers.get(tool)
        return BreakerState.CLOSED if breaker is None else breaker.state

    def breaker_rejected(self, tool: str) -> int:
        breaker = self.breakers.get(tool)
        return self.held_rejected.get(tool, 0) + (0 if breaker is None else breaker.rejected)

    def queue_depth(self) -> int:
        return 0 if self.admission is None else self.admission.queue_depth()

    def storm_active(self) -> bool:
        return self.storm is not None and self.storm.active(self.queue_depth())

    async def admit(self) -> Shed | None:
        """Count one new session or connection and hold it until its turn; a Shed refuses it."""
        if self.storm is not None:
            self.storm.record()
        if self.admission is None:
            return None
        decision = self.admission.request()
        if isinstance(decision, Shed):
            self.shed += 1
            return decision
        start = self._clock()
        if decision.wait_s > 0:
            await asyncio.sleep(decision.wait_s)
        self.admitted += 1
        self.wait_seconds.observe(self._clock() - start)
        return None

    async def call_tool(self, tool: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one tool call under the protections; every refusal is a tool error (isError)."""
        if self.settings.defer_expensive and tool in EXPENSIVE_TOOLS and self.storm_active():
            self.deferred[tool] += 1
            raise ToolError(f"{DEFERRED_TEXT}; retry in a few seconds")
        held = self.held.get(tool)
        if held is BreakerState.OPEN:
            self.held_rejected[tool] += 1
            raise ToolError(f"{CIRCUIT_OPEN_TEXT}: {tool} is {HELD_OPEN_TEXT}; retry later")
        breaker = self.breakers.get(tool) if held is None else None
        permit = breaker.acquire() if breaker is not None else None
        if breaker is not None and permit is None:
            retry = max(1, math.ceil(breaker.retry_after_s()))
            raise ToolError(
                f"{CIRCUIT_OPEN_TEXT}: {tool} keeps failing on the database; retry in {retry} s"
            )
        infrastructure_failed: bool | None = None
        try:
            async with self._in_lane():
                try:
                    result = await op()
                except NotesError as exc:
                    infrastructure_failed = is_infrastructure_failure(exc)
                    raise ToolError(str(exc)) from exc
                infrastructure_failed = False
                return result
        finally:
            if breaker is not None and permit is not None:
                if infrastructure_failed is None:
                    breaker.release(permit)
                else:
                    breaker.record(permit, failure=infrastructure_failed)

    @contextlib.asynccontextmanager
    async def _in_lane(self) -> AsyncIterator[None]:
        """Hold one of the lane's slots; wait for one no longer than a pool acquire may take."""
        lane = self._lane
        if lane is None:
            yield
            return
        if lane.locked():
            try:
                await asyncio.wait_for(lane.acquire(), self._lane_timeout_s)
            except TimeoutError:
                raise ToolError(
                    f"{BUSY_TEXT}: {self.settings.tool_concurrency} tool calls in progress"
                ) from None
        else:
            await lane.acquire()
        try:
            yield
        finally:
            lane.release()

    def register_metrics(self, metrics: Metrics) -> None:
        """Add the families of the protections that are on (the others stay out of /metrics).

        A protection the admin endpoint turns on later adds its families then;
        once shown, a family stays (its counters keep counting from where they were).
        """
        self._metrics = metrics
        self._register_families()

    def _register_families(self) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        if self.admission is not None:
            metrics.add_family(
                "mcp_admission_admitted_total",
                "counter",
                "New sessions (or sessionless connections) let through admission control.",
                lambda: [("", {}, self.admitted)],
            )
            metrics.add_family(
                "mcp_admission_shed_total",
                "counter",
                "New sessions (or sessionless connections) refused with 503 and Retry-After.",
                lambda: [("", {}, self.shed)],
            )
            metrics.add_family(
                "mcp_admission_queue_depth",
                "gauge",
                "New sessions waiting their turn in the admission queue.",
                lambda: [("", {}, self.queue_depth())],
            )
            metrics.add_family(
                "mcp_admission_wait_seconds",
                "histogram",
                "Time an admitted new session waited in the admission queue.",
                self.wait_seconds.samples,
            )
        if self.storm is not None:
            metrics.add_family(
                "mcp_storm_active",
                "gauge",
                "1 while the server sees a reconnection storm (new-session rate or a queue).",
                lambda: [("", {}, int(self.storm_active()))],
            )
        if self.settings.defer_expensive:
            metrics.add_family(
                "mcp_deferred_total",
                "counter",
                "Expensive tool calls answered with a retryable error during a storm.",
                lambda: [("", {"tool": t}, n) for t, n in self.deferred.items()],
            )
        if self.breakers or self.held:
            metrics.add_family(
                "mcp_breaker_state",
                "gauge",
                "Circuit breaker per tool: 0 closed, 1 half-open, 2 open.",
                self._breaker_samples(lambda t: int(self.breaker_state(t))),
            )
            metrics.add_family(
                "mcp_breaker_rejected_total",
                "counter",
                "Tool calls refused at once because the tool's circuit breaker was open.",
                self._breaker_samples(self.breaker_rejected),
            )

    def _breaker_samples(self, value: Callable[[str], int]) -> Callable[[], list[Sample]]:
        return lambda: [("", {"tool": t}, value(t)) for t in sorted(self.tools)]


class AdmissionMiddleware:
    """ASGI middleware applying admission control to new sessions before the SDK sees them.

    It passes every request straight on while nothing watches new sessions,
    and starts watching the moment admission is turned on at runtime.
    """

    def __init__(self, app: ASGIApp, *, protection: Protection, path: str) -> None:
        self._app = app
        self._protection = protection
        self._path = path.rstrip("/") or "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self._protection.settings.watches_sessions
            or scope["method"] != "POST"
            or (scope["path"].rstrip("/") or "/") != self._path
        ):
            await self._app(scope, receive, send)
            return
        version = _header(scope, b"mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await self._sessionless(scope, receive, send)
            return
        if _header(scope, b"mcp-session-id") is not None:
            await self._app(scope, receive, send)
            return
        received, body, whole = await _read_body_head(receive)
        receive = _replaying(received, receive)
        if whole and is_initialize(body) and not await self._admitted(scope, receive, send):
            return
        await self._app(scope, receive, send)

    async def _sessionless(self, scope: Scope, receive: Receive, send: Send) -> None:
        """2026-07-28 has no initialize: a new connection's first request is admitted instead."""
        client = scope.get("client")
        if not client:
            await self._app(scope, receive, send)
            return
        key = (client[0], client[1])
        tracker = self._protection.connections
        if not tracker.is_live(key) and not await self._admitted(
            scope, receive, send, "connections"
        ):
            return
        tracker.touch(key)

        async def send_and_touch(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                tracker.touch(key)

        await self._app(scope, receive, send_and_touch)

    async def _admitted(
        self, scope: Scope, receive: Receive, send: Send, what: NewWhat = "sessions"
    ) -> bool:
        shed = await self._protection.admit()
        if shed is None:
            return True
        await overloaded_response(shed, what)(scope, receive, send)
        return False


def refusal_text_middleware() -> ServerMiddleware[Any]:
    """SDK middleware: a refusal's text starts with its own words, not the SDK's prefix.

    The SDK reports a tool's ToolError as "Error executing tool <name>: <text>".
    Clients tell a refusal worth retrying by how its text begins, so that prefix
    is removed from refusals (and only from them). Rewriting the result after
    the SDK built it keeps the envelope each protocol revision needs.
    """

    async def unprefix(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        tool = ctx.params.get("name") if ctx.method == "tools/call" and ctx.params else None
        if not isinstance(tool, str) or not isinstance(result, dict) or not result.get("isError"):
            return result
        prefix = f"Error executing tool {tool}: "
        content = result.get("content")
        if not isinstance(content, list):
            return result
        rewritten = []
        for item in content:
            text = item.get("text") if isinstance(item, dict) else None
            if isinstance(text, str) and text.startswith(prefix):
                rest = text[len(prefix) :]
                if rest.startswith(REFUSAL_PREFIXES):
                    item = {**item, "text": rest}
            rewritten.append(item)
        return {**result, "content": rewritten}

    return unprefix


def overloaded_response(shed: Shed, what: NewWhat = "sessions") -> Response:
    """503 with Retry-After and a JSON-RPC error body (id null: refused before JSON-RPC)."""
    body = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": OVERLOADED,
            "message": f"Server overloaded: new {what} are admitted at a limited rate; "
            f"retry after {shed.retry_after_s} s",
            "data": {"retryAfter": shed.retry_after_s, "reason": shed.reason},
        },
    }
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=503,
        headers={"Retry-After": str(shed.retry_after_s)},
        media_type="application/json",
    )


def is_initialize(body: bytes) -> bool:
    """Whether a JSON-RPC body (one message or a batch) holds an initialize request."""
    if b"initialize" not in body:
        return False
    try:
        decoded = json.loads(body)
    except ValueError:
        return False
    messages = decoded if isinstance(decoded, list) else [decoded]
    return any(isinstance(m, dict) and m.get("method") == "initialize" for m in messages)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body_head(receive: Receive) -> tuple[list[Message], bytes, bool]:
    """Read the body up to MAX_SNIFF_BYTES: (messages read, body so far, whether it is whole)."""
    received: list[Message] = []
    body = bytearray()
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return received, bytes(body), False
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return received, bytes(body), True
        if len(body) > MAX_SNIFF_BYTES:
            return received, bytes(body), False


def _replaying(received: list[Message], receive: Receive) -> Receive:
    """A receive that hands the SDK the messages already read, then the live ones."""
    pending = deque(received)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay
