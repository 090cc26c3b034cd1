"""A tiny real MCP server for Locust integration tests: notes kept in memory, no database.

Its tools have the names and argument shapes of the reference server's, so the
load user's whole mix runs against it. Run it with
``python tests/integration/mini_mcp_server.py --port N`` (binds 127.0.0.1).

``--shed-flag PATH`` imitates admission control: while the file PATH exists,
every initialize is answered ``503`` with ``Retry-After: <seconds>`` (a test
creates and removes the file to shed for as long as it wants). The file holds
the seconds (default 2), optionally followed by the methods to shed instead of
initialize: ``"3 tools/list tools/call"``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# WARNING: at INFO the SDK logs every new session through rich, which slows a
# restarted server that many clients reconnect to at once.
server = MCPServer("mini-notes", log_level="WARNING")
notes: dict[str, tuple[str, str]] = {}


@server.tool()
def create_note(id: str, title: str, body: str) -> str:
    """Store a note under a client-chosen id."""
    notes[id] = (title, body)
    return id


@server.tool()
def get_note(id: str) -> dict[str, str]:
    """Return one note; an unknown id is a tool error (notes die with the process)."""
    if id not in notes:
        raise ToolError(f"no note {id!r}")
    title, body = notes[id]
    return {"id": id, "title": title, "body": body}


@server.tool()
def search_notes(query: str, limit: int = 10) -> list[str]:
    """Ids of notes whose title contains ``query``."""
    return [note_id for note_id, (title, _) in notes.items() if query in title][:limit]


@server.tool()
def notes_report() -> dict[str, int]:
    """How many notes are stored."""
    return {"notes": len(notes)}


app = server.streamable_http_app()


class ShedInitialize:
    """ASGI middleware: 503 + Retry-After to every initialize while the flag file exists."""

    def __init__(self, inner: ASGIApp, flag: Path) -> None:
        self.inner = inner
        self.flag = flag

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self.flag.exists():
            await self.inner(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        shed = self.shed()
        if shed is not None and _method_of(body) in shed[1]:
            retry_after = shed[0]
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"retry-after", retry_after.encode()), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.inner(scope, replay, send)

    def shed(self) -> tuple[str, set[str]] | None:
        """(Retry-After, methods to shed) while the flag file exists, else None."""
        try:
            words = self.flag.read_text().split()
        except FileNotFoundError:
            return None
        return (words[0] if words else "2"), set(words[1:]) or {"initialize"}


def _method_of(body: bytes) -> str | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message.get("method") if isinstance(message, dict) else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--shed-flag", type=Path, help="shed initialize while this file exists")
    args = parser.parse_args()
    served: ASGIApp = app if args.shed_flag is None else ShedInitialize(app, args.shed_flag)
    uvicorn.run(served, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
