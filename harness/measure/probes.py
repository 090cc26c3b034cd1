"""The two probes that time a failover from outside the load.

``WriteProbe`` writes a row every <= 50 ms through the same proxy path and DSN
the server uses, and records which node committed it: the first commit on the
promoted node gives ``db_failover_s``. ``ServiceProbe`` calls the server's
write tool through MCP: its first lasting success gives ``failover_s``. Both
stamp time with CLOCK_MONOTONIC relative to the run's start (``t0``).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import asyncpg
import httpx2

from harness.load.async_client import open_session, send
from harness.load.wire import (
    PROTOCOL_2025_11_25,
    McpSession,
    WriteTemplate,
    new_note,
)
from harness.measure.failover import ServiceProbeSample, WriteProbeSample
from harness.measure.ledger import WriteLedger

PROBE_TABLE = "harness_probe"
CREATE_PROBE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (
    seq bigint PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


@dataclass
class WriteProbe:
    """Writes ``seq`` rows through ``dsn``; each sample says which node (port) committed it."""

    dsn: str
    t0: float
    interval_s: float = 0.05
    timeout_s: float = 1.0
    samples: list[WriteProbeSample] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection | None = None
        seq = 0
        try:
            while not stop.is_set():
                started = time.monotonic()
                seq += 1
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self.dsn, timeout=self.timeout_s)
                    port = await conn.fetchval(
                        f"INSERT INTO {PROBE_TABLE} (seq) VALUES ($1) RETURNING current_setting('port')::int",
                        seq,
                        timeout=self.timeout_s,
                    )
                    self.samples.append(
                        WriteProbeSample(seq, time.monotonic() - self.t0, True, int(port))
                    )
                except (
                    TimeoutError,
                    OSError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                ) as exc:
                    self.samples.append(
                        WriteProbeSample(
                            seq, time.monotonic() - self.t0, False, None, type(exc).__name__
                        )
                    )
                    if conn is not None:
                        conn.terminate()
                        conn = None
                await _sleep_until(stop, started + self.interval_s)
        finally:
            if conn is not None:
                conn.terminate()


@dataclass
class ServiceProbe:
    """Calls the write tool through MCP at a fixed pace, re-initializing a broken session;
    every write goes into the ledger like a client's."""

    url: str
    t0: float
    ledger: WriteLedger
    interval_s: float = 0.1
    timeout_s: float = 2.0
    headers: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    protocol: str = PROTOCOL_2025_11_25
    write: WriteTemplate = field(default_factory=WriteTemplate)
    samples: list[ServiceProbeSample] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        session = McpSession(protocol=self.protocol, extra_headers=self.headers)
        async with httpx2.AsyncClient(timeout=self.timeout_s) as client:
            while not stop.is_set():
                started = time.monotonic()
                if not session.sessionless and session.session_id is None:
                    await self._handshake(client, session)
                if session.sessionless or session.session_id is not None:
                    note_id, title, body = new_note("probe", rng)
                    arguments, checksum = self.write.render(note_id, title, body)
                    self.ledger.attempt(note_id, time.monotonic() - self.t0)
                    call = session.tools_call(self.write.tool, arguments)
                    outcome, _ = await send(client, self.url, call)
                    t_s = time.monotonic() - self.t0
                    if outcome.ok:
                        self.ledger.ack(note_id, checksum, t_s)
                    self.samples.append(ServiceProbeSample(t_s, outcome.ok, outcome.error_kind))
                    if outcome.breaks_session:
                        session.reset()
                await _sleep_until(stop, started + self.interval_s)

    async def _handshake(self, client: httpx2.AsyncClient, session: McpSession) -> None:
        outcome = await open_session(client, self.url, session)
        if not outcome.ok:
            self.samples.append(
                ServiceProbeSample(time.monotonic() - self.t0, False, outcome.error_kind)
            )


async def _sleep_until(stop: asyncio.Event, deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
