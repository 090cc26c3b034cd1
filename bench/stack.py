"""Start and stop time of the local stack, against a bare cluster of the same binaries.

``python -m bench.stack [--rounds N]``

Stack: ``LocalStack(Scenario(name=...)).up()`` then ``down()`` (a default scenario:
Toxiproxy with four proxies, a primary by initdb, a streaming hot standby by
``pg_basebackup -R`` through a proxy, the reference MCP server), timed on
CLOCK_MONOTONIC. Its up time is split into parts by timing the stack's own steps from
a subclass (no change to the stack): toxiproxy, primary initdb, primary start, roles and
database, replica pg_basebackup, replica start, wait for streaming, MCP server, and the
rest (stale-run sweep, run directory, proxy creation).

Baseline: one bare cluster of the same Postgres binaries, run as the same user the
harness uses when root (``MCP_HARNESS_PG_USER``): ``initdb`` + ``pg_ctl start -w``, and
``pg_ctl stop -m fast -w`` + removing its data directory (the stack's down() drops its
data too). Rounds alternate (baseline, stack, stack, baseline, ...) so
other work on the machine weighs on both; figures are medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Figure, report
from harness.config import Scenario
from harness.stack.local import LocalStack
from harness.stack.net import free_port
from harness.stack.postgres import PostgresCluster
from harness.stack.prerequisites import pg_bin_dir, pg_run_user, postgres_version

BENCH = "stack"

UP_PARTS = (
    ("toxiproxy", "toxiproxy-server started and answering its API"),
    ("primary_initdb", "initdb of the primary (as the harness runs it)"),
    ("primary_start", "postgres started until it accepts a query"),
    ("primary_roles", "replication and app roles, the app database"),
    ("replica_basebackup", "pg_basebackup -R of the standby through the pg-replication proxy"),
    ("replica_start", "standby started until it accepts a query"),
    ("streaming", "until pg_stat_replication shows the standby streaming"),
    (
        "mcp_server",
        "reference server started until /healthz answers 200 (while the replica is cloned)",
    ),
    ("other", "the rest: stale-run sweep, run directory, proxy creation"),
)
DOWN_PARTS = (
    ("postgres", "both clusters: fast shutdown (SIGINT) until the postmaster exited"),
    ("mcp-server", "reference server: SIGTERM until it exited (graceful uvicorn shutdown)"),
    ("toxiproxy", "toxiproxy-server: SIGTERM until it exited"),
    ("other", "the rest: removing data directories, WAL archive, sockets"),
)


class TimedStack(LocalStack):
    """A LocalStack that times its own steps (durations in ``parts``, seconds)."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        self.parts: dict[str, float] = {}

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.monotonic() - start

    def _cluster(self, name: str) -> PostgresCluster:
        cluster = super()._cluster(name)
        initdb = cluster.initdb

        def timed_initdb(*args: Any, **kwargs: Any) -> None:
            with self._timed(f"{name}_initdb"):
                initdb(*args, **kwargs)

        cluster.initdb = timed_initdb  # type: ignore[method-assign]
        return cluster

    async def _start_toxiproxy(self) -> None:
        with self._timed("toxiproxy"):
            await super()._start_toxiproxy()

    async def _start_cluster(self, cluster: PostgresCluster, ready_timeout_s: float = 30) -> None:
        with self._timed(f"{cluster.name}_start"):
            await super()._start_cluster(cluster, ready_timeout_s)

    async def _start_primary(self) -> PostgresCluster:
        with self._timed("_primary"):
            return await super()._start_primary()

    async def _start_replica(
        self, replication_proxy_port: int, name: str = "replica"
    ) -> PostgresCluster:
        with self._timed("_replica"):
            return await super()._start_replica(replication_proxy_port, name)

    async def _wait_streaming(
        self, primary: PostgresCluster, replica: PostgresCluster, timeout_s: float = 30
    ) -> None:
        with self._timed("streaming"):
            await super()._wait_streaming(primary, replica, timeout_s)

    async def _start_server(self) -> str:
        with self._timed("mcp_server"):
            return await super()._start_server()

    def time_stops(self) -> None:
        """Time each process's stop during down() (a cluster's stop is its process's)."""
        for proc in self.registry.processes:
            group = "postgres" if proc.name.startswith("postgres-") else proc.name
            stop = proc.stop

            def timed_stop(
                *args: Any, _stop: Any = stop, _group: str = group, **kwargs: Any
            ) -> int | None:
                with self._timed(f"down_{_group}"):
                    return _stop(*args, **kwargs)

            proc.stop = timed_stop  # type: ignore[method-assign]

    def down_parts(self, total: float) -> dict[str, float]:
        parts = {f"down_{g}": self.parts.get(f"down_{g}", 0.0) for g, _ in DOWN_PARTS[:-1]}
        parts["down_other"] = total - sum(parts.values())
        return parts

    def up_parts(self, total: float) -> dict[str, float]:
        p = self.parts
        parts = {
            "toxiproxy": p["toxiproxy"],
            "primary_initdb": p["primary_initdb"],
            "primary_start": p["primary_start"],
            "primary_roles": p["_primary"] - p["primary_initdb"] - p["primary_start"],
            "replica_basebackup": p["_replica"] - p["replica_start"],
            "replica_start": p["replica_start"],
            "streaming": p["streaming"],
            "mcp_server": p["mcp_server"],
        }
        # The replica is cloned while the server starts (side by side): the longer of the two
        # is what they add to the total.
        sequential = p["toxiproxy"] + p["_primary"] + p["streaming"]
        parts["other"] = total - sequential - max(p["_replica"], p["mcp_server"])
        return parts


