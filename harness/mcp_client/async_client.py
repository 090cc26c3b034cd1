"""MCP over httpx2 from asyncio code (the harness's probes and fault injectors).

Locust users run under gevent and have their own transport (``user.py``); the
framing both use is ``wire``. This module only sends and reads back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx2

from harness.mcp_client.wire import (
    PROTOCOL_2025_11_25,
    McpOutcome,
    McpRequest,
    McpSession,
    outcome_of,
    transport_failure,
)


async def send(
    client: httpx2.AsyncClient, url: str, request: McpRequest
) -> tuple[McpOutcome, str | None]:
    """POST one request; (its outcome, the mcp-session-id the server returned)."""
    try:
        response = await client.post(url, content=request.body, headers=request.headers)
    except httpx2.HTTPError as exc:
        return transport_failure(exc), None
    outcome = outcome_of(
        request,
        response.status_code,
        response.content,
        response.headers.get("content-type"),
        retry_after=response.headers.get("retry-after"),
    )
    return outcome, response.headers.get("mcp-session-id")


async def open_session(client: httpx2.AsyncClient, url: str, session: McpSession) -> McpOutcome:
    """initialize + notifications/initialized (nothing to do for a sessionless protocol)."""
    if session.sessionless:
        return McpOutcome(None)
    request = session.initialize()
    outcome, session_id = await send(client, url, request)
    outcome = session.accept_initialize(outcome, session_id)
    if outcome.ok:
        await send(client, url, session.initialized())
    else:
        session.reset()
    return outcome


async def call_tool_once(
    url: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    protocol: str = PROTOCOL_2025_11_25,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> McpOutcome:
    """One tools/call on a session of its own (a fault that calls a damaging tool)."""
    return await _on_a_new_session(
        url, lambda session: session.tools_call(tool, arguments), protocol, headers, timeout_s
    )


async def list_tools_once(
    url: str,
    *,
    protocol: str = PROTOCOL_2025_11_25,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> McpOutcome:
    """One tools/list on a session of its own (``init`` reading a server's tools)."""
    return await _on_a_new_session(
        url, lambda session: session.tools_list(), protocol, headers, timeout_s
    )


async def _on_a_new_session(
    url: str,
    request: Callable[[McpSession], McpRequest],
    protocol: str,
    headers: Mapping[str, str] | None,
    timeout_s: float,
) -> McpOutcome:
    session = McpSession(protocol=protocol, extra_headers=dict(headers or {}))
    async with httpx2.AsyncClient(timeout=timeout_s) as client:
        opened = await open_session(client, url, session)
        if not opened.ok:
            return opened
        outcome, _ = await send(client, url, request(session))
        return outcome
