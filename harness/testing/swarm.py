"""The ``mcp_swarm`` fixture: real Locust MCP clients on the test's stack, and what they saw.

The clients are the harness's own (``harness.load``): a Locust master and worker
processes started through the stack's process registry, never Locust in the pytest
process. Their records (every request, every broken and restored session, every
acknowledged write) are read back as they come and judged with the harness's own
measures (``harness.measure.reconnect``, ``harness.measure.failover``), so a test's
figures mean what the same names mean in result.json. As in a run, the service's
recovery is seen by the harness's service probe (``harness.measure.probes``), which
writes through MCP at a fixed pace while the swarm runs: judged on the clients' own
writes, one sporadic failure among hundreds of clients would keep any window from
being clean, and the answer would depend on the number of clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.load.records import Request, of_kind, of_kinds
from harness.load.settings import LoadSettings
from harness.load.swarm import RecordTail, Swarm, SwarmShape, settings_for
from harness.measure.failover import (
    DEFAULT_CADENCE,
    ProbeCadence,
    ServiceProbeSample,
    stable_from_s,
)
from harness.measure.histogram import LatencyHistogram
from harness.measure.probes import ServiceProbe
from harness.measure.reconnect import ReconnectFigures, reconnect_metrics
from harness.testing.case import Case

START_TIMEOUT_S = 45.0
"""For the Locust master to see its workers and start (it waits 30 s for them)."""
SPAWN_GRACE_S = 30.0
RECORD_LAG_S = 0.5
"""Records reach the file in batches (every 0.25 s): the last half second is not judged yet."""
POLL_S = 0.2
PROBE_STOP_S = 15.0


@dataclass(frozen=True)
class Recovery:
    """What ``wait_recovered`` saw, from the fault (``t_fault_s``, the test's axis) on.

    ``recovered``: every client whose session broke after the fault listed tools again,
    and the service came back: the service probe's writes through MCP succeeded
    without a failure for ``stable_s``, before the timeout. ``failover_s`` is the
    fault to the first write of that window (the harness's ``failover_s``).
    ``reconnect_success_rate`` is the share of broken sessions (every break from the
    fault's start on, a client's second one too) that worked again within the reconnect
    window, and 1.0 when no session broke (nothing needed to reconnect: a primary loss
    behind a server that keeps its sessions breaks none; ``clients_broken`` tells).
    Every break seen so far is judged: one still out counts against the rate until it is
    back. Time to reconnect is per break, measured by the client (p50/p95/p99/max); a
    figure that lands on a break not back within the window is None, named in
    ``reconnect["over_window_s"]``.
    ``requests``, ``errors`` / ``errors_by_kind``: the clients' requests since the fault.
    """

    recovered: bool
    t_fault_s: float
    waited_s: float
    clients_broken: int
    clients_reconnected: int
    reconnect_success_rate: float
    time_to_reconnect_s: dict[str, float | None]
    all_reconnected_s: float | None
    failover_s: float | None
    requests: int
    errors: int
    errors_by_kind: dict[str, int]
    reconnect: ReconnectFigures = field(repr=False)
    """The harness's full reconnect figures (attempts per client, histogram, ...)."""

    @property
    def clients_not_reconnected(self) -> int:
        return self.clients_broken - self.clients_reconnected


@dataclass(frozen=True)
class RecoveryRules:
    """What a recovery is judged by: the stability window the service probe's writes must
    hold (``stable_s``), the reconnect window each broken client has (``window_s``),
    whether the protocol has sessions to break, and the probe's cadence."""

    stable_s: float
    window_s: float
    sessions: bool = True
    cadence: ProbeCadence = DEFAULT_CADENCE


def recovery_of(
    records: list[dict[str, Any]],
    service: list[ServiceProbeSample],
    t_fault_s: float,
    observed_until_s: float,
    rules: RecoveryRules,
    *,
    waited_s: float = 0.0,
    fault_started_s: float | None = None,
) -> Recovery:
    """Judge the clients' records and the service probe's samples (``t_s`` on the test's
    axis) seen up to ``observed_until_s``. Sessions broken from ``fault_started_s`` (when
    the injector began the fault, before ``t_fault_s`` confirmed it; default ``t_fault_s``)
    belong to the fault."""
    seen = [r for r in records if r["t_s"] <= observed_until_s]
    reconnect = reconnect_metrics(
        of_kinds(seen, "broken", "reconnected", "req"),
        t_fault_s if fault_started_s is None else min(fault_started_s, t_fault_s),
        rules.window_s,
        sessions=rules.sessions,
    )
    probed = [sample for sample in service if sample.t_s <= observed_until_s]
    stable = stable_from_s(
        probed,
        t_fault_s,
        rules.stable_s,
        observed_until_s,
        cadence=rules.cadence,
    )
    after = [r for r in of_kind(seen, "req") if r["t_s"] >= t_fault_s]
    errors = Counter(str(r.get("err") or "unknown") for r in after if not r["ok"])
    broken = reconnect["clients_broken"]
    return Recovery(
        recovered=stable is not None and reconnect["clients_not_reconnected"] == 0,
        t_fault_s=t_fault_s,
        waited_s=waited_s,
        clients_broken=broken,
        clients_reconnected=reconnect["clients_reconnected"],
        # None exactly when no session broke: nothing needed to reconnect
        reconnect_success_rate=1.0
        if reconnect["success_rate"] is None
        else reconnect["success_rate"],
        time_to_reconnect_s=reconnect["time_to_reconnect_s"],
        all_reconnected_s=reconnect["all_reconnected_s"],
        failover_s=None if stable is None else stable - t_fault_s,
        requests=len(after),
        errors=sum(errors.values()),
        errors_by_kind=dict(errors),
        reconnect=reconnect,
    )


@dataclass(frozen=True)
class RequestStats:
    """The requests the clients completed in [``start_s``, ``end_s``) on the test's axis.

    Methods are named as in the records: ``tools/list``, ``initialize``,
    ``notifications/initialized``, ``tools/call:<tool>``; ``None`` means all of them.
    """

    start_s: float
    end_s: float
    requests: list[Request] = field(repr=False)

    def _of(self, method: str | None) -> list[Request]:
        return [r for r in self.requests if method is None or r["m"] == method]

    def count(self, method: str | None = None) -> int:
        return len(self._of(method))

    def errors(self, method: str | None = None) -> int:
        return sum(1 for r in self._of(method) if not r["ok"])

    def errors_by_kind(self, method: str | None = None) -> dict[str, int]:
        return dict(
            Counter(str(r.get("err") or "unknown") for r in self._of(method) if not r["ok"])
        )

    def percentile_ms(self, method: str | None, percentile: float) -> float | None:
        """Latency percentile of the successful requests (None when there were none)."""
        ok = (r["ms"] for r in self._of(method) if r["ok"])
        return LatencyHistogram.of(ok).percentile_ms(percentile)

    def methods(self) -> list[str]:
        return sorted({r["m"] for r in self.requests})

    def __str__(self) -> str:
        lines = [f"requests in [{self.start_s:.2f} s, {self.end_s:.2f} s):"]
        for method in self.methods():
            p99 = self.percentile_ms(method, 99)
            lines.append(
                f"  {method}: {self.count(method)}, {self.errors(method)} failed "
                f"{self.errors_by_kind(method) or ''}, p99 "
                + ("-" if p99 is None else f"{p99:.0f} ms")
            )
        return "\n".join(lines)


class SwarmRun:
    """One swarm of a test: started on enter (once its users are spawned and ran
    ``warmup_s``), stopped on exit. Bounded in time by itself: Locust stops after
    ``run_time_s`` even if nobody stops it."""

    def __init__(
        self,
        case: Case,
        settings: LoadSettings,
        *,
        users: int,
        requested_users: int,
        spawn_rate: float,
        run_time_s: float,
        warmup_s: float,
        workers: int,
    ) -> None:
        self.case = case
        self.settings = settings
        self.users = users
        self.requested_users = requested_users
        """What the test asked for; ``users`` is less when ``--mcp-max-users`` capped it."""
        self.spawn_rate = spawn_rate
        self.run_time_s = run_time_s
        self.warmup_s = warmup_s
        self.workers = workers
        self.records: list[dict[str, Any]] = []
        self.swarm: Swarm | None = None
        self.tail: RecordTail | None = None
        self.probe: ServiceProbe | None = None
        self.probe_stop: asyncio.Event | None = None
        self.probe_task: concurrent.futures.Future[None] | None = None
        self.stopped = False

    @property
    def running(self) -> bool:
        return self.swarm is not None and self.swarm.running

    def start(self) -> SwarmRun:
        stack = self.case.session.stack
        mcp = urlsplit(stack.endpoints.mcp_url)
        self.swarm = Swarm(
            stack.registry,
            self.settings,
            SwarmShape(
                base_url=f"{mcp.scheme}://{mcp.netloc}",
                users=self.users,
                spawn_rate=self.spawn_rate,
                run_time_s=self.run_time_s,
                workers=self.workers,
            ),
        )
        Path(self.settings.records_path).parent.mkdir(parents=True, exist_ok=True)
        self.tail = self.swarm.tail()
        self.case.on_close.append(self.stop)
        self.swarm.start()
        self._wait_for("users", START_TIMEOUT_S, "the load did not start (workers did not connect)")
        self.case.event(f"swarm of {self.users} users started")
        self._start_probe()
        spawn_s = self.users / self.spawn_rate + SPAWN_GRACE_S
        self._wait_for("spawned", spawn_s, f"{self.users} users were not spawned")
        self.case.event(f"{self.users} users spawned")
        time.sleep(self.warmup_s)
        return self

    def _start_probe(self) -> None:
        """The harness's service probe, on the session's loop, for as long as the swarm runs."""
        session = self.case.session
        scenario = session.scenario
        self.probe = ServiceProbe(
            url=session.stack.endpoints.mcp_url,
            t0=self.case.t0,
            ledger=self.case.ledger,
            interval_s=scenario.probes.service_interval,
            timeout_s=scenario.service_timeout_s,
            headers=self.settings.headers,
            seed=secrets.randbits(32),
            protocol=self.settings.protocol,
            write=self.settings.write_template(),
            success_when=self.settings.ack_rule(),
        )
        self.probe_stop = asyncio.Event()
        self.probe_task = session.loop.submit(self.probe.run(self.probe_stop))

    def _stop_probe(self) -> None:
        if self.probe_stop is None or self.probe_task is None:
            return
        self.case.session.loop.loop.call_soon_threadsafe(self.probe_stop.set)
        self.probe_task.result(PROBE_STOP_S)

    def _wait_for(self, kind: str, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(r.get("k") == kind for r in self.poll()):
            if not self.running or time.monotonic() > deadline:
                master = self.swarm.master if self.swarm else None
                log = master.log_tail(30) if master is not None else ""
                self.stop()
                raise RuntimeError(f"mcp_swarm: {what} within {timeout_s:g} s. Master log:\n{log}")
            time.sleep(0.05)

    def poll(self) -> list[dict[str, Any]]:
        """Read the records that came since the last call; feed writes to the ledger."""
        if self.tail is None:
            return []
        new = self.tail.read_new()
        ledger, t0 = self.case.ledger, self.case.t0
        for record in new:
            record["t_s"] = record["t"] - t0
            if record.get("k") == "write":
                ledger.ack(record["id"], record["sum"], record["t_s"])
            elif record.get("k") == "write_attempt":
                ledger.attempt(record["id"], record["t_s"])
        self.records.extend(new)
        return new

    def stats(self, since_s: float | None = None, until_s: float | None = None) -> RequestStats:
        """Requests completed in [since_s, until_s) on the test's axis (default: all so far)."""
        self.poll()
        start = since_s if since_s is not None else 0.0
        end = until_s if until_s is not None else self.case.now_s()
        requests = [r for r in of_kind(self.records, "req") if start <= r["t_s"] < end]
        return RequestStats(start, end, requests)

    def observe(self, seconds: float) -> RequestStats:
        """Let the clients run ``seconds`` more; the requests they completed meanwhile."""
        start = self.case.now_s()
        time.sleep(seconds + RECORD_LAG_S)
        return self.stats(start, start + seconds)

    def wait_recovered(
        self, timeout: float = 30.0, *, since_s: float | None = None, stable_s: float | None = None
    ) -> Recovery:
        """Block until the clients recovered from the test's latest fault (or ``since_s``
        on the test's axis), or ``timeout`` seconds passed; see ``Recovery``.
        ``stable_s``: default the scenario's ``windows.stability``."""
        t_fault = since_s if since_s is not None else self.case.last_fault_s
        if t_fault is None:
            raise RuntimeError(
                "wait_recovered: no fault was fired in this test; fire one with the chaos "
                "fixture first, or pass since_s= (seconds on the test's axis)"
            )
        confirmed = self.case.confirmed_faults
        fault_started_s = (
            confirmed[-1].record.t_started_s if since_s is None and confirmed else None
        )
        scenario = self.case.session.scenario
        rules = RecoveryRules(
            stable_s=scenario.windows.stability if stable_s is None else stable_s,
            window_s=scenario.windows.reconnect,
            sessions=self.settings.protocol != "2026-07-28",
            cadence=ProbeCadence(scenario.probes.service_interval, scenario.service_timeout_s),
        )
        started = time.monotonic()
        while True:
            self.poll()
            result = recovery_of(
                self.records,
                list(self.probe.samples) if self.probe is not None else [],
                t_fault,
                self.case.now_s() - RECORD_LAG_S,
                rules,
                waited_s=time.monotonic() - started,
                fault_started_s=fault_started_s,
            )
            if result.recovered or not self.running or time.monotonic() - started >= timeout:
                self.case.event(f"wait_recovered: {result}")
                return result
            time.sleep(POLL_S)

    def stop(self) -> None:
        """Stop the Locust processes (idempotent) and read their last records."""
        if self.stopped or self.swarm is None:
            return
        self.stopped = True
        try:
            self._stop_probe()
        finally:
            self.swarm.stop()
            self.poll()
        self.case.event(f"swarm of {self.users} users stopped")

    def __enter__(self) -> SwarmRun:
        return self.start() if self.swarm is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SwarmRun(users={self.users}, running={self.running})"


class SwarmFactory:
    """``mcp_swarm(users=500)``: a ``SwarmRun`` to use as ``with``; its clients follow the
    scenario's ``load`` section, any ``LoadSettings`` field can be overridden by name
    (``think_time_s=(0.5, 1.0)``, ``tool_mix={...}``, ``protocol=...``)."""

    def __init__(self, case: Case, max_users: int | None) -> None:
        self.case = case
        self.max_users = max_users
        self.runs: list[SwarmRun] = []

    def __call__(
        self,
        users: int = 100,
        *,
        spawn_rate: float | None = None,
        run_time_s: float = 120.0,
        warmup_s: float = 1.0,
        workers: int | None = None,
        **load: Any,
    ) -> SwarmRun:
        if any(run.running for run in self.runs):
            raise RuntimeError("mcp_swarm: one swarm at a time per test; stop the other first")
        scenario = self.case.session.scenario
        records = (
            Path(self.case.session.stack.registry.run_dir)
            / "pytest"
            / f"{self.case.id_prefix}-swarm{len(self.runs)}.jsonl"
        )
        prefix = f"{self.case.id_prefix}s{len(self.runs)}"
        settings = dataclasses.replace(settings_for(scenario, records, prefix), **load)
        capped = min(users, self.max_users) if self.max_users else users
        run = SwarmRun(
            self.case,
            settings,
            users=capped,
            requested_users=users,
            spawn_rate=spawn_rate or float(min(capped, 100)),
            run_time_s=run_time_s,
            warmup_s=warmup_s,
            workers=workers or scenario.load.workers,
        )
        self.runs.append(run)
        return run
