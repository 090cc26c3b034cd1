"""Reading written rows back from a database, the way the scenario's ``ledger`` says.

The same queries serve the final check after the run and the search for the
earliest damage before a restore, for the reference server and for a user's.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from harness.config import LedgerConfig
from harness.mcp_client.writes import content_checksum

READ_BATCH = 5000
"""Ids per ``read_sql`` call: one round trip each, bounded parameter size."""


async def read_written(
    conn: asyncpg.Connection, config: LedgerConfig, ids: Sequence[str], timeout_s: float = 60
) -> list[tuple[str, str]]:
    """(id, checksum of the content read back) for those of ``ids`` the table holds."""
    rows: list[tuple[str, str]] = []
    for start in range(0, len(ids), READ_BATCH):
        batch = list(ids[start : start + READ_BATCH])
        for record in await conn.fetch(config.read_sql, batch, timeout=timeout_s):
            rows.append((str(record[0]), content_checksum(str(record[1]))))
    return rows


async def read_all_ids(
    conn: asyncpg.Connection, config: LedgerConfig, timeout_s: float = 60
) -> list[str] | None:
    """Every id in the table (for phantoms), or None when the scenario gives no query."""
    if config.all_ids_sql is None:
        return None
    return [str(r[0]) for r in await conn.fetch(config.all_ids_sql, timeout=timeout_s)]
