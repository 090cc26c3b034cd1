"""MCP streamable-HTTP framing: requests, headers, JSON or SSE replies, error kinds.

Pure functions and plain data, no I/O: the gevent Locust user and the harness's
asyncio service probe both speak MCP through this module, so they frame and
judge every exchange the same way.

Two revisions are spoken. 2025-11-25 has a session: initialize, then every
request carries the server-issued ``Mcp-Session-Id``. 2026-07-28 is
sessionless: no initialize, and every POST carries its own envelope, the
headers ``MCP-Protocol-Version`` / ``Mcp-Method`` / ``Mcp-Name`` (tools/call)
mirrored by ``params._meta`` in the body; a server rejects a header that
disagrees with the body with HTTP 400 and JSON-RPC code -32020. Every request
is framed in one place, ``McpSession._frame``.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import errno
import json
import math
import re
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from harness import __version__

PROTOCOL_2025_11_25 = "2025-11-25"
PROTOCOL_2026_07_28 = "2026-07-28"
SESSION_PROTOCOLS = frozenset({PROTOCOL_2025_11_25})
"""Revisions with an initialize handshake and a server-issued session id."""
SESSIONLESS_PROTOCOLS = frozenset({PROTOCOL_2026_07_28})
"""Revisions where every request carries its own envelope and no session exists."""
SUPPORTED_PROTOCOLS = SESSION_PROTOCOLS | SESSIONLESS_PROTOCOLS

CLIENT_NAME = "mcp-harness"

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
"""Keys of the per-request envelope in ``params._meta`` (2026-07-28)."""

NAME_BEARING_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Methods whose named target is mirrored in the ``Mcp-Name`` header (2026-07-28)."""

HEADER_MISMATCH_CODE = -32020
"""JSON-RPC error code of a 2026-07-28 request whose headers disagree with its body."""

STREAM_STATS_NAME = "GET stream"
"""Name of the standalone GET SSE stream's opening in Locust's stats and in records."""

SHED_STATUSES = frozenset({429, 503})
"""Statuses that, with a ``Retry-After`` header, mean the server shed the request."""

JsonObject = dict[str, Any]


class ErrorKind(StrEnum):
    """Why an MCP exchange failed, as counted in the timeline's errors by kind."""

    CONNECT_REFUSED = "connect_refused"
    """No connection could be opened: refused (nothing listens), unreachable, unresolved."""
    CONNECT_RESET = "connect_reset"
    """The connection was reset or closed mid-exchange: no complete reply arrived."""
    TIMEOUT = "timeout"
    """Connecting or waiting for (the rest of) the reply took longer than the request timeout."""
    HTTP_404 = "http_404"
    """2025-11-25: the server does not know the session (restarted, or it expired the session).

    In 2026-07-28 a 404 is an unknown method (JSON-RPC -32601) and breaks nothing."""
    SHED = "shed"
    """503 or 429 with ``Retry-After``: the server refused the request to protect itself
    (admission control) and said when to come back."""
    HTTP_5XX = "http_5xx"
    """Any other 5xx."""
    HTTP_4XX = "http_4xx"
    """Any other non-2xx status (400 bad or mismatched headers, 406, 409, 421 wrong Host, ...)."""
    RPC_ERROR = "rpc_error"
    """The JSON-RPC response carries an error object."""
    TOOL_ERROR = "tool_error"
    """tools/call returned a result with ``isError: true``, or the write tool returned a
    result that fails the scenario's success rule (``AckRule``): a failure reported as a
    normal result, such as ``{"success": false, "error": "..."}``."""
    BAD_RESPONSE = "bad_response"
    """A 2xx reply without a JSON-RPC response to this request's id."""


TRANSPORT_KINDS = frozenset({ErrorKind.CONNECT_REFUSED, ErrorKind.CONNECT_RESET, ErrorKind.TIMEOUT})
"""Kinds of an exchange that got no complete HTTP reply."""

UNANSWERED_KINDS = frozenset({ErrorKind.CONNECT_RESET, ErrorKind.TIMEOUT})
"""Transport failures after which the request may have reached the server: it was sent (or
was being sent) and no reply came. ``connect_refused`` is absent: nothing was sent."""


def retry_unanswered_write(kind: ErrorKind | None, retries_done: int, retry_limit: int) -> bool:
    """Whether an at-least-once client sends a write again (with the same id) after ``kind``.

    Only a write that got no reply is sent again (``UNANSWERED_KINDS``: reset, timeout), at
    most ``retry_limit`` times in all (``ledger.retry_unanswered``). A refused connection
    sent nothing; every other failure is an answer (an HTTP status, a JSON-RPC or tool
    error, a shed) and the client takes it as one.
    """
    return kind in UNANSWERED_KINDS and retries_done < retry_limit


