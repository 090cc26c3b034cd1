"""Measurement truth: the harness's own probes against faults whose truth is known.

Outages: both Postgres hops of the server's DSN (the ``pg-primary`` and ``pg-replica``
proxies; the write probe uses the same DSN) are disabled at an instant stamped on the
probes' clock (CLOCK_MONOTONIC relative to ``t0``, as ``RunClock``) and enabled again
after a known time. By the definitions in docs/measurements.md:

- ``db_failover_s`` = t_fault -> first write committed after it, seen by a write probe
  writing every <= 50 ms: its truth is the outage length (the path is back, and the same
  node takes the write), measured late by at most one probe interval plus one write;
- ``failover_s`` = t_fault -> first successful write tool call through MCP after which
  writes keep succeeding for the stability window: its truth is the outage length too
  (the reference server reconnects on the next call), measured late by at most one
  service probe interval plus one call.

The goal for each error (measured - injected) is +-50 ms plus the probe's interval.

Lost writes: the WAL stream to the replica is stopped (the ``pg-replication`` proxy
disabled, confirmed by the primary's ``pg_stat_replication``), N writes are acknowledged
through MCP, the replica is shown not to have them (its receive LSN behind the primary's,
the ids absent on it), the primary is SIGKILLed and the replica promoted: exactly those N
acknowledged writes are lost, and the ledger read back from the promoted node must say
so, id for id.

``python -m bench.accuracy`` (about 75 s on a 2-core machine; ``--old-pacing``: the probes
as they were before they retried every 25 ms while failing).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import asyncpg
import httpx2

from bench.common import Figure, report
from harness.config import LedgerConfig, Scenario
from harness.mcp_client.wire import McpSession
from harness.measure import failover as harness_measures
from harness.measure.clock import RunClock
from harness.measure.failover import ServiceProbeSample, WriteProbeSample
from harness.measure.ledger import WriteLedger
from harness.measure.probes import (
    CREATE_PROBE_TABLE,
    RETRY_INTERVAL_S,
    ServiceProbe,
    WriteProbe,
)
from harness.measure.readback import read_written
from harness.recover import app_database_dsn
from harness.stack.local import LocalStack
from harness.stack.postgres import APP_DATABASE, PostgresCluster
from harness.stack.toxiproxy import ToxiproxyClient

BENCH = "accuracy"
OUTAGES_S = (0.2, 0.2, 0.2, 0.2, 0.2, 1.0, 1.0, 1.0, 5.0)
DOWN_ORDER = ("pg-replica", "pg-primary")
"""Disabled in this order and enabled in the reverse: the write path (the DSN's read-write
host) is down from ``pg-primary``'s disable to its enable, the instants stamped."""
WRITE_INTERVAL_S = 0.05
WRITE_TIMEOUT_S = 1.0
SERVICE_INTERVAL_S = 0.1
SERVICE_TIMEOUT_S = 5.0
STABILITY_S = 5.0
"""The stability window of ``failover_s`` (the scenarios' default)."""
SETTLE_S = STABILITY_S + 1.0
"""From an outage's end to the next outage: the window fits before the next fault."""
TOLERANCE_S = 0.05
LOST_BEFORE_STALL = 5
LOST_AFTER_STALL = 20


def accuracy_scenario() -> Scenario:
    """The reference server; the standby retries its WAL source every 100 ms (as the
    shipped primary_kill scenario), so a promotion does not wait out the stock 5 s."""
    return Scenario.model_validate(
        {"name": "accuracy", "postgres": {"settings": {"wal_retrieve_retry_interval": "100ms"}}}
    )


def goal_s(interval_s: float) -> float:
    return TOLERANCE_S + interval_s


def goal_text(interval_s: float) -> str:
    return f"|error| <= 50 ms + probe interval ({goal_s(interval_s) * 1000:.0f} ms)"


@dataclass(frozen=True)
class Outage:
    """One injected outage on the run's axis (seconds after ``t0``)."""

    planned_s: float
    t_fault_s: float
    """pg-primary's disable answered: the fault is in effect (the harness's t_fault)."""
    t_restore_s: float
    """pg-primary's enable answered: the write path is back."""
    call_s: float
    """The longest of the two Toxiproxy calls: how uncertain each instant is."""

    @property
    def truth_s(self) -> float:
        return self.t_restore_s - self.t_fault_s


