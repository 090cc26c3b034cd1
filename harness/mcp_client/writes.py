"""The ledger's writes: how one write is made through a server's write tool, its
content and checksum (what the ledger keeps and compares after recovery).

Plain data and pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any

from harness import reference


def note_checksum(title: str, body: str) -> str:
    """Checksum of a note's content, as the write ledger stores and later compares it."""
    return content_checksum(f"{title}\n{body}")


def content_checksum(content: str) -> str:
    """sha256 hex of a write's content: what the ledger keeps and compares after recovery."""
    return hashlib.sha256(content.encode()).hexdigest()


OPTIONAL_PLACEHOLDER = "{parent_id}"
"""An argument that is exactly this placeholder is left out when the write has no parent."""


@dataclass(frozen=True)
class WriteTemplate:
    """How one write is made through any server's write tool (the scenario's ``ledger``).

    Placeholders in string arguments: ``{id}``, ``{title}``, ``{body}``, ``{checksum}``
    (of ``content``) and ``{parent_id}``. Plain replacement, not ``str.format``: a user's
    argument may hold braces of its own.
    """

    tool: str = reference.WRITE_TOOL
    arguments: tuple[tuple[str, Any], ...] = tuple(reference.WRITE_ARGUMENTS.items())
    content: str = reference.WRITE_CONTENT

    def render(
        self, write_id: str, title: str, body: str, parent_id: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """(tool arguments, checksum of the content) for one write."""
        values = {"{id}": write_id, "{title}": title, "{body}": body}
        checksum = content_checksum(_fill(self.content, values))
        values["{checksum}"] = checksum
        values[OPTIONAL_PLACEHOLDER] = parent_id or ""
        arguments = {
            name: _fill(value, values) if isinstance(value, str) else value
            for name, value in self.arguments
            if not (value == OPTIONAL_PLACEHOLDER and parent_id is None)
        }
        return arguments, checksum


_PLACEHOLDER = re.compile(r"\{(?:id|title|body|checksum|parent_id)\}")


def _fill(template: str, values: dict[str, str]) -> str:
    """One pass, so a value that itself contains ``{id}`` is left as it is."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), template)


_NOTE_WORDS = (
    "failover replica primary session storm latency ledger quorum archive "
    "backup restore promote timeline checkpoint vacuum index"
).split()


def new_note(id_prefix: str, rng: random.Random) -> tuple[str, str, str]:
    """A fresh note ``(id, title, body)``; ids are unique per prefix (64 random bits)."""
    note_id = f"{id_prefix}-{rng.getrandbits(64):016x}"
    title = " ".join(rng.choices(_NOTE_WORDS, k=3))
    body = " ".join(rng.choices(_NOTE_WORDS, k=rng.randint(5, 40)))
    return note_id, title, body


def note_search_term(rng: random.Random) -> str:
    """A word that note titles are made of, for search_notes."""
    return rng.choice(_NOTE_WORDS)
