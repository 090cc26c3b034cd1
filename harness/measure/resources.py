"""Once a second, the state around the load: the database (connections against
max_connections, replication lag), the server's own gauges (sessions open, admission),
and the CPU the load generator burns, so a saturated generator is never mistaken for
a slow server."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import psutil

from harness.measure.exposition import ExpositionError, parse_metrics, total
from harness.stack.postgres import DB_ERRORS

SERVER_GAUGES = (
    "mcp_sessions_open",
    "mcp_admission_queue_depth",
    "mcp_admission_shed_total",
    "mcp_admission_admitted_total",
    "mcp_storm_active",
    "mcp_db_pool_waiting",
)
SATURATION_CPU_FRACTION = 0.9
SATURATION_TIME_FRACTION = 0.1
LOOP_LAG_LIMIT_S = 0.05
"""A second in which a Locust process's event loop woke this late on average is a lagging
second: every response it timed then carries up to that much of the generator's own delay."""
LOOP_LAG_MIN_SECONDS = 2
HARNESS_STALL_LIMIT_S = 0.25
"""A second in which the harness's own loop stalled this long at once (its worst wake-up,
not the mean) stamped probe samples late by as much: beyond the probes' accuracy goal."""
"""Lagging seconds must also be at least this many: one hiccup is not a saturated generator."""
SATURATION_RULE = (
    f"a Locust process at or above {SATURATION_CPU_FRACTION:.0%} of one core (each is a single "
    f"gevent thread), or the generator at or above {SATURATION_CPU_FRACTION:.0%} of the cores "
    f"it is pinned to, for more than {SATURATION_TIME_FRACTION:.0%} of the sampled seconds; or "
    f"a Locust process's event loop late by more than {LOOP_LAG_LIMIT_S * 1000:.0f} ms on "
    f"average in more than {SATURATION_TIME_FRACTION:.0%} of the seconds (at least "
    f"{LOOP_LAG_MIN_SECONDS})"
)

DB_SQL = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int,
       (SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)) FROM pg_stat_replication),
       (SELECT extract(epoch FROM max(replay_lag)) FROM pg_stat_replication)
"""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (None once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return None
    return float(times.user + times.system)


def server_gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Each metric of ``names`` that the exposition has, summed over its series (labels
    folded together). Raises ExpositionError for text that is not an exposition."""
    series = parse_metrics(text)
    present = {name for name, _ in series}
    return {name: total(series, name) for name in names if name in present}


def generator_saturation(
    cpu_cores: list[float], busiest_process: list[float], cores_available: int
) -> tuple[bool, float]:
    """Whether the generator was saturated by the rule above, and the fraction of seconds
    it was; ``cpu_cores`` and ``busiest_process`` are per-second samples."""
    if not cpu_cores or cores_available <= 0:
        return False, 0.0
    hot = sum(
        1
        for total, busiest in zip(cpu_cores, busiest_process, strict=True)
        if busiest >= SATURATION_CPU_FRACTION or total >= SATURATION_CPU_FRACTION * cores_available
    )
    fraction = hot / len(cpu_cores)
    return fraction > SATURATION_TIME_FRACTION, fraction


def loop_lag_by_second(
    lag_records: Sequence[Mapping[str, Any]], field: str = "mean"
) -> list[float]:
    """Per second of the run (``t_s``), the worst lateness (``field``: each record's
    ``mean`` or ``max``) over the processes."""
    worst: dict[int, float] = {}
    for record in lag_records:
        second = int(record["t_s"])
        worst[second] = max(worst.get(second, 0.0), float(record[field]))
    return [worst[s] for s in sorted(worst)]


def loop_lag_saturation(
    lag_by_second: list[float], limit_s: float = LOOP_LAG_LIMIT_S
) -> tuple[bool, float]:
    """Whether event loops lagged by the rule above (over ``limit_s`` in more than the
    rule's fraction of seconds, at least its minimum count), and the fraction of seconds
    they did."""
    if not lag_by_second:
        return False, 0.0
    lagging = sum(1 for late in lag_by_second if late > limit_s)
    fraction = lagging / len(lag_by_second)
    return fraction > SATURATION_TIME_FRACTION and lagging >= LOOP_LAG_MIN_SECONDS, fraction


@dataclass(frozen=True)
class PhaseSaturation:
    """The saturation rule judged over one phase's seconds: a generator saturated during a
    5 s storm of a 75 s run measures itself in exactly the seconds the storm figures come
    from, which the whole-run fraction hides."""

    phase: str
    seconds: int
    cpu: bool
    loop_lag: bool

    @property
    def saturated(self) -> bool:
        return self.cpu or self.loop_lag

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "saturated": self.saturated,
            "saturated_by": [
                n for n, hit in (("cpu", self.cpu), ("loop_lag", self.loop_lag)) if hit
            ],
        }


