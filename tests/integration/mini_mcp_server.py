"""A tiny real MCP server for Locust integration tests: notes kept in memory, no database.

Its tools have the names and argument shapes of the reference server's, so the
load user's whole mix runs against it. Run it with
``python tests/integration/mini_mcp_server.py --port N`` (binds 127.0.0.1).
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
