"""MCP framing: requests and headers, JSON and SSE replies, error kinds, note checksums."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from harness.load.wire import (
    ErrorKind,
    McpOutcome,
    McpSession,
    new_note,
    note_checksum,
    outcome_of,
    parse_messages,
    sse_data,
    transport_failure,
)


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


def test_unsupported_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="2026-07-28"):
        McpSession(protocol="2026-07-28")


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


def test_transport_failure_is_connect_and_breaks_the_session() -> None:
    outcome = transport_failure(ConnectionRefusedError(111, "Connection refused"))
    assert outcome.error_kind is ErrorKind.CONNECT
    assert outcome.breaks_session
    assert "ConnectionRefusedError" in outcome.detail
    assert McpOutcome(None).ok and not McpOutcome(None).breaks_session


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
