"""The ``chaos`` fixture: the harness's faults, fired from a test.

Each fault is the scenario fault of the same name, fired by the harness's own
injector (``harness.chaos``) on the test's time axis: it returns once the
fault is confirmed (a killed process gone, a toxic listed by Toxiproxy), and that
instant is what ``swarm.wait_recovered`` measures from. A fault that cannot be
confirmed raises ``FaultNotConfirmed``: a test that passes against a fault that never
happened would prove nothing.

What an injector still has to do (promote the replica ``promote_after`` a primary
kill, restart a server ``restart_after`` its kill) runs in the background while the
test measures. Toxics and disabled proxies are undone at the end of their ``with``
block (or of the test); see ``harness.testing.stack`` for what a primary kill does to
the next test's stack.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from functools import partial

from harness.chaos import FaultContext, FaultRecord, run_fault
from harness.chaos.toxiproxy import toxic_name
from harness.config import Fault, KillPrimary, KillServer, ProxyDown, Scenario, ToxicFault
from harness.testing.case import Case, FiredFault

CONFIRM_TIMEOUT_S = 60.0


class FaultNotConfirmed(AssertionError):
    """The fault did not take effect: whatever the test measured next is not its effect."""


class Promote(enum.Enum):
    AS_SCENARIO = "as the scenario's recovery.promote_after"


class ActiveFault:
    """A fault in effect. As a context manager, undone when the block ends (a toxic
    removed, a proxy enabled, a server killed with ``restart_after=None`` started
    again); a primary kill has nothing to undo."""

    def __init__(self, case: Case, fired: FiredFault, undo: Callable[[], object] | None) -> None:
        self.case = case
        self.fired = fired
        self._undo = undo

    @property
    def record(self) -> FaultRecord:
        return self.fired.record

    @property
    def t_fault_s(self) -> float:
        """When it was confirmed, in seconds on the test's axis."""
        return self.fired.t_fault_s

    def undo(self) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()
            self.record.t_end_s = self.case.now_s()
            self.case.event(f"{self.record.kind} on {self.record.target} undone")

    def __enter__(self) -> ActiveFault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()

    def __repr__(self) -> str:
        return f"ActiveFault({self.record.kind} {self.record.target} at t={self.t_fault_s:.2f}s)"


class Chaos:
    """Faults on the test's stack: ``kill_primary()``, ``kill_server()``, ``toxic(...)``,
    ``proxy_down(...)``; ``faults`` lists what was fired, ``case.timeline()`` when."""

    def __init__(self, case: Case) -> None:
        self.case = case

    @property
    def faults(self) -> list[FaultRecord]:
        return [fired.record for fired in self.case.faults]

    def kill_primary(
        self, *, promote_after: float | None | Promote = Promote.AS_SCENARIO
    ) -> ActiveFault:
        """SIGKILL the primary and every process of its cluster (a dead machine).

        ``promote_after`` seconds later the replica is promoted in the background, as a
        scenario's ``recovery.promote_after`` does (the stand-in for failure detection;
        default: the scenario's, 2 s unless it says otherwise). ``None``: nobody
        promotes; call ``promote_replica()`` yourself, or let your own HA do it. The
        stack is replaced before the next test (it has no standby left)."""
        scenario = self.case.session.scenario
        if promote_after is Promote.AS_SCENARIO:
            promote_after = scenario.recovery.promote_after
        recovery = scenario.recovery.model_copy(update={"promote_after": promote_after})
        fault = KillPrimary(kind="kill_primary", at=0)
        return self._fire(fault, None, scenario.model_copy(update={"recovery": recovery}))

    def promote_replica(self) -> None:
        """Promote the standby now (after ``kill_primary(promote_after=None)``)."""
        started = time.monotonic()
        self.case.session.run(self.case.session.stack.promote_replica())
        self.case.event(f"replica promoted (took {time.monotonic() - started:.2f} s)")

    def kill_server(self, instance: int = 0, *, restart_after: float | None = 2.0) -> ActiveFault:
        """SIGKILL one MCP server instance: every session on it is gone. Started again on
        the same port ``restart_after`` seconds later in the background; ``None``: it
        stays down until ``restart_server()``, the end of a ``with`` block, or the test."""
        instances = self.case.session.scenario.server.instances
        if not 0 <= instance < instances:
            raise ValueError(f"instance {instance}: the stack runs {instances} server instance(s)")
        fault = KillServer(kind="kill_server", at=0, restart_after=restart_after, instance=instance)
        if restart_after is not None:
            return self._fire(fault, None)
        active = self._fire(fault, partial(self.restart_server, instance))
        self.case.servers_down.add(instance)
        return active

    def restart_server(self, instance: int = 0) -> None:
        started = time.monotonic()
        self.case.session.run(self.case.session.stack.restart_server(instance))
        self.case.servers_down.discard(instance)
        self.case.event(f"server {instance} restarted (took {time.monotonic() - started:.2f} s)")

    def toxic(
        self,
        proxy: str,
        toxic_type: str,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: int,
    ) -> ActiveFault:
        """A Toxiproxy toxic on one proxy (``mcp``, ``pg-primary``, ``pg-replica``,
        ``pg-replication``), e.g. ``toxic("pg-primary", "latency", latency=500)``;
        attributes as in scenarios (ms for times, KB/s for rate)."""
        fault = ToxicFault(
            kind="toxic",
            at=0,
            proxy=proxy,  # type: ignore[arg-type]  # validated by the model
            type=toxic_type,  # type: ignore[arg-type]
            stream=stream,  # type: ignore[arg-type]
            toxicity=toxicity,
            attributes=attributes,
        )
        name = toxic_name(fault, len(self.case.faults))
        toxiproxy = self.case.session.stack.toxiproxy
        return self._fire(fault, lambda: toxiproxy.remove_toxic(fault.proxy, name))

    def proxy_down(self, proxy: str) -> ActiveFault:
        """Disable a proxy: its connections dropped, new ones refused, until undone."""
        fault = ProxyDown(kind="proxy_down", at=0, proxy=proxy)  # type: ignore[arg-type]
        toxiproxy = self.case.session.stack.toxiproxy
        return self._fire(fault, lambda: toxiproxy.update_proxy(fault.proxy, enabled=True))

    def _fire(
        self, fault: Fault, undo: Callable[[], object] | None, scenario: Scenario | None = None
    ) -> ActiveFault:
        """Fire through the harness's injector; return once it reports the fault (its
        first event), leaving the rest of its work to the background."""
        case, session = self.case, self.case.session
        record = FaultRecord.planned(fault)
        reported = threading.Event()

        def say(_: str) -> None:
            reported.set()

        remainder = session.loop.submit(
            run_fault(
                fault,
                record,
                FaultContext(
                    session.stack,
                    scenario or session.scenario,
                    case.t0,
                    len(case.faults),
                    case.events,
                    say,
                ),
            )
        )
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        while not reported.wait(0.02):
            if remainder.done():
                remainder.result()  # the injector's own error, if it failed
                break
            if time.monotonic() > deadline:
                remainder.cancel()
                raise FaultNotConfirmed(
                    f"{record.kind}: no confirmation in {CONFIRM_TIMEOUT_S:g} s"
                )
        case.faults.append(FiredFault(record, remainder))
        if not record.confirmed or record.t_fault_s is None:
            raise FaultNotConfirmed(
                f"{record.kind} on {record.target} did not take effect: {record.detail}"
            )
        return ActiveFault(case, case.faults[-1], undo)
