"""MCP over httpx2 from asyncio code (the harness's probes and fault injectors).

Locust users run under gevent and have their own transport (``user.py``); the
framing both use is ``wire``. This module only sends and reads back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx2

from harness.mcp_client.wire import (
    PROTOCOL_2025_11_25,
    McpOutcome,
    McpRequest,
    McpSession,
    outcome_of,
    transport_failure,
)

T = TypeVar("T")


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

    async def call(client: httpx2.AsyncClient, session: McpSession) -> tuple[McpOutcome, None]:
        outcome, _ = await send(client, url, session.tools_call(tool, arguments))
        return outcome, None

    outcome, _ = await _on_a_new_session(url, call, protocol, headers, timeout_s)
    return outcome


MAX_TOOL_PAGES = 100
"""tools/list pages read at most (a server whose cursor never ends is not followed forever)."""


async def list_tools_once(
    url: str,
    *,
    protocol: str = PROTOCOL_2025_11_25,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> tuple[McpOutcome, list[dict[str, Any]] | None]:
    """Every tool a server lists, page after page (``nextCursor``), on a session of its
    own: (the last exchange's outcome, each named tool's entry), the tools None when a
    page failed, was not a listing, or the pages did not end within ``MAX_TOOL_PAGES``."""

    async def pages(
        client: httpx2.AsyncClient, session: McpSession
    ) -> tuple[McpOutcome, list[dict[str, Any]] | None]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            outcome, _ = await send(client, url, session.tools_list(cursor))
            page = outcome.result.get("tools")
            if not outcome.ok or not isinstance(page, list):
                return outcome, None
            tools += [t for t in page if isinstance(t, dict) and t.get("name")]
            cursor = outcome.result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                return outcome, tools
        return outcome, None

    return await _on_a_new_session(url, pages, protocol, headers, timeout_s)


async def _on_a_new_session(
    url: str,
    exchange: Callable[[httpx2.AsyncClient, McpSession], Awaitable[tuple[McpOutcome, T]]],
    protocol: str,
    headers: Mapping[str, str] | None,
    timeout_s: float,
) -> tuple[McpOutcome, T | None]:
    """``exchange`` on a session opened for it; (the failed initialize, None) when the
    session could not be opened."""
    session = McpSession(protocol=protocol, extra_headers=dict(headers or {}))
    async with httpx2.AsyncClient(timeout=timeout_s) as client:
        opened = await open_session(client, url, session)
        if not opened.ok:
            return opened, None
        return await exchange(client, session)
