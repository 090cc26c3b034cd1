"""MCP framing: requests and headers, JSON and SSE replies, error kinds, note checksums."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from harness.mcp_client.wire import (
    SESSION_BREAKING_KINDS,
    ErrorKind,
    McpOutcome,
    McpSession,
    breaks_session,
    encode_header_value,
    outcome_of,
    parse_messages,
    parse_retry_after,
    sse_data,
    transport_failure,
    transport_kind,
)
from harness.mcp_client.writes import new_note, note_checksum

MODERN = "2026-07-28"
ENVELOPE_KEYS = {
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
}


def sse(*messages: dict) -> str:
    return "".join(f"event: message\r\ndata: {json.dumps(m)}\r\n\r\n" for m in messages)


def test_initialize_frames_protocol_client_info_and_headers() -> None:
    session = McpSession(extra_headers={"Authorization": "Bearer t"})
    request = session.initialize(client_version="9.9")
    body = json.loads(request.body)
    assert body == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "mcp-harness", "version": "9.9"},
        },
    }
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json, text/event-stream"
    assert request.headers["MCP-Protocol-Version"] == "2025-11-25"
    assert request.headers["Authorization"] == "Bearer t"
    assert "Mcp-Session-Id" not in request.headers
    assert request.stats_name == "initialize"


def test_session_id_is_adopted_sent_and_forgotten_on_reset() -> None:
    session = McpSession()
    init = session.initialize()
    reply = sse({"jsonrpc": "2.0", "id": init.request_id, "result": {"protocolVersion": "x"}})
    outcome = outcome_of(init, 200, reply, "text/event-stream")
    assert session.accept_initialize(outcome, "abc123").ok
    notification = session.initialized()
    assert notification.request_id is None
    assert "id" not in json.loads(notification.body)
    assert notification.headers["Mcp-Session-Id"] == "abc123"
    session.reset()
    assert "Mcp-Session-Id" not in session.tools_list().headers


def test_initialize_without_session_id_fails() -> None:
    session = McpSession()
    init = session.initialize()
    outcome = outcome_of(init, 200, json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}}))
    assert session.accept_initialize(outcome, None).error_kind is ErrorKind.BAD_RESPONSE
    assert session.session_id is None


def test_request_ids_increase_and_tool_calls_are_named_by_tool() -> None:
    session = McpSession()
    first = session.tools_list()
    call = session.tools_call("create_note", {"id": "n1"})
    assert (first.request_id, call.request_id) == (1, 2)
    assert call.stats_name == "tools/call:create_note"
    assert json.loads(call.body)["params"] == {"name": "create_note", "arguments": {"id": "n1"}}


def test_unsupported_protocol_is_refused_naming_the_supported_ones() -> None:
    with pytest.raises(ValueError, match="2025-11-25, 2026-07-28"):
        McpSession(protocol="2024-01-01")


def test_plain_json_reply() -> None:
    request = McpSession().tools_list()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "a"}]}})
    outcome = outcome_of(request, 200, body.encode(), "application/json")
    assert outcome.ok and outcome.result == {"tools": [{"name": "a"}]}


def test_sse_reply_with_several_events_picks_the_matching_response() -> None:
    session = McpSession()
    session.tools_list()
    request = session.tools_call("get_note", {"id": "x"})
    body = sse(
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}},
        {"jsonrpc": "2.0", "id": 1, "result": {"stale": True}},
        {"jsonrpc": "2.0", "id": 2, "method": "sampling/createMessage", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "result": {"content": [], "isError": False}},
    )
    outcome = outcome_of(request, 200, body, "text/event-stream")
    assert outcome.ok
    assert outcome.result == {"content": [], "isError": False}


def test_sse_parsing_multiline_data_comments_other_events_and_no_trailing_blank() -> None:
    text = (
        ": keep-alive\n\n"
        'event: ping\ndata: {"ignored": 1}\n\n'
        'id: 7\ndata: {"a":\ndata: 1}\n\n'
        'data:{"b": 2}'
    )
    assert sse_data(text) == ['{"a":\n1}', '{"b": 2}']
    assert parse_messages(text, "text/event-stream") == [{"a": 1}, {"b": 2}]


def test_framing_is_guessed_without_content_type_and_batches_are_flattened() -> None:
    assert parse_messages(sse({"id": 1, "result": {}})) == [{"id": 1, "result": {}}]
    assert parse_messages('[{"id": 1, "result": {}}, {"id": 2, "result": {}}]') == [
        {"id": 1, "result": {}},
        {"id": 2, "result": {}},
    ]


def test_cut_off_sse_event_is_skipped() -> None:
    request = McpSession().tools_list()
    outcome = outcome_of(request, 200, 'event: message\ndata: {"jsonrpc":"2.0","id":1,"res', None)
    assert outcome.error_kind is ErrorKind.BAD_RESPONSE
    assert not outcome.breaks_session


@pytest.mark.parametrize(
    ("status", "kind", "breaks"),
    [
        (404, ErrorKind.HTTP_404, True),
        (500, ErrorKind.HTTP_5XX, True),
        (503, ErrorKind.HTTP_5XX, True),
        (429, ErrorKind.HTTP_4XX, False),
        (400, ErrorKind.HTTP_4XX, False),
        (406, ErrorKind.HTTP_4XX, False),
        (421, ErrorKind.HTTP_4XX, False),
    ],
)
def test_http_status_kinds(status: int, kind: ErrorKind, breaks: bool) -> None:
    body = '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}'
    outcome = outcome_of(McpSession().tools_list(), status, body, "application/json")
    assert outcome.error_kind is kind
    assert outcome.breaks_session is breaks
    assert outcome.detail == f"HTTP {status}: -32600 Session not found"


def test_rpc_error_does_not_break_the_session() -> None:
    request = McpSession().tools_list()
    body = sse(
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}}
    )
    outcome = outcome_of(request, 200, body, "text/event-stream")
    assert outcome.error_kind is ErrorKind.RPC_ERROR
    assert outcome.detail == "-32601 Method not found"
    assert not outcome.breaks_session


def test_tool_error_does_not_break_the_session() -> None:
    request = McpSession().tools_call("get_note", {"id": "missing"})
    result = {
        "content": [{"type": "text", "text": "Error executing tool get_note"}],
        "isError": True,
    }
    outcome = outcome_of(request, 200, sse({"jsonrpc": "2.0", "id": 1, "result": result}), None)
    assert outcome.error_kind is ErrorKind.TOOL_ERROR
    assert outcome.detail == "Error executing tool get_note"
    assert not outcome.breaks_session


def test_is_error_outside_tools_call_is_not_a_tool_error() -> None:
    request = McpSession().tools_list()
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"isError": True}})
    assert outcome_of(request, 200, body, "application/json").ok


def test_notification_is_accepted_with_202_and_no_body() -> None:
    session = McpSession(session_id="s")
    assert outcome_of(session.initialized(), 202, b"", "application/json").ok
    assert outcome_of(session.initialized(), 404, b"", None).error_kind is ErrorKind.HTTP_404


def test_transport_failure_breaks_the_session_and_keeps_the_cause() -> None:
    outcome = transport_failure(ConnectionRefusedError(111, "Connection refused"))
    assert outcome.error_kind is ErrorKind.CONNECT_REFUSED
    assert outcome.breaks_session
    assert "ConnectionRefusedError" in outcome.detail
    assert McpOutcome(None).ok and not McpOutcome(None).breaks_session
    assert transport_failure("no response").error_kind is ErrorKind.CONNECT_RESET


class HTTPConnectionClosed(Exception):
    """Stands in for geventhttpclient's class of that name (matched by name)."""