async def stack_round() -> dict[str, float]:
    stack = TimedStack(Scenario(name="bench-stack"))
    try:
        start = time.monotonic()
        await stack.up()
        up = time.monotonic() - start
        stack.time_stops()
        start = time.monotonic()
        await stack.down()
        down = time.monotonic() - start
    except BaseException:
        await stack.down()
        raise
    finally:
        stack.remove_run_dir()
    return {"up": up, "down": down, **stack.up_parts(up), **stack.down_parts(down)}


def _run(argv: list[str], user: str | None) -> None:
    result = subprocess.run(argv, user=user, capture_output=True, text=True, timeout=120, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr[-2000:]}")


def baseline_round(bin_dir: Path, user: str | None) -> dict[str, float]:
    """initdb + pg_ctl start -w, then pg_ctl stop -m fast -w, of one bare cluster."""
    root = Path(tempfile.mkdtemp(prefix="bench-stack-baseline-"))
    try:
        data = root / "data"
        data.mkdir(mode=0o700)
        if user:
            shutil.chown(root, user, user)
            shutil.chown(data, user, user)
        opts = f"-p {free_port()} -k {root} -c listen_addresses=127.0.0.1"
        pg_ctl = str(bin_dir / "pg_ctl")
        t0 = time.monotonic()
        _run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--no-instructions"], user
        )
        t1 = time.monotonic()
        _run([pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"], user)
        t2 = time.monotonic()
        _run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], user)
        t3 = time.monotonic()
    finally:
        if (root / "data" / "postmaster.pid").exists():
            _run(
                [str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"], user
            )
        shutil.rmtree(root, ignore_errors=True)
    return {"initdb": t1 - t0, "start": t2 - t1, "up": t2 - t0, "down": t3 - t2}


def figures_of(stack: list[dict[str, float]], base: list[dict[str, float]]) -> list[Figure]:
    def fig(
        name: str, rows: list[dict[str, float]], key: str, note: str, baseline: str | None = None
    ) -> Figure:
        values = [r[key] for r in rows]
        return Figure(
            bench=BENCH,
            name=name,
            value=statistics.median(values),
            unit="s",
            baseline=baseline,
            note=note + f" (median of {len(values)})",
            detail={"rounds": [round(v, 4) for v in values]},
        )

    figures = [
        fig("baseline_initdb_s", base, "initdb", "bare initdb of one cluster"),
        fig("baseline_up_s", base, "up", "bare initdb + pg_ctl start -w of one cluster"),
        fig(
            "baseline_down_s",
            base,
            "down",
            "pg_ctl stop -m fast -w of that cluster, then rm -r of its data",
        ),
        fig(
            "stack_up_s",
            stack,
            "up",
            "LocalStack.up(), default scenario; ratio: orchestration cost",
            "baseline_up_s",
        ),
        fig("stack_down_s", stack, "down", "LocalStack.down()", "baseline_down_s"),
    ]
    for part, note in UP_PARTS:
        baseline = "baseline_initdb_s" if part == "primary_initdb" else None
        figures.append(fig(f"stack_up_{part}_s", stack, part, f"part of up: {note}", baseline))
    for part, note in DOWN_PARTS:
        key = f"down_{part}"
        figures.append(fig(f"stack_{key.replace('-', '_')}_s", stack, key, f"part of down: {note}"))
    return figures


def bench(rounds: int) -> list[Figure]:
    bin_dir, user = pg_bin_dir(), pg_run_user()
    print(f"postgres {postgres_version(bin_dir)} in {bin_dir}, run as {user or 'self'}", flush=True)
    stack: list[dict[str, float]] = []
    base: list[dict[str, float]] = []
    order: list[tuple[str, Callable[[], dict[str, float]]]] = [
        ("baseline", lambda: baseline_round(bin_dir, user)),
        ("stack", lambda: asyncio.run(stack_round())),
    ]
    for i in range(rounds):
        for name, run in order if i % 2 == 0 else reversed(order):
            row = run()
            (stack if name == "stack" else base).append(row)
            print(f"{name:8} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    return figures_of(stack, base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stack", description=__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each (default 4)")
    args = parser.parse_args(argv)
    report(BENCH, bench(args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