def saturation_by_phase(
    spans: Sequence[tuple[str, float, float]],
    cpu_samples: Sequence[dict[str, Any]],
    lag_records: Sequence[Mapping[str, Any]],
    cores: int,
) -> list[PhaseSaturation]:
    """The saturation rule per ``(name, start_s, end_s)`` span: ``cpu_samples`` are the
    sampler's seconds (``t_s``, ``generator_cpu_cores``, ``generator_cpu_busiest_process``),
    ``lag_records`` the Locust processes' ``lag`` records (``t_s``, ``mean``)."""
    judged = []
    for name, start, end in spans:
        inside = [
            r
            for r in cpu_samples
            if start <= r["t_s"] < end and r.get("generator_cpu_cores") is not None
        ]
        cpu, _ = generator_saturation(
            [r["generator_cpu_cores"] for r in inside],
            [r["generator_cpu_busiest_process"] for r in inside],
            cores,
        )
        lag, _ = loop_lag_saturation(
            loop_lag_by_second([r for r in lag_records if start <= r["t_s"] < end])
        )
        judged.append(PhaseSaturation(name, len(inside), cpu, lag))
    return judged


@dataclass
class LoopLagProbe:
    """How late the harness's own event loop wakes, each second. That loop stamps every
    probe sample and fault time: a late loop makes failover and recovery figures late by
    as much, so its lag is measured like the generator's."""

    t0: float
    tick_s: float = 0.05
    seconds: list[dict[str, float]] = field(default_factory=list)
    """One ``{"t_s", "mean", "max"}`` per second, the shape ``loop_lag_by_second`` reads."""

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            late: list[float] = []
            second_end = time.monotonic() + 1.0
            while time.monotonic() < second_end and not stop.is_set():
                before = time.monotonic()
                await asyncio.sleep(self.tick_s)
                late.append(max(0.0, time.monotonic() - before - self.tick_s))
            if late:
                self.seconds.append(
                    {
                        "t_s": time.monotonic() - self.t0,
                        "mean": sum(late) / len(late),
                        "max": max(late),
                    }
                )


@dataclass
class ResourceSampler:
    """Samples every ``interval_s`` until stopped; a sample that fails leaves its fields None."""

    primary_dsn: Callable[[], str]
    metrics_urls: list[str]
    generator_pids: Callable[[], list[int]]
    t0: float
    interval_s: float = 1.0
    samples: list[dict[str, Any]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        last_cpu: dict[int, float] = {}
        last_t = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            sample: dict[str, Any] = {"t_s": started - self.t0}
            sample.update(await self._database())
            sample.update(await asyncio.to_thread(self._server))
            now = time.monotonic()
            per_process = []
            for pid in self.generator_pids():
                seconds = cpu_seconds(pid)
                if seconds is None:
                    continue
                per_process.append(seconds - last_cpu.get(pid, seconds))
                last_cpu[pid] = seconds
            elapsed = now - last_t
            first = not self.samples
            sample["generator_cpu_cores"] = None if first else sum(per_process) / elapsed
            sample["generator_cpu_busiest_process"] = (
                None if first else max(per_process, default=0.0) / elapsed
            )
            last_t = now
            self.samples.append(sample)
            try:
                await asyncio.wait_for(
                    stop.wait(), max(0.0, started + self.interval_s - time.monotonic())
                )
            except TimeoutError:
                pass

    async def _database(self) -> dict[str, Any]:
        try:
            conn = await asyncpg.connect(self.primary_dsn(), timeout=0.5)
        except DB_ERRORS:
            return {"db_connections": None}
        try:
            row = await conn.fetchrow(DB_SQL, timeout=0.5)
        except DB_ERRORS:
            return {"db_connections": None}
        finally:
            conn.terminate()
        assert row is not None
        return {
            "db_connections": row[0],
            "db_max_connections": row[1],
            "replication_lag_bytes": None if row[2] is None else float(row[2]),
            "replication_lag_s": None if row[3] is None else float(row[3]),
        }

    def _server(self) -> dict[str, Any]:
        """The server gauges summed over every instance that answers (None if none does)."""
        if not self.metrics_urls:
            return {}
        gauges: dict[str, float] = {}
        answered = False
        for url in self.metrics_urls:
            try:
                with urllib.request.urlopen(url, timeout=0.5) as response:
                    text = response.read().decode(errors="replace")
                read = server_gauges(text, SERVER_GAUGES)
            except (OSError, ExpositionError):
                continue
            answered = True
            for name, value in read.items():
                gauges[name] = gauges.get(name, 0.0) + value
        if not answered:
            return {"server_sessions_open": None}
        return {
            "server_sessions_open": gauges.get("mcp_sessions_open"),
            **{
                f"server_{name.removeprefix('mcp_')}": value
                for name, value in gauges.items()
                if name != "mcp_sessions_open"
            },
        }