class HTTPParseError(Exception):
    pass


class RetriesExceeded(Exception):
    """geventhttpclient's wrapper: it keeps the socket error in ``original``."""

    def __init__(self, original: BaseException) -> None:
        super().__init__("retries exceeded")
        self.original = original


class ConnectError(Exception):
    """httpx's name for a connection that could not be opened."""


class ReadTimeout(Exception):
    pass


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ConnectionRefusedError(111, "Connection refused"), ErrorKind.CONNECT_REFUSED),
        (OSError(113, "No route to host"), ErrorKind.CONNECT_REFUSED),
        (chained(ConnectError("x"), ConnectionRefusedError(111, "r")), ErrorKind.CONNECT_REFUSED),
        (ConnectionResetError(104, "Connection reset by peer"), ErrorKind.CONNECT_RESET),
        (BrokenPipeError(32, "Broken pipe"), ErrorKind.CONNECT_RESET),
        (HTTPConnectionClosed("connection closed."), ErrorKind.CONNECT_RESET),
        (chained(HTTPParseError("Incomplete"), AttributeError("x")), ErrorKind.CONNECT_RESET),
        (TimeoutError("timed out"), ErrorKind.TIMEOUT),
        (RetriesExceeded(TimeoutError("timed out")), ErrorKind.TIMEOUT),
        (ReadTimeout("read"), ErrorKind.TIMEOUT),
        (RuntimeError("something else"), ErrorKind.CONNECT_RESET),
    ],
)
def test_transport_errors_are_told_apart(error: BaseException, kind: ErrorKind) -> None:
    assert transport_kind(error) is kind
    assert transport_failure(error).breaks_session


