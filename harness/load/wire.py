"""MCP streamable-HTTP framing: requests, headers, JSON or SSE replies, error kinds.

Pure functions and plain data, no I/O: the gevent Locust user and the harness's
asyncio service probe both speak MCP through this module, so they frame and
judge every exchange the same way.

Only the session revision 2025-11-25 (initialize, ``Mcp-Session-Id``) is
spoken today. Every request is framed in one place, ``McpSession._frame``: the
sessionless 2026-07-28 revision adds its ``Mcp-Method`` / ``Mcp-Name`` headers
and ``params._meta`` there, and skips the handshake in the caller.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from harness import __version__

PROTOCOL_2025_11_25 = "2025-11-25"
SESSION_PROTOCOLS = frozenset({PROTOCOL_2025_11_25})
"""Revisions with an initialize handshake and a server-issued session id."""

CLIENT_NAME = "mcp-harness"

JsonObject = dict[str, Any]


class ErrorKind(StrEnum):
    """Why an MCP exchange failed, as counted in the timeline's errors by kind."""

    CONNECT = "connect"
    """No HTTP response: refused, reset, timed out, body cut off."""
    HTTP_404 = "http_404"
    """The server does not know the session (restarted, or it expired the session)."""
    HTTP_5XX = "http_5xx"
    HTTP_4XX = "http_4xx"
    """Any other non-2xx status (400 bad headers, 406, 421 wrong Host, ...)."""
    RPC_ERROR = "rpc_error"
    """The JSON-RPC response carries an error object."""
    TOOL_ERROR = "tool_error"
    """tools/call returned a result with ``isError: true``."""
    BAD_RESPONSE = "bad_response"
    """A 2xx reply without a JSON-RPC response to this request's id."""


SESSION_BREAKING_KINDS = frozenset({ErrorKind.CONNECT, ErrorKind.HTTP_404, ErrorKind.HTTP_5XX})
"""Failures after which a client must start a new session (initialize again)."""


@dataclass(frozen=True)
class McpRequest:
    """One framed HTTP POST of a JSON-RPC message."""

    method: str
    stats_name: str
    """Name in Locust's stats and in records: the method, ``tools/call:<tool>`` for calls."""
    request_id: int | None
    """None for a notification, which gets no JSON-RPC response."""
    body: str
    headers: dict[str, str]


@dataclass(frozen=True)
class McpOutcome:
    """How one exchange ended."""

    error_kind: ErrorKind | None
    response: JsonObject | None = None
    """The JSON-RPC response to the request, when there was one."""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def breaks_session(self) -> bool:
        return self.error_kind in SESSION_BREAKING_KINDS

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
    ``accept_initialize``.
    """

    protocol: str = PROTOCOL_2025_11_25
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    """Sent on every request (authorization, ...), kept across new sessions."""
    session_id: str | None = None
    next_request_id: int = 1

    def __post_init__(self) -> None:
        if self.protocol not in SESSION_PROTOCOLS:
            supported = ", ".join(sorted(SESSION_PROTOCOLS))
            raise ValueError(f"MCP protocol {self.protocol!r} is not supported; use {supported}")

    def reset(self) -> None:
        """Forget the session (before a new initialize); request ids keep counting."""
        self.session_id = None

    def initialize(self, client_version: str = __version__) -> McpRequest:
        params = {
            "protocolVersion": self.protocol,
            "capabilities": {},
            "clientInfo": {"name": CLIENT_NAME, "version": client_version},
        }
        return self._frame("initialize", params)

    def initialized(self) -> McpRequest:
        return self._frame("notifications/initialized", None, notification=True)

    def tools_list(self) -> McpRequest:
        return self._frame("tools/list", {})

    def tools_call(self, tool: str, arguments: Mapping[str, Any]) -> McpRequest:
        params = {"name": tool, "arguments": dict(arguments)}
        return self._frame("tools/call", params, stats_name=f"tools/call:{tool}")

    def accept_initialize(self, outcome: McpOutcome, session_id_header: str | None) -> McpOutcome:
        """Adopt the session id of a successful initialize reply; a reply without one fails."""
        if outcome.ok and not session_id_header:
            return McpOutcome(ErrorKind.BAD_RESPONSE, outcome.response, "no Mcp-Session-Id")
        if outcome.ok:
            self.session_id = session_id_header
        return outcome

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
        if params is not None:
            message["params"] = params
        headers = {
            **self.extra_headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": self.protocol,
        }
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        body = json.dumps(message, separators=(",", ":"))
        return McpRequest(method, stats_name or method, request_id, body, headers)


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
    request: McpRequest, status: int, body: bytes | str | None, content_type: str | None = None
) -> McpOutcome:
    """Judge the HTTP reply to ``request`` (status, body, content type)."""
    if status == 404:
        return McpOutcome(ErrorKind.HTTP_404, detail=_error_detail(body, content_type, status))
    if status >= 500:
        return McpOutcome(ErrorKind.HTTP_5XX, detail=_error_detail(body, content_type, status))
    if status >= 400:
        return McpOutcome(ErrorKind.HTTP_4XX, detail=_error_detail(body, content_type, status))
    if not 200 <= status < 300:
        return McpOutcome(ErrorKind.BAD_RESPONSE, detail=f"HTTP {status}")
    if request.request_id is None:
        return McpOutcome(None)
    response = find_response(parse_messages(body or b"", content_type), request.request_id)
    if response is None:
        return McpOutcome(ErrorKind.BAD_RESPONSE, detail=f"no response to id {request.request_id}")
    error = response.get("error")
    if error is not None:
        return McpOutcome(ErrorKind.RPC_ERROR, response, _rpc_error_detail(error))
    result = response.get("result")
    if request.method == "tools/call" and isinstance(result, dict) and result.get("isError"):
        return McpOutcome(ErrorKind.TOOL_ERROR, response, _tool_error_detail(result))
    return McpOutcome(None, response)


def transport_failure(error: BaseException | str) -> McpOutcome:
    """Outcome of an exchange that got no HTTP response at all."""
    detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return McpOutcome(ErrorKind.CONNECT, detail=detail)


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


def note_checksum(title: str, body: str) -> str:
    """Checksum of a note's content, as the write ledger stores and later compares it."""
    return hashlib.sha256(f"{title}\n{body}".encode()).hexdigest()


_NOTE_WORDS = (
    "failover replica primary session storm latency ledger quorum archive "
    "backup restore promote timeline checkpoint vacuum index"
).split()


def new_note(id_prefix: str, rng: random.Random) -> tuple[str, str, str]:
    """A fresh note ``(id, title, body)``; ids are unique per prefix (64 random bits)."""
    note_id = f"{id_prefix}-{rng.getrandbits(64):016x}"
    title = " ".join(rng.choices(_NOTE_WORDS, k=3))
    body = " ".join(rng.choices(_NOTE_WORDS, k=rng.randint(5, 40)))
    return note_id, title, body


def note_search_term(rng: random.Random) -> str:
    """A word that note titles are made of, for search_notes."""
    return rng.choice(_NOTE_WORDS)
