"""The ``mcp_ledger`` fixture: did every acknowledged write survive the test's faults?

Every write the test's clients got an acknowledgement for is in the ledger (the
swarm feeds it; ``write()`` adds writes of the test's own). ``check()`` reads them
back from the current primary, directly, and classifies them with the harness's own
ledger (``harness.measure.ledger``): intact, altered, lost, and the rest, with the
test's first fault as the incident.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field

import asyncpg

from harness.mcp_client.async_client import call_tool_once
from harness.mcp_client.writes import WriteTemplate, new_note
from harness.measure.ledger import LedgerClassification
from harness.measure.readback import read_all_ids, read_written
from harness.recover import app_database_dsn
from harness.testing.case import Case

CHECK_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LedgerCheck:
    """Counts of each class (``harness.measure.ledger.WriteLedger.classify``); the id
    sets are in ``classification``. ``phantom`` counts only the test's own ids (a
    shared stack holds other tests' rows too)."""

    acknowledged: int
    intact: int
    lost: int
    altered: int
    lost_after_incident: int
    phantom: int | None
    duplicate: int
    unacknowledged_present: int
    rpo_rows: int
    rpo_s: float
    classification: LedgerClassification = field(repr=False)

    @classmethod
    def of(cls, classified: LedgerClassification) -> LedgerCheck:
        return cls(
            acknowledged=classified.acknowledged,
            intact=len(classified.intact),
            lost=len(classified.lost),
            altered=len(classified.altered),
            lost_after_incident=len(classified.lost_after_incident),
            phantom=None if classified.phantom is None else len(classified.phantom),
            duplicate=len(classified.duplicate),
            unacknowledged_present=len(classified.unacknowledged_present),
            rpo_rows=classified.rpo_rows,
            rpo_s=classified.rpo_s,
            classification=classified,
        )


class Ledger:
    """The test's write ledger and its check against the current primary."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.rng = random.Random(secrets.randbits(64))

    @property
    def acknowledged(self) -> int:
        return len(self.case.ledger.acked)

    def write(self, count: int = 1) -> int:
        """``count`` writes through MCP with the scenario's ledger tool, one session each;
        returns how many were acknowledged (each one is in the ledger)."""
        session = self.case.session
        scenario = session.scenario
        template = WriteTemplate(
            scenario.ledger.tool, tuple(scenario.ledger.arguments.items()), scenario.ledger.content
        )
        acked = 0
        for _ in range(count):
            note_id, title, body = new_note(f"{self.case.id_prefix}w", self.rng)
            arguments, checksum = template.render(note_id, title, body)
            self.case.ledger.attempt(note_id, self.case.now_s())
            outcome = session.run(
                call_tool_once(
                    session.stack.endpoints.mcp_url,
                    template.tool,
                    arguments,
                    protocol=scenario.load.protocol,
                    headers=scenario.server.resolved_headers(),
                )
            )
            if outcome.ok:
                self.case.ledger.ack(note_id, checksum, self.case.now_s())
                acked += 1
        return acked

    def check(self) -> LedgerCheck:
        """Read the ledger's writes back from the current primary and classify them."""
        session = self.case.session
        return LedgerCheck.of(session.run(self._classify(), CHECK_TIMEOUT_S))

    async def _classify(self) -> LedgerClassification:
        config = self.case.session.scenario.ledger
        ledger = self.case.ledger
        dsn = app_database_dsn(self.case.session.stack.current_primary_dsn)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            written = await read_written(conn, config, sorted(ledger.attempted))
            all_ids = await read_all_ids(conn, config)
        finally:
            await conn.close()
        own = None if all_ids is None else [i for i in all_ids if i.startswith(self.case.id_prefix)]
        return ledger.classify(written, self.case.incident_s, all_ids=own)