def test_session_breaking_kinds() -> None:
    assert SESSION_BREAKING_KINDS == {
        ErrorKind.CONNECT_REFUSED,
        ErrorKind.CONNECT_RESET,
        ErrorKind.TIMEOUT,
        ErrorKind.HTTP_404,
        ErrorKind.HTTP_5XX,
    }
    for kind in (ErrorKind.HTTP_4XX, ErrorKind.RPC_ERROR, ErrorKind.TOOL_ERROR):
        assert not breaks_session(kind, method="tools/list")
    assert breaks_session(ErrorKind.SHED, method="initialize")
    assert not breaks_session(ErrorKind.SHED, method="tools/list")
    assert not breaks_session(ErrorKind.SHED, method="tools/list", sessionless=True)
    assert not breaks_session(ErrorKind.HTTP_404, method="tools/list", sessionless=True)
    assert breaks_session(ErrorKind.HTTP_5XX, method="tools/list", sessionless=True)
    assert breaks_session(ErrorKind.TIMEOUT, method="tools/list", sessionless=True)


@pytest.mark.parametrize("status", [503, 429])
def test_503_or_429_with_retry_after_is_shed(status: int) -> None:
    session = McpSession()
    init = session.initialize()
    outcome = outcome_of(init, status, b"", None, retry_after="2")
    assert outcome.error_kind is ErrorKind.SHED
    assert outcome.retry_after_s == 2.0
    assert outcome.detail == f"HTTP {status} (Retry-After 2s)"
    assert outcome.breaks_session, "a shed initialize leaves the client without a session"
    listed = outcome_of(session.tools_list(), status, b"", None, retry_after="2")
    assert listed.error_kind is ErrorKind.SHED and not listed.breaks_session


def test_retry_after_on_other_statuses_or_unparseable_is_not_shed() -> None:
    request = McpSession().tools_list()
    assert outcome_of(request, 500, b"", None, retry_after="2").error_kind is ErrorKind.HTTP_5XX
    assert outcome_of(request, 503, b"", None, retry_after="soon").error_kind is ErrorKind.HTTP_5XX
    assert outcome_of(request, 503, b"", None).retry_after_s is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 -0000", 10.0),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now=now) == seconds


def test_sessionless_request_carries_the_envelope_in_headers_and_meta() -> None:
    session = McpSession(protocol=MODERN, extra_headers={"Authorization": "Bearer t"})
    request = session.tools_call("create_note", {"id": "n1"})
    body = json.loads(request.body)
    assert body["method"] == "tools/call"
    assert body["params"]["name"] == "create_note"
    assert body["params"]["arguments"] == {"id": "n1"}
    meta = body["params"]["_meta"]
    assert set(meta) == ENVELOPE_KEYS
    assert meta["io.modelcontextprotocol/protocolVersion"] == MODERN
    assert meta["io.modelcontextprotocol/clientCapabilities"] == {}
    assert meta["io.modelcontextprotocol/clientInfo"]["name"] == "mcp-harness"
    assert request.headers["MCP-Protocol-Version"] == MODERN
    assert request.headers["Mcp-Method"] == "tools/call"
    assert request.headers["Mcp-Name"] == "create_note"
    assert request.headers["Authorization"] == "Bearer t"
    assert request.headers["Accept"] == "application/json, text/event-stream"
    assert "Mcp-Session-Id" not in request.headers
    assert request.sessionless and request.stats_name == "tools/call:create_note"


