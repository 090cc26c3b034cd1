"""Silently drops 1% of writes: acknowledged as created, never stored.

One write in a hundred, sampled by the hash of its id, is traced (a debug aid someone
added); the traced branch builds the reply and returns before it reaches the insert. The
caller gets the same ``created`` as for any other write. Which ids are dropped depends
only on their hash, so a run is reproducible.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (server.command): import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.gallery.common import Note, Notes, build, log, serve  # noqa: E402

TRACE_PERCENT = 1


def traced(note_id: str) -> bool:
    bucket = int.from_bytes(hashlib.sha256(note_id.encode()).digest()[:8], "big") % 100
    return bucket < TRACE_PERCENT


class TracedNotes(Notes):
    async def create_note(self, note: Note) -> dict[str, Any]:
        if traced(note.id):
            log.info("trace create_note id=%s title=%r", note.id, note.title)
            return {"id": note.id, "created": True}  # the defect: returns before the insert
        return await super().create_note(note)


if __name__ == "__main__":
    notes = TracedNotes()
    serve(build(notes, "drops-writes"), notes)