SESSION_BREAKING_KINDS = TRANSPORT_KINDS | {ErrorKind.HTTP_404, ErrorKind.HTTP_5XX}
"""Failures after which a client must start over: initialize again (2025-11-25), or, in
2026-07-28, count itself disconnected until a tools/list succeeds (there a 404 breaks
nothing). ``shed`` is absent on purpose: it breaks a session only when it refused the
initialize, which leaves the client without one (see ``breaks_session``)."""


def breaks_session(kind: ErrorKind | None, *, method: str = "", sessionless: bool = False) -> bool:
    """Whether a failure of ``kind`` on ``method`` leaves the client without a working session.

    A shed initialize leaves the client without a session; any other shed request
    was refused, not forgotten, so its session (or connection) still works.
    """
    if kind is None:
        return False
    if kind is ErrorKind.SHED:
        return method == "initialize"
    if kind is ErrorKind.HTTP_404 and sessionless:
        return False
    return kind in SESSION_BREAKING_KINDS


@dataclass(frozen=True)
class McpRequest:
    """One framed HTTP request: a POST of a JSON-RPC message, or the GET of the SSE stream."""

    method: str
    stats_name: str
    """Name in Locust's stats and in records: the method, ``tools/call:<tool>`` for calls."""
    request_id: int | None
    """None for a notification (and the GET stream), which gets no JSON-RPC response."""
    body: str
    headers: dict[str, str]
    sessionless: bool = False
    """Framed for 2026-07-28, where a 404 does not mean a lost session."""
    http_method: str = "POST"


@dataclass(frozen=True)
class McpOutcome:
    """How one exchange ended."""

    error_kind: ErrorKind | None
    response: JsonObject | None = None
    """The JSON-RPC response to the request, when there was one."""
    detail: str = ""
    retry_after_s: float | None = None
    """For ``shed``: how long the server asked the client to stay away (uncapped)."""
    method: str = ""
    """The request's method: a shed breaks a session only for ``initialize``."""
    sessionless: bool = False

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def breaks_session(self) -> bool:
        return breaks_session(self.error_kind, method=self.method, sessionless=self.sessionless)

    @property
    def result(self) -> JsonObject:
        """The JSON-RPC ``result`` object ({} when absent)."""
        result = (self.response or {}).get("result")
        return result if isinstance(result, dict) else {}


@dataclass
class McpSession:
    """Client side of one MCP conversation: request ids, the session id, the headers.

    Holds no connection; the caller sends ``McpRequest`` objects with its own
    HTTP client and feeds the replies back through ``outcome_of`` and
    ``accept_initialize``. In 2026-07-28 there is no session: ``session_id``
    stays None and each request carries the envelope instead.
    """

    protocol: str = PROTOCOL_2025_11_25
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    """Sent on every request (authorization, ...), kept across new sessions."""
    session_id: str | None = None
    next_request_id: int = 1
    client_version: str = __version__

    def __post_init__(self) -> None:
        if self.protocol not in SUPPORTED_PROTOCOLS:
            supported = ", ".join(sorted(SUPPORTED_PROTOCOLS))
            raise ValueError(f"MCP protocol {self.protocol!r} is not supported; use {supported}")

    @property
    def sessionless(self) -> bool:
        return self.protocol in SESSIONLESS_PROTOCOLS

    @property
    def client_info(self) -> JsonObject:
        return {"name": CLIENT_NAME, "version": self.client_version}

    def reset(self) -> None:
        """Forget the session (before a new initialize); request ids keep counting."""
        self.session_id = None

    def initialize(self, client_version: str | None = None) -> McpRequest:
        self._require_session("initialize")
        info = self.client_info
        if client_version is not None:
            info["version"] = client_version
        params = {"protocolVersion": self.protocol, "capabilities": {}, "clientInfo": info}
        return self._frame("initialize", params)

    def initialized(self) -> McpRequest:
        self._require_session("notifications/initialized")
        return self._frame("notifications/initialized", None, notification=True)

    def tools_list(self, cursor: str | None = None) -> McpRequest:
        """tools/list; ``cursor`` asks for the page after the one that returned it."""
        return self._frame("tools/list", {} if cursor is None else {"cursor": cursor})

    def tools_call(self, tool: str, arguments: Mapping[str, Any]) -> McpRequest:
        params = {"name": tool, "arguments": dict(arguments)}
        return self._frame("tools/call", params, stats_name=f"tools/call:{tool}")

    def open_stream(self) -> McpRequest:
        """The GET that opens the standalone SSE stream of the current session."""
        self._require_session("the standalone GET stream")
        if self.session_id is None:
            raise ValueError("the standalone GET stream needs a session: initialize first")
        headers = {
            **self.extra_headers,
            "Accept": "text/event-stream",
            "MCP-Protocol-Version": self.protocol,
            "Mcp-Session-Id": self.session_id,
        }
        return McpRequest("GET", STREAM_STATS_NAME, None, "", headers, http_method="GET")

    def accept_initialize(self, outcome: McpOutcome, session_id_header: str | None) -> McpOutcome:
        """Adopt the session id of a successful initialize reply; a reply without one fails."""
        if outcome.ok and not session_id_header:
            return McpOutcome(
                ErrorKind.BAD_RESPONSE, outcome.response, "no Mcp-Session-Id", method="initialize"
            )
        if outcome.ok:
            self.session_id = session_id_header
        return outcome

    def _require_session(self, what: str) -> None:
        if self.sessionless:
            raise ValueError(f"MCP {self.protocol} is sessionless: it has no {what}")

    def _frame(
        self,
        method: str,
        params: JsonObject | None,
        *,
        notification: bool = False,
        stats_name: str | None = None,
    ) -> McpRequest:
        message: JsonObject = {"jsonrpc": "2.0", "method": method}
        request_id = None
        if not notification:
            request_id = self.next_request_id
            self.next_request_id += 1
            message["id"] = request_id
        headers = {
            **self.extra_headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": self.protocol,
        }
        if self.sessionless:
            params = dict(params or {})
            params["_meta"] = {
                META_PROTOCOL_VERSION: self.protocol,
                META_CLIENT_CAPABILITIES: {},
                META_CLIENT_INFO: self.client_info,
            }
            headers["Mcp-Method"] = method
            name_key = NAME_BEARING_PARAMS.get(method)
            if name_key is not None and isinstance(params.get(name_key), str):
                headers["Mcp-Name"] = encode_header_value(params[name_key])
        if params is not None:
            message["params"] = params
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        body = json.dumps(message, separators=(",", ":"))
        return McpRequest(
            method, stats_name or method, request_id, body, headers, sessionless=self.sessionless
        )


