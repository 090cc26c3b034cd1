"""The official MCP SDK client against the reference server through the stack's `mcp` proxy,
so the hand-written Locust client cannot drift from the protocol unnoticed."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from mcp import Client

from harness.mcp_client.wire import McpSession, outcome_of
from harness.mcp_client.writes import note_checksum
from harness.stack.local import LocalStack

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""

TOOLS = {"create_note", "get_note", "search_notes", "notes_report"}


def _text(result: object) -> str:
    content = getattr(result, "content", [])
    return "".join(getattr(item, "text", "") for item in content)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_sdk_client_lists_and_calls_tools(local_stack: LocalStack, mode: str) -> None:
    note_id = f"sdk-{mode}-{uuid.uuid4().hex[:8]}"

    async def go() -> None:
        async with Client(local_stack.endpoints.mcp_url, mode=mode) as client:
            tools = await client.list_tools()
            assert TOOLS <= {t.name for t in tools.tools}
            created = await client.call_tool(
                "create_note", {"id": note_id, "title": "sdk", "body": "hello"}
            )
            assert not created.is_error, _text(created)
            again = await client.call_tool(
                "create_note", {"id": note_id, "title": "sdk", "body": "hello"}
            )
            assert not again.is_error
            fetched = await client.call_tool("get_note", {"id": note_id})
            assert not fetched.is_error
            assert "hello" in _text(fetched)
            missing = await client.call_tool("get_note", {"id": "no-such-note"})
            assert missing.is_error

    asyncio.run(go())


def test_hand_written_framing_agrees_with_the_server(local_stack: LocalStack) -> None:
    """Our wire module's requests, sent with a plain HTTP client, get well-formed replies."""
    import httpx2

    session = McpSession()
    url = local_stack.endpoints.mcp_url
    with httpx2.Client(timeout=5) as http:
        init = session.initialize()
        reply = http.post(url, content=init.body, headers=init.headers)
        outcome = session.accept_initialize(
            outcome_of(init, reply.status_code, reply.content, reply.headers.get("content-type")),
            reply.headers.get("mcp-session-id"),
        )
        assert outcome.ok and session.session_id
        note = session.initialized()
        assert http.post(url, content=note.body, headers=note.headers).status_code == 202
        listing = session.tools_list()
        reply = http.post(url, content=listing.body, headers=listing.headers)
        outcome = outcome_of(
            listing, reply.status_code, reply.content, reply.headers.get("content-type")
        )
        assert outcome.ok
        assert TOOLS <= {t["name"] for t in outcome.result["tools"]}
        stale = McpSession(session_id="0" * 32)
        probe = stale.tools_list()
        reply = http.post(url, content=probe.body, headers=probe.headers)
        gone = outcome_of(
            probe, reply.status_code, reply.content, reply.headers.get("content-type")
        )
        assert gone.error_kind == "http_404" and gone.breaks_session
    assert len(note_checksum("a", "b")) == 64
    assert json.loads(init.body)["params"]["protocolVersion"] == "2025-11-25"