def test_sessionless_tools_list_has_method_header_and_no_name() -> None:
    request = McpSession(protocol=MODERN).tools_list()
    assert json.loads(request.body)["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
    assert request.headers["Mcp-Method"] == "tools/list"
    assert "Mcp-Name" not in request.headers


def test_session_mode_has_neither_routing_headers_nor_meta() -> None:
    request = McpSession().tools_call("get_note", {"id": "x"})
    assert "Mcp-Method" not in request.headers and "Mcp-Name" not in request.headers
    assert "_meta" not in json.loads(request.body)["params"]


def test_sessionless_has_no_handshake_and_no_stream() -> None:
    session = McpSession(protocol=MODERN)
    for frame in (session.initialize, session.initialized, session.open_stream):
        with pytest.raises(ValueError, match="sessionless"):
            frame()


def test_header_body_mismatch_is_an_http_4xx_that_breaks_nothing() -> None:
    request = McpSession(protocol=MODERN).tools_list()
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {
                "code": -32020,
                "message": "mcp-method header does not match the request body's method",
            },
        }
    )
    outcome = outcome_of(request, 400, body, "application/json")
    assert outcome.error_kind is ErrorKind.HTTP_4XX
    assert outcome.detail.startswith("HTTP 400: -32020 mcp-method header does not match")
    assert not outcome.breaks_session


def test_sessionless_404_is_an_unknown_method_not_a_lost_session() -> None:
    request = McpSession(protocol=MODERN).tools_list()
    body = '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}'
    outcome = outcome_of(request, 404, body, "application/json")
    assert outcome.error_kind is ErrorKind.HTTP_404
    assert not outcome.breaks_session
    assert outcome_of(request, 502, b"", None).breaks_session


def test_sessionless_json_reply_is_read() -> None:
    request = McpSession(protocol=MODERN).tools_list()
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "result": {"resultType": "complete", "tools": []}}
    )
    assert outcome_of(request, 200, body, "application/json").result["tools"] == []


def test_mcp_name_is_base64_wrapped_when_it_would_not_survive_a_header() -> None:
    assert encode_header_value("create_note") == "create_note"
    assert encode_header_value("notizen-übersicht") == "=?base64?bm90aXplbi3DvGJlcnNpY2h0?="
    assert encode_header_value(" padded") == "=?base64?IHBhZGRlZA==?="
    request = McpSession(protocol=MODERN).tools_call("é", {})
    assert request.headers["Mcp-Name"] == "=?base64?w6k=?="


def test_stream_get_carries_the_session_and_accepts_only_event_streams() -> None:
    session = McpSession(extra_headers={"Authorization": "Bearer t"})
    with pytest.raises(ValueError, match="initialize first"):
        session.open_stream()
    session.session_id = "abc"
    request = session.open_stream()
    assert request.http_method == "GET" and request.stats_name == "GET stream"
    assert request.headers == {
        "Authorization": "Bearer t",
        "Accept": "text/event-stream",
        "MCP-Protocol-Version": "2025-11-25",
        "Mcp-Session-Id": "abc",
    }
    assert outcome_of(request, 200, None, "text/event-stream").ok
    assert outcome_of(request, 200, None, "application/json").error_kind is ErrorKind.BAD_RESPONSE
    assert outcome_of(request, 409, None, "application/json").error_kind is ErrorKind.HTTP_4XX
    assert outcome_of(request, 404, None, None).breaks_session


def test_note_checksum_is_sha256_of_title_newline_body() -> None:
    expected = hashlib.sha256(b"a title\nthe body").hexdigest()
    assert note_checksum("a title", "the body") == expected
    assert note_checksum("a title", "the body.") != expected


def test_new_note_ids_carry_the_prefix_and_repeat_with_the_seed() -> None:
    notes = [new_note("run7-3", random.Random(1)) for _ in range(2)]
    assert notes[0] == notes[1]
    rng = random.Random(2)
    ids = {new_note("run7-3", rng)[0] for _ in range(1000)}
    assert len(ids) == 1000
    assert all(note_id.startswith("run7-3-") for note_id in ids)


def test_write_template_fills_placeholders_and_checksums_the_content() -> None:
    from harness.mcp_client.writes import WriteTemplate, content_checksum, note_checksum

    template = WriteTemplate()
    arguments, checksum = template.render("n-1", "a title", "the {id} body", parent_id="n-0")
    assert arguments == {
        "id": "n-1",
        "title": "a title",
        "body": "the {id} body",
        "checksum": note_checksum("a title", "the {id} body"),
        "parent_id": "n-0",
    }
    assert checksum == arguments["checksum"]
    without_parent, _ = template.render("n-2", "t", "b")
    assert "parent_id" not in without_parent

    theirs = WriteTemplate(
        "put_item",
        (("key", "item:{id}"), ("payload", "{title}|{body}"), ("ttl", 60), ("ref", "{parent_id}")),
        content="{id}={body}",
    )
    arguments, checksum = theirs.render("x", "T", "B")
    assert arguments == {"key": "item:x", "payload": "T|B", "ttl": 60}
    assert checksum == content_checksum("x=B")
