"""After a restart, refuses initialize to one client in ten: a session resume that fails.

Every client is given a cookie naming its session (``mcp_client=<process>.<n>``); HTTP
clients keep it across reconnections. A restarted process tries to resume a returning
client's session from that cookie: the sessions its predecessor had not yet checkpointed
(it checkpointed nine in ten, so every tenth, ``n % 10 == 0``, was lost) cannot be
resumed, and instead of starting a fresh session the resume path answers HTTP 503 without
Retry-After. The client retries with the same cookie and is refused every time. The
cookie also tells a restart apart: it names the process that issued it.
"""

from __future__ import annotations

import itertools
import sys
import uuid
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if not __package__:  # run as a script (server.command): import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.gallery.common import Notes, build, serve  # noqa: E402

COOKIE = "mcp_client"
LOST_EVERY = 10
PROCESS = uuid.uuid4().hex[:12]
REFUSAL = b'{"error": "session could not be resumed"}'


def cookie_of(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"cookie":
            try:
                morsel = SimpleCookie(value.decode("latin-1")).get(COOKIE)
            except CookieError:
                return None
            if morsel is not None:
                return morsel.value
    return None


def cannot_resume(cookie: str) -> bool:
    """A session issued by an earlier process and not checkpointed by it."""
    process, _, number = cookie.partition(".")
    return process != PROCESS and number.isdigit() and int(number) % LOST_EVERY == 0


class SessionCookies:
    """ASGI middleware on the MCP endpoint: issues the cookie, resumes sessions from it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.issued = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/mcp"):
            await self.app(scope, receive, send)
            return
        cookie = cookie_of(scope)
        if cookie is None:
            await self.app(scope, receive, self.setting_cookie(send))
            return
        initialize = scope["method"] == "POST" and not any(
            name == b"mcp-session-id" for name, _ in scope["headers"]
        )
        if initialize and cannot_resume(cookie):
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": REFUSAL})
            return
        await self.app(scope, receive, send)

    def setting_cookie(self, send: Send) -> Send:
        value = f"{COOKIE}={PROCESS}.{next(self.issued)}; Path=/; HttpOnly".encode()

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"set-cookie", value)]}
            await send(message)

        return send_with_cookie


if __name__ == "__main__":
    notes = Notes()
    serve(build(notes, "refuses-reinitialize"), notes, wrap=SessionCookies)
