"""What one test's fixtures share: its time axis, its faults, its write ledger, and the
cleanup that leaves the session's stack fit for the next test."""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from harness.chaos import FaultRecord
from harness.measure.ledger import WriteLedger
from harness.testing.stack import McpStack

BACKGROUND_WAIT_S = 60.0
"""How long the end of a test waits for a fault's background work (a promotion, a restart)."""


@dataclass
class FiredFault:
    """A fault a test fired, confirmed at ``t_fault_s`` on the test's axis; ``remainder`` is
    what the injector still does in the background (promote, restart)."""

    record: FaultRecord
    remainder: concurrent.futures.Future[None]

    @property
    def t_fault_s(self) -> float:
        assert self.record.t_fault_s is not None
        return self.record.t_fault_s


@dataclass
class Case:
    """One test's shared state. Times are seconds since ``t0`` (CLOCK_MONOTONIC, which
    the Locust processes on this machine share), like a run's axis in result.json."""

    session: McpStack
    t0: float = field(default_factory=time.monotonic)
    id_prefix: str = field(default_factory=lambda: f"pt{secrets.token_hex(3)}")
    """Every id this test's clients write starts with it: its rows among the others of
    a shared stack."""
    ledger: WriteLedger = field(default_factory=WriteLedger)
    faults: list[FiredFault] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    servers_down: set[int] = field(default_factory=set)
    """Server instances killed and not restarted yet: started again at the end."""
    on_close: list[Callable[[], None]] = field(default_factory=list)
    """Run first at the end, newest first (stopping the swarms)."""

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def event(self, label: str) -> None:
        self.events.append((self.now_s(), label))

    @property
    def confirmed_faults(self) -> list[FiredFault]:
        return [f for f in self.faults if f.record.confirmed and f.record.t_fault_s is not None]

    @property
    def incident_s(self) -> float | None:
        """The first confirmed fault's instant (the incident, for the ledger)."""
        confirmed = self.confirmed_faults
        return confirmed[0].t_fault_s if confirmed else None

    @property
    def last_fault_s(self) -> float | None:
        """The latest confirmed fault's instant (what recovery is measured from)."""
        confirmed = self.confirmed_faults
        return confirmed[-1].t_fault_s if confirmed else None

    def timeline(self) -> str:
        return "\n".join(f"t={t_s:7.2f}s  {label}" for t_s, label in self.events)

    def close(self) -> None:
        """Stop the swarms, let background fault work finish, undo what can be undone
        (toxics, disabled proxies, killed servers) and dirty the stack for what cannot
        (a killed primary). The first error is raised after everything was tried."""
        errors: list[BaseException] = []

        def attempt(step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as exc:
                errors.append(exc)

        for stop in reversed(self.on_close):
            attempt(stop)
        for fault in self.faults:
            attempt(partial(fault.remainder.result, BACKGROUND_WAIT_S))
        if any(f.record.kind == "kill_primary" for f in self.faults):
            self.session.mark_dirty("the primary was killed")
        if self.session.dirty is None:
            stack = self.session.stack
            attempt(stack.toxiproxy.reset)
            for instance in sorted(self.servers_down):
                attempt(partial(self.session.run, stack.restart_server(instance)))
        if errors:
            self.session.mark_dirty(f"cleaning up after the test failed: {errors[0]!r}")
        if self.session.dirty is not None:
            attempt(self.session.discard)
        if errors:
            raise errors[0]
