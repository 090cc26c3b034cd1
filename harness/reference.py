"""The reference MCP server's specifics, as plain data and in one place: its tools and
the mix a simulated client calls them in, its write tool and how the ledger reads the
writes back, and its data's invariants.

They are only defaults: a user's server names its own in the scenario
(``load.tool_mix``, ``ledger``, ``integrity.checks``) and goes through exactly the same
code. Plain Python, so the Locust workers can import it too.
"""

from __future__ import annotations

OPS = ("tools/list", "create_note", "get_note", "search_notes", "notes_report")
"""What a simulated client does between think times: tools/list, or one tools/call."""

DEFAULT_TOOL_MIX = {
    "tools/list": 4.0,
    "create_note": 2.0,
    "get_note": 2.0,
    "search_notes": 1.0,
    "notes_report": 0.5,
}
"""Relative weights of ``OPS``."""

READ_TOOL_ARGUMENTS = {
    "get_note": {"id"},
    "search_notes": {"query", "limit"},
    "notes_report": set(),
}
"""The arguments a simulated client sends each read tool (chosen per call, ``load/user.py``):
a user's tool of the same name is called the same way when it needs no more than these."""

WRITE_TOOL = "create_note"
WRITE_ARGUMENTS = {
    "id": "{id}",
    "title": "{title}",
    "body": "{body}",
    "checksum": "{checksum}",
    "parent_id": "{parent_id}",
}
"""The write tool's arguments; placeholders as the ledger fills them."""
WRITE_CONTENT = "{title}\n{body}"
"""What the ledger's checksum covers."""
READ_SQL = "SELECT id, title || E'\\n' || body FROM notes WHERE id = ANY($1::text[])"
"""(id, content) of the ledger's ids, read back from the final primary."""
ALL_IDS_SQL = "SELECT id FROM notes"
"""Every row's id (phantoms: rows no client wrote)."""

INTEGRITY_CHECKS = (
    (
        "checksum",
        "SELECT id, pg_xact_commit_timestamp(xmin) AS changed_at FROM notes "
        "WHERE checksum IS NOT NULL "
        "AND checksum <> encode(sha256(convert_to(title || E'\\n' || body, 'UTF8')), 'hex')",
    ),
    (
        "title_not_blank",
        "SELECT id, pg_xact_commit_timestamp(xmin) AS changed_at FROM notes "
        "WHERE btrim(title) = ''",
    ),
    (
        "parent_exists",
        "SELECT n.id FROM notes n WHERE n.parent_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM notes p WHERE p.id = n.parent_id)",
    ),
)
"""(name, SQL selecting the violating rows) of the reference data's invariants: the
per-row checksum the client computed matches the content (a checksum rule), no blank
title (a domain rule, also enforced by a trigger that a corrupting tool can bypass),
every parent exists (a reference, kept by the application, not by a foreign key).
``parent_exists`` dates nothing: its rows are the children, whose commit time says
nothing about when their parent went."""
