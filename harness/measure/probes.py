"""The two probes that time a failover from outside the load.

``WriteProbe`` writes a row every <= 50 ms through the same proxy path and DSN
the server uses, and records which node committed it: the first commit on the
promoted node gives ``db_failover_s``. ``ServiceProbe`` calls the server's
write tool through MCP: its first lasting success gives ``failover_s``. Both
stamp time with CLOCK_MONOTONIC relative to the run's start (``t0``), when each attempt
was sent and when it was answered.

While they fail, both probes try again every ``retry_interval_s`` (25 ms) instead of
their interval: the first success after an outage is then sent within 25 ms of the path
coming back rather than within a whole interval, which on a loaded 2-core machine took
the errors of ``db_failover_s`` and ``failover_s`` against outages of known length past
their goals (50 ms + the probe's interval). ``python -m bench.accuracy`` measures those
errors, with ``--old-pacing`` as they were before.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass, field, replace

import asyncpg
import httpx2

from harness.config import SuccessRule
from harness.mcp_client.acks import AckRule, ack_rule_for, judge_ack
from harness.mcp_client.async_client import open_session, send
from harness.mcp_client.wire import PROTOCOL_2025_11_25, McpSession
from harness.mcp_client.writes import WriteTemplate, new_note
from harness.measure.failover import ServiceProbeSample, WriteProbeSample
from harness.measure.ledger import WriteLedger
from harness.stack.postgres import DB_ERRORS

RETRY_INTERVAL_S = 0.025
"""The probes' pace while they fail (see the module's docstring)."""
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
    retry_interval_s: float = RETRY_INTERVAL_S
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
                        # No named prepared statements: they do not survive a pooler in
                        # transaction mode (PgBouncer before 1.21).
                        conn = await asyncpg.connect(
                            self.dsn, timeout=self.timeout_s, statement_cache_size=0
                        )
                    port = await conn.fetchval(
                        f"INSERT INTO {PROBE_TABLE} (seq) VALUES ($1) RETURNING current_setting('port')::int",
                        seq,
                        timeout=self.timeout_s,
                    )
                    sample = WriteProbeSample(seq, self._now_s(), True, int(port))
                except DB_ERRORS as exc:
                    sample = WriteProbeSample(seq, self._now_s(), False, None, error_kind(exc))
                    if conn is not None:
                        conn.terminate()
                        conn = None
                self.samples.append(replace(sample, sent_s=started - self.t0))
                pace = self.interval_s if sample.ok else min(self.interval_s, self.retry_interval_s)
                await _sleep_until(stop, started + pace)
        finally:
            if conn is not None:
                conn.terminate()

    def _now_s(self) -> float:
        return time.monotonic() - self.t0


def error_kind(exc: BaseException) -> str:
    """The exception's class, with the SQLSTATE a server (Postgres or a pooler) sent."""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} {sqlstate}" if sqlstate else type(exc).__name__


def probe_id_prefix() -> str:
    """``probe-<token>``: the prefix of one probe's note ids, new for every probe (so every
    run), so two runs of a series never write the same id; look a write up by it."""
    return f"probe-{secrets.token_hex(4)}"


@dataclass
class ServiceProbe:
    """Calls the write tool through MCP at a fixed pace, re-initializing a broken session;
    every write goes into the ledger like a client's.

    A write is acknowledged (ledger ack, ok sample) only when its reply passes
    ``success_when``, the same rule the load's clients judge by (the scenario's
    ``ledger.success_when``); a result that fails it is a ``tool_error`` sample. Note
    ids are ``<id_prefix>-<n>``, n = 1, 2, ... in the order written; ``seed`` only
    chooses the notes' titles and bodies. A write that gets no reply is not sent
    again: the probe measures when writes work, not delivery.
    """

    url: str
    t0: float
    ledger: WriteLedger
    interval_s: float = 0.1
    timeout_s: float = 2.0
    retry_interval_s: float = RETRY_INTERVAL_S
    headers: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    protocol: str = PROTOCOL_2025_11_25
    write: WriteTemplate = field(default_factory=WriteTemplate)
    samples: list[ServiceProbeSample] = field(default_factory=list)
    success_when: SuccessRule | AckRule = field(default_factory=SuccessRule)
    """When the write tool's result is an acknowledgement (``harness.config.SuccessRule``,
    or the load settings' ``AckRule``)."""
    id_prefix: str = field(default_factory=probe_id_prefix)
    """Prefix of the probe's note ids: ``probe-<random token>`` unless given."""
    writes_sent: int = 0
    """How many writes the probe has sent (the last note id's number)."""
    ack_rule: AckRule = field(init=False)
    """``success_when`` as the wire's plain rule."""

    def __post_init__(self) -> None:
        self.ack_rule = AckRule.of(self.success_when)

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        session = self.new_session()
        async with self.client() as client:
            while not stop.is_set():
                started = time.monotonic()
                ok = await self.step(client, session, rng) is not None
                pace = self.interval_s if ok else min(self.interval_s, self.retry_interval_s)
                await _sleep_until(stop, started + pace)

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(timeout=self.timeout_s)

    def new_session(self) -> McpSession:
        return McpSession(protocol=self.protocol, extra_headers=self.headers)

    async def step(
        self, client: httpx2.AsyncClient, session: McpSession, rng: random.Random
    ) -> str | None:
        """One beat of the probe: a new session if it has none, then one write through the
        write tool, into the ledger. Returns the id of the write if it was acknowledged."""
        if not session.sessionless and session.session_id is None:
            sent_s = self._now_s()
            opened = await open_session(client, self.url, session)
            if not opened.ok:
                self.samples.append(
                    ServiceProbeSample(self._now_s(), False, opened.error_kind, sent_s)
                )
                return None
        note_id = self.next_note_id()
        _, title, body = new_note(self.id_prefix, rng)
        arguments, checksum = self.write.render(note_id, title, body)
        sent_s = self._now_s()
        self.ledger.attempt(note_id, sent_s)
        request = session.tools_call(self.write.tool, arguments)
        outcome, _ = await send(client, self.url, request)
        outcome = judge_ack(outcome, ack_rule_for(request, self.write.tool, self.ack_rule))
        t_s = self._now_s()
        if outcome.ok:
            self.ledger.ack(note_id, checksum, t_s)
        self.samples.append(
            ServiceProbeSample(
                t_s,
                outcome.ok,
                outcome.error_kind,
                sent_s,
                write_id=note_id if outcome.ok else None,
            )
        )
        if outcome.breaks_session:
            session.reset()
        return note_id if outcome.ok else None

    def next_note_id(self) -> str:
        self.writes_sent += 1
        return f"{self.id_prefix}-{self.writes_sent}"

    def _now_s(self) -> float:
        return time.monotonic() - self.t0


async def _sleep_until(stop: asyncio.Event, deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