@dataclass(frozen=True)
class Counted:
    """The probe sample a metric was read from."""

    sent_s: float | None
    t_s: float


@dataclass(frozen=True)
class OutageMeasure:
    outage: Outage
    db_failover_s: float | None
    failover_s: float | None
    writes_in_outage: int
    """Probe writes sent after the fault and committed before the restore: none, if the
    fault took effect."""
    in_flight_at_fault: int = 0
    """Probe writes sent before the fault and acknowledged after it: they may have
    committed before it, and the harness must not count them as the first after it."""
    first_service_write_s: float | None = None
    """t_fault -> first successful service write sent after it (the end of the
    ``disruption`` phase); below failover_s when a failure followed it in the window."""
    counted: dict[str, Counted] = field(default_factory=dict)
    """Per metric, the sample it was read from."""

    def measured(self, metric: str) -> float | None:
        return self.db_failover_s if metric == "db_failover_s" else self.failover_s

    def error_s(self, metric: str) -> float | None:
        """Measured minus injected (both are the outage length by definition)."""
        value = self.measured(metric)
        return None if value is None else value - self.outage.truth_s

    def split_s(self, metric: str) -> tuple[float | None, float | None]:
        """The error in two: restore -> the counted write was sent (the probe's pace, and
        failures after the restore), and sent -> acknowledged (one write's time)."""
        counted = self.counted.get(metric)
        if counted is None or counted.sent_s is None:
            return None, None
        return counted.sent_s - self.outage.t_restore_s, counted.t_s - counted.sent_s


METRICS = (("db_failover_s", WRITE_INTERVAL_S), ("failover_s", SERVICE_INTERVAL_S))
"""Each measured metric, with the interval of the probe that measures it."""


def _flip(
    toxiproxy: ToxiproxyClient, names: Sequence[str], enabled: bool, t0: float
) -> list[tuple[float, float]]:
    """Set each proxy's state in turn; (sent, answered) of each call on the run's axis.
    Runs in a thread: the stamps are taken right around the calls, not when the event
    loop gets to them."""
    stamps = []
    for name in names:
        sent = time.monotonic()
        state = toxiproxy.update_proxy(name, enabled=enabled)
        answered = time.monotonic()
        if state.enabled != enabled:
            raise RuntimeError(f"Toxiproxy left {name} enabled={state.enabled}")
        stamps.append((sent - t0, answered - t0))
    return stamps


async def inject_outage(toxiproxy: ToxiproxyClient, length_s: float, t0: float) -> Outage:
    """Both Postgres hops down for ``length_s``, measured from pg-primary's disable."""
    down = await asyncio.to_thread(_flip, toxiproxy, DOWN_ORDER, False, t0)
    t_fault = down[-1][1]
    await asyncio.sleep(max(0.0, t0 + t_fault + length_s - time.monotonic()))
    up = await asyncio.to_thread(_flip, toxiproxy, DOWN_ORDER[::-1], True, t0)
    (primary_sent, primary_answered) = up[0]
    calls = [down[-1][1] - down[-1][0], primary_answered - primary_sent]
    return Outage(length_s, t_fault, primary_answered, max(calls))


def measure_outage(
    outage: Outage,
    watched_until_s: float,
    writes: Sequence[WriteProbeSample],
    service: Sequence[ServiceProbeSample],
    port: int,
) -> OutageMeasure:
    """What the harness's own functions make of the probes' samples for one outage; the
    service probe is judged only up to the next outage (``watched_until_s``)."""
    t_fault = outage.t_fault_s
    first = harness_measures.first_write_on(writes, t_fault, port)
    stable = harness_measures.stable_from_s(
        service,
        t_fault,
        STABILITY_S,
        watched_until_s,
        cadence=harness_measures.ProbeCadence(SERVICE_INTERVAL_S, SERVICE_TIMEOUT_S),
    )
    counted = {
        "db_failover_s": first,
        "failover_s": next((c for c in service if c.ok and c.t_s == stable), None),
    }
    in_outage = sum(
        1
        for s in writes
        if s.ok
        and s.sent_s is not None
        and t_fault <= s.sent_s
        and s.t_s < outage.t_restore_s - outage.call_s
    )
    in_flight = sum(
        1 for s in writes if s.ok and s.sent_s is not None and s.sent_s < t_fault <= s.t_s
    )
    return OutageMeasure(
        outage,
        harness_measures.db_failover_s(writes, t_fault, port),
        None if stable is None else stable - t_fault,  # failover_s, as the harness defines it
        writes_in_outage=in_outage,
        in_flight_at_fault=in_flight,
        first_service_write_s=_since(
            harness_measures.first_service_write_s(service, t_fault), t_fault
        ),
        counted={m: Counted(c.sent_s, c.t_s) for m, c in counted.items() if c is not None},
    )


