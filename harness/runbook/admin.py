"""The reference server's admin endpoint over HTTP: token-protected, loopback only.
A user's server has none: a fix that needs it fails saying so (``FixFailed``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx2

from harness.runbook.context import NO_ADMIN, RunbookContext
from harness.runbook.engine import (
    FixFailed,
)
from harness.stack import AdminEndpoint
from harness.stack.net import is_loopback_host

# -- the admin endpoint and /metrics over HTTP ------------------------------------------


class AdminRequestFailed(RuntimeError):
    """An admin request that did not answer 200; the message names the instance."""


def _require_loopback(url: str) -> None:
    """The admin token travels in clear: only to this machine."""
    host = urlsplit(url).hostname or ""
    if not is_loopback_host(host):
        raise AdminRequestFailed(
            f"refusing to send the admin token to {host or url}: the admin endpoint is "
            "loopback only"
        )


async def admin_request(
    endpoint: AdminEndpoint,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    *,
    timeout_s: float,
) -> dict[str, Any]:
    """One request to ``{endpoint.url}/{path}`` with the bearer token; its JSON reply."""
    _require_loopback(endpoint.url)
    where = f"{endpoint.name}: {method} /admin/{path}"
    try:
        async with httpx2.AsyncClient(timeout=timeout_s) as http:
            reply = await http.request(
                method,
                f"{endpoint.url}/{path}",
                json=dict(body) if body is not None else None,
                headers={"Authorization": f"Bearer {endpoint.token}"},
            )
    except httpx2.HTTPError as exc:
        raise AdminRequestFailed(f"{where}: {type(exc).__name__}: {exc}") from None
    if reply.status_code != 200:
        raise AdminRequestFailed(f"{where} answered {reply.status_code}: {reply.text[:200]}")
    answer = reply.json()
    if not isinstance(answer, dict):
        raise AdminRequestFailed(f"{where} answered {answer!r}, not a JSON object")
    return answer


async def admin_all(
    ctx: RunbookContext, method: str, path: str, body: Mapping[str, Any] | None = None
) -> list[tuple[AdminEndpoint, dict[str, Any]]]:
    """The same request to every instance's admin endpoint, in instance order. Raises
    FixFailed when there is none (a user's server) or when any instance refused; the
    message lists what the others did."""
    endpoints = ctx.stack.server_admin()
    if not endpoints:
        raise FixFailed(f"{NO_ADMIN}: {method} /admin/{path} cannot be sent")
    replies = await asyncio.gather(
        *(admin_request(e, method, path, body, timeout_s=ctx.http_timeout_s) for e in endpoints),
        return_exceptions=True,
    )
    failed = [str(r) for r in replies if isinstance(r, BaseException)]
    if failed:
        done = [e.name for e, r in zip(endpoints, replies, strict=True) if isinstance(r, dict)]
        raise FixFailed(
            f"{'; '.join(failed)} (done on: {', '.join(done) or 'none'}); send it again "
            "by hand once the instance answers"
        )
    return [(e, r) for e, r in zip(endpoints, replies, strict=True) if isinstance(r, dict)]
