"""Writes a note twice when a write is retried: no unique key on id, a plain INSERT.

The table was created without a key on ``id`` and create_note is a plain INSERT, so any
retry of a write that had in fact been committed stores a second row: a client re-sending a
write whose reply it lost (an at-least-once client after a dropped connection), and the
server's own retry, which re-runs an insert that did not answer within ``WRITE_DEADLINE_S``
(sized from the healthy p99 of a few ms) although the database may have committed it and
only its answer was late, as it is whenever the database is slow.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (server.command): import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.gallery.common import DatabaseFailure, Note, Notes, build, log, serve  # noqa: E402

WRITE_DEADLINE_S = 0.1
ATTEMPTS = 3


class RetryingNotes(Notes):
    primary_key = False
    insert_sql = (
        "INSERT INTO notes (id, title, body, checksum, parent_id) VALUES ($1, $2, $3, $4, $5)"
    )

    async def insert(self, note: Note) -> bool:
        async def insert_once(conn: Any) -> str:
            return await conn.execute(self.insert_sql, *note.row(), timeout=WRITE_DEADLINE_S)

        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self.run(insert_once) == "INSERT 0 1"
            except DatabaseFailure as exc:
                if not isinstance(exc.__cause__, TimeoutError) or attempt == ATTEMPTS:
                    raise
                log.warning("insert of %s timed out (attempt %d), retrying", note.id, attempt)
        raise AssertionError("unreachable")


if __name__ == "__main__":
    notes = RetryingNotes()
    serve(build(notes, "duplicate-on-retry"), notes)