def _since(t_s: float | None, origin_s: float) -> float | None:
    return None if t_s is None else t_s - origin_s


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run_outages(
    stack: LocalStack,
    lengths: Sequence[float],
    settle_s: float = SETTLE_S,
    retry_interval_s: float = RETRY_INTERVAL_S,
) -> list[OutageMeasure]:
    """The write probe and the service probe running as in a run, the outages injected
    one after another; each measured as the harness measures a fault. ``retry_interval_s``
    = the probes' intervals gives their pacing before they retried faster while failing."""
    endpoints = stack.endpoints
    await _execute(endpoints.primary_proxy_dsn, CREATE_PROBE_TABLE)
    clock = RunClock(time.monotonic())
    t0 = clock.t0
    writes = WriteProbe(
        endpoints.server_database_url, t0, WRITE_INTERVAL_S, WRITE_TIMEOUT_S, retry_interval_s
    )
    service = ServiceProbe(
        endpoints.mcp_url,
        t0,
        WriteLedger(),
        SERVICE_INTERVAL_S,
        timeout_s=SERVICE_TIMEOUT_S,
        retry_interval_s=retry_interval_s,
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(writes.run(stop)), asyncio.create_task(service.run(stop))]
    outages: list[Outage] = []

    async def both_wrote() -> bool:
        return any(s.ok for s in writes.samples) and any(s.ok for s in service.samples)

    try:
        await _poll(both_wrote, "the probes did not write before the first outage")
        await asyncio.sleep(1.0)
        for length in lengths:
            outages.append(await inject_outage(stack.toxiproxy, length, t0))
            await asyncio.sleep(settle_s)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    ends = [o.t_fault_s for o in outages[1:]] + [time.monotonic() - t0]
    port = stack.current_primary_port
    return [
        measure_outage(o, end, writes.samples, service.samples, port)
        for o, end in zip(outages, ends, strict=True)
    ]


@dataclass
class LostWrites:
    """What was done to lose writes, and what the ledger made of it."""

    before_stall: list[str]
    injected: list[str]
    """Acknowledged after the WAL stream stopped, and absent on the replica before the kill."""
    reported_lost: list[str]
    intact: int
    walsenders_after_stall: int
    replica_receive_lsn: str
    replica_receive_lsn_at_kill: str
    primary_lsn_at_kill: str
    late_ids_on_replica: int
    early_ids_on_replica: int
    summary: dict[str, object] = field(default_factory=dict)

    @property
    def error(self) -> int:
        return len(self.reported_lost) - len(self.injected)

    @property
    def exact(self) -> bool:
        return sorted(self.reported_lost) == sorted(self.injected)


async def _acked_writes(
    probe: ServiceProbe,
    client: httpx2.AsyncClient,
    session: McpSession,
    rng: random.Random,
    count: int,
) -> list[str]:
    """``count`` writes through MCP, each acknowledged (no fault is under way)."""
    ids = []
    for _ in range(count):
        acked = await probe.step(client, session, rng)
        if acked is None:
            raise RuntimeError(f"a write through MCP was not acknowledged: {probe.samples[-1]}")
        ids.append(acked)
    return ids


async def _lsn(cluster: PostgresCluster, function: str) -> str:
    """An LSN as Postgres writes it (asyncpg decodes ``pg_lsn`` to an int)."""
    return str(await cluster.fetchval(f"SELECT {function}()::text"))