_HEADER_SAFE = re.compile(r"^[\x20-\x7E]*$")
_BASE64_SENTINEL = re.compile(r"^=\?base64\?.*\?=$")


def encode_header_value(value: str) -> str:
    """``value`` as an ``Mcp-Name`` header: verbatim if it survives HTTP, else base64-wrapped.

    The same rule as the SDK's (``=?base64?...?=`` for non-ASCII, control
    characters, edge whitespace), so a server decodes it back to the body's value.
    """
    if _HEADER_SAFE.match(value) and value == value.strip() and not _BASE64_SENTINEL.match(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), None if absent
    or malformed.

    A date in the past means 0. ``now`` (wall-clock seconds) defaults to the
    current time; it matters only for the HTTP-date form.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        wall = time.time() if now is None else now
        return max(0.0, when.timestamp() - wall)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def parse_messages(body: bytes | str, content_type: str | None = None) -> list[JsonObject]:
    """JSON-RPC messages in a reply body, framed as JSON (object or batch) or as SSE events.

    Without a content type the framing is guessed from the first character.
    Events that are not valid JSON (a stream cut off mid-event) are skipped.
    """
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime == "text/event-stream" or (not mime and not text.lstrip().startswith(("{", "["))):
        payloads = sse_data(text)
    else:
        payloads = [text]
    messages: list[JsonObject] = []
    for payload in payloads:
        try:
            decoded = json.loads(payload)
        except ValueError:
            continue
        items = decoded if isinstance(decoded, list) else [decoded]
        messages.extend(item for item in items if isinstance(item, dict))
    return messages


def sse_data(text: str) -> list[str]:
    """The data of each ``message`` event in an SSE stream (data lines joined by newlines)."""
    events: list[str] = []
    data_lines: list[str] = []
    event_type = "message"
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") + [""]:
        if line == "":
            if data_lines and event_type == "message":
                events.append("\n".join(data_lines))
            data_lines, event_type = [], "message"
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data_lines.append(value)
        elif name == "event":
            event_type = value or "message"
    return events


def find_response(messages: list[JsonObject], request_id: int) -> JsonObject | None:
    """The JSON-RPC response (result or error) to ``request_id``; other messages are skipped."""
    for message in messages:
        if message.get("id") == request_id and ("result" in message or "error" in message):
            return message
    return None


