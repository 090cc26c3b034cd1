"""Reports a failed write inside a normal result, and never reopens its one connection.

Like the third-party database servers it is modelled on, every tool catches every
exception and returns ``{"success": false, "error": "Connection failed: ..."}`` as its
normal result (never ``isError``), and all calls share one database connection opened at
start. Once that connection is gone (the primary died) it is never reopened: every later
write fails, in band, until the process is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import asyncpg

if not __package__:  # run as a script (server.command): import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.gallery.common import (  # noqa: E402
    COMMAND_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    SELECT_SQL,
    Note,
    Notes,
    build,
    note_of,
    serve,
)


class OneConnectionNotes(Notes):
    def __init__(self) -> None:
        super().__init__()
        self.conn: asyncpg.Connection | None = None
        self.conn_lock = asyncio.Lock()  # one connection runs one statement at a time

    async def start(self) -> None:
        self.conn = await asyncpg.connect(
            self.dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S
        )
        await self.create_table(self.conn)

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), 3.0)

    async def create_note(self, note: Note) -> dict[str, Any]:
        assert self.conn is not None
        try:
            async with self.conn_lock:
                await self.conn.execute(self.insert_sql, *note.row())
        except Exception as exc:
            return {"success": False, "error": f"Connection failed: {exc}"}
        return {"success": True, "id": note.id}

    async def get_note(self, note_id: str) -> dict[str, Any]:
        assert self.conn is not None
        try:
            async with self.conn_lock:
                row = await self.conn.fetchrow(SELECT_SQL, note_id)
        except Exception as exc:
            return {"success": False, "error": f"Connection failed: {exc}"}
        if row is None:
            return {"success": False, "error": f"Note not found: {note_id}"}
        return {"success": True, "note": note_of(row)}


if __name__ == "__main__":
    notes = OneConnectionNotes()
    serve(build(notes, "in-band-failure"), notes)