def lsn_value(lsn: str) -> int:
    """``'0/30D82D0'`` -> its byte position, to compare two LSNs."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


async def _count(
    cluster: PostgresCluster, sql: str, *args: object, database: str = "postgres"
) -> int:
    return int(cast(int, await cluster.fetchval(sql, *args, database=database)))


async def _poll(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout_s:g} s")
        await asyncio.sleep(0.02)


async def _replayed(replica: PostgresCluster, lsn: str | None = None) -> bool:
    """Has the replica replayed up to ``lsn`` (default: all it received)?"""
    target = "$1::text::pg_lsn" if lsn is not None else "pg_last_wal_receive_lsn()"
    args = (lsn,) if lsn is not None else ()
    return bool(await replica.fetchval(f"SELECT pg_last_wal_replay_lsn() >= {target}", *args))


async def _stop_wal_stream(stack: LocalStack, primary: PostgresCluster) -> int:
    """Disable ``pg-replication``; confirmed when the primary has no WAL sender left.
    Returns the number of WAL senders then (0)."""
    await asyncio.to_thread(stack.toxiproxy.update_proxy, "pg-replication", enabled=False)
    senders_sql = "SELECT count(*) FROM pg_stat_replication"

    async def no_sender() -> bool:
        return await _count(primary, senders_sql) == 0

    await _poll(no_sender, "the primary still had a WAL sender after the stream was cut")
    return await _count(primary, senders_sql)


async def lose_writes(
    stack: LocalStack, before: int = LOST_BEFORE_STALL, after: int = LOST_AFTER_STALL
) -> LostWrites:
    """Acknowledged writes lost on purpose: ``before`` replicated, the WAL stream stopped,
    ``after`` acknowledged on the primary alone, the primary killed, the replica promoted.
    Leaves the stack on the promoted node. Raises if the setup did not do what it says."""
    primary = stack.clusters[stack.primary_name]
    replica = stack.clusters[stack.replica_name]
    t0 = time.monotonic()
    ledger = WriteLedger()
    probe = ServiceProbe(stack.endpoints.mcp_url, t0, ledger, timeout_s=SERVICE_TIMEOUT_S)
    rng = random.Random(20261125)
    session = probe.new_session()
    async with probe.client() as client:
        early = await _acked_writes(probe, client, session, rng, before)
        written_lsn = await _lsn(primary, "pg_current_wal_lsn")
        await _poll(lambda: _replayed(replica, written_lsn), "the replica did not catch up")
        senders = await _stop_wal_stream(stack, primary)
        stalled_at = await _lsn(replica, "pg_last_wal_receive_lsn")
        late = await _acked_writes(probe, client, session, rng, after)
    primary_lsn = await _lsn(primary, "pg_current_wal_lsn")
    received = await _lsn(replica, "pg_last_wal_receive_lsn")
    await _poll(lambda: _replayed(replica), "the replica did not replay what it received")
    on_replica = "SELECT count(*) FROM notes WHERE id = ANY($1::text[])"
    late_on_replica = await _count(replica, on_replica, late, database=APP_DATABASE)
    early_on_replica = await _count(replica, on_replica, early, database=APP_DATABASE)
    if (
        received != stalled_at
        or lsn_value(primary_lsn) <= lsn_value(received)
        or late_on_replica
        or early_on_replica != len(early)
    ):
        raise RuntimeError(
            f"the replica is not where the setup put it: receive LSN {stalled_at} -> "
            f"{received} (primary at {primary_lsn}), {late_on_replica} of the late writes "
            f"and {early_on_replica}/{len(early)} early ones on it"
        )
    killed = await stack.kill_primary()
    if not killed.confirmed:
        raise RuntimeError("the primary did not die")
    await stack.promote_replica()
    conn = await asyncpg.connect(app_database_dsn(stack.current_primary_dsn), timeout=10)
    try:
        written = await read_written(conn, LedgerConfig(), sorted(ledger.attempted))
    finally:
        await conn.close()
    classified = ledger.classify(written, killed.t_confirmed - t0)
    return LostWrites(
        before_stall=early,
        injected=late,
        reported_lost=sorted(classified.lost),
        intact=len(classified.intact),
        walsenders_after_stall=senders,
        replica_receive_lsn=stalled_at,
        replica_receive_lsn_at_kill=received,
        primary_lsn_at_kill=primary_lsn,
        late_ids_on_replica=late_on_replica,
        early_ids_on_replica=early_on_replica,
        summary=classified.summary(),
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def outage_figures(measures: Sequence[OutageMeasure]) -> list[Figure]:
    """Per metric and outage length: the worst error (ms) of the repetitions."""
    figures = []
    lengths = sorted({m.outage.planned_s for m in measures})
    for metric, interval in METRICS:
        for length in lengths:
            reps = [m for m in measures if m.outage.planned_s == length]
            errors = [m.error_s(metric) for m in reps]
            known = [e for e in errors if e is not None]
            worst = max(known, key=abs) if known else float("nan")
            met = len(known) == len(reps) and all(abs(e) <= goal_s(interval) for e in known)
            if metric == "db_failover_s":
                met = met and all(m.writes_in_outage == 0 for m in reps)
            figures.append(
                Figure(
                    BENCH,
                    f"{metric} error, {length * 1000:.0f} ms outage",
                    worst * 1000,
                    "ms",
                    goal=goal_text(interval),
                    met=met,
                    note=f"worst of {len(reps)}; truth = outage length",
                    detail={
                        "injected_ms": [_ms(m.outage.truth_s) for m in reps],
                        "measured_ms": [_ms(m.measured(metric)) for m in reps],
                        "error_ms": [_ms(e) for e in errors],
                        "mean_error_ms": _ms(statistics.fmean(known)) if known else None,
                        "stamp_uncertainty_ms": [_ms(m.outage.call_s) for m in reps],
                        "writes_in_outage": [m.writes_in_outage for m in reps],
                        "in_flight_at_fault": [m.in_flight_at_fault for m in reps],
                        "first_service_write_ms": [_ms(m.first_service_write_s) for m in reps],
                        "wait_after_restore_ms": [_ms(m.split_s(metric)[0]) for m in reps],
                        "write_latency_ms": [_ms(m.split_s(metric)[1]) for m in reps],
                    },
                )
            )
    return figures


def lost_figure(lost: LostWrites) -> Figure:
    return Figure(
        BENCH,
        "lost writes: reported - injected",
        float(lost.error),
        "writes",
        goal="0, the same ids",
        met=lost.error == 0 and lost.exact,
        note=f"{len(lost.injected)} injected, {len(lost.reported_lost)} reported lost",
        detail={
            "injected": len(lost.injected),
            "reported_lost": len(lost.reported_lost),
            "same_ids": lost.exact,
            "acked_before_stall": len(lost.before_stall),
            "intact": lost.intact,
            "walsenders_after_stall": lost.walsenders_after_stall,
            "replica_receive_lsn": lost.replica_receive_lsn,
            "replica_receive_lsn_at_kill": lost.replica_receive_lsn_at_kill,
            "primary_lsn_at_kill": lost.primary_lsn_at_kill,
            "ledger": lost.summary,
        },
    )


def print_outages(measures: Sequence[OutageMeasure]) -> None:
    """Per outage: injected, then per metric measured, error, and the error's two parts
    (restore -> counted write sent, sent -> acknowledged); all in ms."""
    head = ["injected"]
    for metric, _ in METRICS:
        head += [metric, "error", "wait", "write"]
    print("  ".join(f"{h:>13}" for h in head), flush=True)
    for m in measures:
        cells = [_ms(m.outage.truth_s)]
        for metric, _ in METRICS:
            cells += [_ms(m.measured(metric)), _ms(m.error_s(metric)), *map(_ms, m.split_s(metric))]
        print("  ".join(f"{c!s:>13}" for c in cells), flush=True)


async def measure(retry_interval_s: float = RETRY_INTERVAL_S) -> list[Figure]:
    stack = LocalStack(accuracy_scenario())
    try:
        started = time.monotonic()
        await stack.up()
        print(f"stack up in {time.monotonic() - started:.1f} s", flush=True)
        measures = await run_outages(stack, OUTAGES_S, retry_interval_s=retry_interval_s)
        print_outages(measures)
        lost = await lose_writes(stack)
    finally:
        await stack.down()
        stack.remove_run_dir()
    return [*outage_figures(measures), lost_figure(lost)]


def main(argv: Sequence[str]) -> int:
    """``--old-pacing``: the probes as they were before they retried faster while failing
    (every interval, failing or not), for the before/after comparison."""
    if set(argv) - {"--old-pacing"}:
        print("usage: python -m bench.accuracy [--old-pacing]", file=sys.stderr)
        return 2
    old = "--old-pacing" in argv
    figures = asyncio.run(
        measure(max(WRITE_INTERVAL_S, SERVICE_INTERVAL_S) if old else RETRY_INTERVAL_S)
    )
    report(BENCH, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