def outcome_of(
    request: McpRequest,
    status: int,
    body: bytes | str | None,
    content_type: str | None = None,
    *,
    retry_after: str | None = None,
) -> McpOutcome:
    """Judge the HTTP reply to ``request`` (status, body, content type, ``Retry-After`` header).
    A write tool's result must also pass the scenario's rule: ``acks.judge_ack``."""

    def judged(
        kind: ErrorKind | None,
        response: JsonObject | None = None,
        detail: str = "",
        retry_after_s: float | None = None,
    ) -> McpOutcome:
        return McpOutcome(
            kind, response, detail, retry_after_s, request.method, request.sessionless
        )

    if not 200 <= status < 300:
        wait_s = parse_retry_after(retry_after) if status in SHED_STATUSES else None
        kind, detail = _status_failure(status, _error_detail(body, content_type, status), wait_s)
        return judged(kind, detail=detail, retry_after_s=wait_s)
    if request.http_method == "GET":
        mime = (content_type or "").split(";")[0].strip().lower()
        if mime != "text/event-stream":
            return judged(ErrorKind.BAD_RESPONSE, detail=f"stream is {mime or 'untyped'}")
        return judged(None)
    if request.request_id is None:
        return judged(None)
    response = find_response(parse_messages(body or b"", content_type), request.request_id)
    if response is None:
        return judged(ErrorKind.BAD_RESPONSE, detail=f"no response to id {request.request_id}")
    error = response.get("error")
    if error is not None:
        return judged(ErrorKind.RPC_ERROR, response, _rpc_error_detail(error))
    result = response.get("result")
    if request.method == "tools/call" and isinstance(result, dict) and result.get("isError"):
        return judged(ErrorKind.TOOL_ERROR, response, _tool_error_detail(result))
    return judged(None, response)


def _status_failure(status: int, detail: str, wait_s: float | None) -> tuple[ErrorKind, str]:
    """The kind of a reply that is not 2xx: shed (429/503 with a Retry-After), 404 (the
    session is gone), 5xx, other 4xx, or a status that is none of those."""
    if wait_s is not None:
        return ErrorKind.SHED, f"{detail} (Retry-After {wait_s:g}s)"
    if status == 404:
        return ErrorKind.HTTP_404, detail
    if status >= 500:
        return ErrorKind.HTTP_5XX, detail
    if status >= 400:
        return ErrorKind.HTTP_4XX, detail
    return ErrorKind.BAD_RESPONSE, f"HTTP {status}"


def transport_failure(error: BaseException | str) -> McpOutcome:
    """Outcome of an exchange that got no complete HTTP reply (kind from ``transport_kind``)."""
    if isinstance(error, str):
        return McpOutcome(ErrorKind.CONNECT_RESET, detail=error)
    return McpOutcome(transport_kind(error), detail=f"{type(error).__name__}: {error}")


_REFUSED_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
)
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ENOTCONN})
_CLOSED_NAMES = frozenset(
    {"HTTPConnectionClosed", "HTTPParseError", "RemoteProtocolError", "ReadError", "WriteError"}
)


def transport_kind(error: BaseException) -> ErrorKind:
    """Refused, reset or timeout, from an exception of any HTTP client.

    HTTP clients wrap the socket error (geventhttpclient's ``RetriesExceeded``
    keeps it in ``original``, httpx chains it as the cause), so the chain is
    walked outermost first and the first exception that tells decides. Names
    are compared rather than classes so that this module imports no client
    (it must not pull gevent into the asyncio harness). Anything unrecognised
    had a connection that failed without a reply: ``connect_reset``.
    """
    for exc in _exception_chain(error):
        names = {cls.__name__ for cls in type(exc).__mro__}
        if isinstance(exc, TimeoutError) or any(name.endswith("Timeout") for name in names):
            return ErrorKind.TIMEOUT
        if (
            isinstance(exc, (ConnectionRefusedError, socket.gaierror))
            or (isinstance(exc, OSError) and exc.errno in _REFUSED_ERRNOS)
            or "ConnectError" in names
        ):
            return ErrorKind.CONNECT_REFUSED
        if (
            isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError))
            or (isinstance(exc, OSError) and exc.errno in _RESET_ERRNOS)
            or names & _CLOSED_NAMES
        ):
            return ErrorKind.CONNECT_RESET
    return ErrorKind.CONNECT_RESET


def _exception_chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        exc = pending.pop(0)
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        yield exc
        original = getattr(exc, "original", None)
        for linked in (original, exc.__cause__, exc.__context__):
            if isinstance(linked, BaseException):
                pending.append(linked)


def _error_detail(body: bytes | str | None, content_type: str | None, status: int) -> str:
    for message in parse_messages(body or b"", content_type):
        if isinstance(message.get("error"), (dict, str)):
            return f"HTTP {status}: {_rpc_error_detail(message['error'])}"
    return f"HTTP {status}"


def _rpc_error_detail(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('code')} {error.get('message', '')}".strip()
    return str(error)


def _tool_error_detail(result: JsonObject) -> str:
    for item in result.get("content") or []:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            return item["text"][:200]
    return "isError"
