"""Acknowledges a write before it is committed: a write-behind buffer flushed every 200 ms.

create_note appends the note to an in-memory buffer and answers "created" at once; a
background task inserts the buffer in one transaction every ``FLUSH_INTERVAL_S``. A batch
that fails (the primary died, no primary yet) is logged and dropped, and so is whatever the
process held when it died: every such note was acknowledged and is never stored. get_note
looks in the buffer first, so a client reading its own writes sees nothing wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (server.command): import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.gallery.common import DatabaseFailure, Note, Notes, build, log, serve  # noqa: E402

FLUSH_INTERVAL_S = 0.2


class WriteBehindNotes(Notes):
    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Note] = []
        self.flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.flusher = asyncio.create_task(self.flush_forever())

    async def close(self) -> None:
        if self.flusher is not None:
            self.flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.flusher
        await super().close()

    async def create_note(self, note: Note) -> dict[str, Any]:
        self.pending.append(note)
        return {"id": note.id, "created": True}

    async def get_note(self, note_id: str) -> dict[str, Any]:
        for note in self.pending:
            if note.id == note_id:
                return {"id": note.id, "title": note.title, "body": note.body}
        return await super().get_note(note_id)

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            batch, self.pending = self.pending, []
            if not batch:
                continue
            try:
                await self.run(functools.partial(self.insert_batch, batch=batch))
            except DatabaseFailure as exc:
                log.warning("flush of %d notes failed, dropped: %s", len(batch), exc)

    async def insert_batch(self, conn: Any, batch: list[Note]) -> None:
        async with conn.transaction():
            await conn.executemany(self.insert_sql, [note.row() for note in batch])


if __name__ == "__main__":
    notes = WriteBehindNotes()
    serve(build(notes, "ack-before-commit"), notes)
