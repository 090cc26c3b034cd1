"""tools/list queries the database on every call: slow, and slowest when everyone reconnects.

Each tool's description lists the columns of the table it works on, read from the live
catalog so that it never goes stale: on every tools/list, for each tool in turn, the server
takes a pool connection and reads the whole ``information_schema`` column catalog (every
schema, with key constraints: about 2,000 rows and tens of milliseconds of database CPU),
then keeps that table's columns. Nothing is cached. A few tools/list a second go unnoticed;
every client listing tools at once after a restart queues them all behind the catalog.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mcp.server import MCPServer
from mcp.types import Tool

if not __package__:  # run as a script (server.command): import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.gallery.common import DatabaseFailure, Notes, build, serve  # noqa: E402

CATALOG_SQL = """
SELECT c.table_schema, c.table_name, c.column_name, c.data_type, tc.constraint_type
FROM information_schema.columns c
LEFT JOIN information_schema.key_column_usage k
  ON k.table_schema = c.table_schema AND k.table_name = c.table_name
 AND k.column_name = c.column_name
LEFT JOIN information_schema.table_constraints tc
  ON tc.constraint_schema = k.constraint_schema AND tc.constraint_name = k.constraint_name
ORDER BY c.table_schema, c.table_name, c.ordinal_position
"""


class CatalogServer(MCPServer):
    def __init__(self, notes: Notes) -> None:
        super().__init__("slow-tools-list", log_level="WARNING")
        self.notes = notes

    async def list_tools(self) -> list[Tool]:
        return [await self.described(tool) for tool in await super().list_tools()]

    async def described(self, tool: Tool, table: str = "notes") -> Tool:
        """``tool`` with the columns of ``table`` in its description."""
        try:
            rows: list[Any] = await self.notes.run(lambda conn: conn.fetch(CATALOG_SQL))
        except DatabaseFailure:
            return tool  # described without the columns
        columns = ", ".join(
            f"{row['column_name']} {row['data_type']}"
            + (f" ({row['constraint_type'].lower()})" if row["constraint_type"] else "")
            for row in rows
            if row["table_name"] == table and row["table_schema"] != "information_schema"
        )
        return tool.model_copy(update={"description": f"{tool.description} {table}: {columns}."})


if __name__ == "__main__":
    notes = Notes()
    serve(build(notes, CatalogServer(notes)), notes)
