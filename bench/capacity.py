"""Sessions held: how many concurrent simulated MCP sessions the harness's own load
generator holds on this machine's 2 cores with a local stack running beside it.

The harness's ``Swarm`` (a Locust master and ``WORKERS`` workers, the locustfile a
run uses, records and all) drives ``McpUser`` with agent-like think times
(``THINK_S``) and the default tool mix, in steps of users (``STEPS``), each held
``HOLD_S``; the steps are a Locust ``LoadTestShape`` that this module adds on the
master as a second locustfile (the harness's locustfile has no steps). A ``LocalStack``
(Postgres primary + replica, Toxiproxy, the reference server) is up beside it the
whole time.

The target is the canned endpoint (``bench.canned``), not the reference server:
at 2-5 s think times 5,000 sessions ask ~1,400 req/s with writes, more than the
reference server serves on these 2 cores shared with its database and the
generator (about 1,000 req/s tools/list over SSE alone, PLATFORM-NOTES), so the
server would be the bottleneck and the figure would not say what the generator
holds. ``--target reference`` aims at the stack's MCP URL instead.

Each step is judged exactly as a real run judges its generator
(``harness.measure.resources``, ``SATURATION_RULE``), on the step's judged seconds:
the whole seconds of its last ``JUDGE_S``, on the run's time axis (``t0`` = the
master's first ``users`` record, as ``harness.run``; records' ``t`` minus ``t0``):
- CPU, sampled once a second (every Locust process, as the run's resource sampler):
  ``generator_saturation`` (a Locust process at >= 90% of a core, or the generator at
  >= 90% of the cores, in more than 10% of the seconds);
- event-loop lag: the ``lag`` records every Locust process of the swarm writes once a
  second into the records file (the master's own, with its pid, and the workers'),
  ``loop_lag_by_second`` (per second the worst process's mean lateness) and
  ``loop_lag_saturation`` (late by more than ``LOOP_LAG_LIMIT_S`` in more than 10% of
  the seconds, at least ``LOOP_LAG_MIN_SECONDS`` of them).
Sessions held = users of the last step before the first saturated one (or of the
last step). Memory per session = the slope of the generator's RSS (master +
workers) over the steps' user counts.

``python -m bench.capacity [--steps 1000,2000,...] [--hold 13] [--target canned]``
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.common import Figure

STEPS_ENV = "MCP_BENCH_STEPS"


def _install_step_shape() -> None:
    """Loaded by the Locust master as a second locustfile: the steps, as a load shape.
    Only with the bench's environment variable set (never in a normal run)."""
    import json

    from locust import LoadTestShape

    steps: list[tuple[int, float, float]] = json.loads(os.environ[STEPS_ENV])

    class Steps(LoadTestShape):
        """(users, spawn rate, until run time s) per step; then stop."""

        def tick(self) -> tuple[int, float] | None:
            run_time = self.get_run_time()
            for users, rate, until in steps:
                if run_time < until:
                    return users, rate
            return None

    globals()["Steps"] = Steps


if os.environ.get(STEPS_ENV) and "locust" in sys.modules and __name__ != "__main__":
    _install_step_shape()


# --- the bench itself: runs in the parent process, never imports Locust ---

BENCH = "capacity"
STEPS = tuple(range(1000, 10_001, 1000))
HOLD_S = 13.0
"""Each step: spawn (at ``SPAWN_RATE``), then hold; judged on its last ``JUDGE_S``."""
JUDGE_S = 6.0
SPAWN_RATE = 1000.0
THINK_S = (2.0, 5.0)
WORKERS = 2
GOAL_SESSIONS = 5000


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def with_steps(argv: list[str]) -> list[str]:
    """A Locust command line with this module added as a second locustfile (the steps)."""
    out = list(argv)
    index = out.index("-f") + 1
    out[index] = f"{out[index]},{os.path.abspath(__file__)}"
    return out


def judged_seconds(index: int, hold_s: float) -> range:
    """The whole seconds of the run (``int(t_s)``) that judge step ``index``: those inside its
    last ``JUDGE_S`` (the step runs from ``hold_s * index`` to ``hold_s * (index + 1)``)."""
    end = hold_s * (index + 1)
    return range(math.ceil(end - min(JUDGE_S, hold_s)), math.floor(end))


def least_squares_slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def run(steps: list[int], hold_s: float, workers: int, target: str) -> int:
    import asyncio
    import json
    from collections import Counter
    from urllib.parse import urlsplit

    from bench import canned
    from bench.common import busy_cpu_seconds, report
    from harness.config import Scenario
    from harness.load.settings import LoadSettings
    from harness.load.swarm import Swarm, SwarmShape
    from harness.measure.resources import (
        cpu_seconds,
        generator_saturation,
        loop_lag_by_second,
        loop_lag_saturation,
    )
    from harness.stack.local import LocalStack

    class StepSwarm(Swarm):
        """The harness's swarm, with the steps as a second locustfile on the master."""

        def master_argv(self, master_port: int) -> list[str]:
            return with_steps(super().master_argv(master_port))

        def process_env(self) -> dict[str, str]:
            return {**super().process_env(), STEPS_ENV: json.dumps(schedule)}

    cores = len(os.sched_getaffinity(0))
    schedule = [(users, SPAWN_RATE, hold_s * (i + 1)) for i, users in enumerate(steps)]

    started = time.monotonic()
    stack = LocalStack(Scenario(name="bench-capacity"))
    asyncio.run(stack.up())
    stack_up_s = time.monotonic() - started
    server = canned.start(processes=1)
    swarm: Swarm | None = None
    samples: list[dict[str, Any]] = []
    lag_records: list[dict[str, Any]] = []
    req_by_second: Counter[int] = Counter()
    err_by_second: Counter[int] = Counter()
    kinds_by_second: dict[int, Counter[str]] = {}
    t0: float | None = None
    """The run's time axis starts at the master's first ``users`` record, as in harness.run."""
    master_pid: int | None = None
    stopped_early_at: int | None = None
    judged: dict[int, dict[str, Any]] = {}

    def judge_step(index: int) -> dict[str, Any]:
        """The step's judged seconds by the harness's saturation rule (CPU and loop lag)."""
        assert t0 is not None
        seconds = judged_seconds(index, hold_s)
        window = [w for w in samples if math.floor(w["t"] - t0) in seconds]
        cpu_saturated, cpu_fraction = generator_saturation(
            [w["cpu_cores"] for w in window], [w["busiest"] for w in window], cores
        )
        lags = [r for r in lag_records if math.floor(r["t_s"]) in seconds]
        lag = loop_lag_by_second(lags)
        lag_saturated, lag_fraction = loop_lag_saturation(lag)
        n = max(len(seconds), 1)

        def mean(key: str) -> float:
            return sum(w[key] for w in window) / len(window) if window else 0.0

        return {
            "users": steps[index],
            "judged_s": [seconds.start, seconds.stop],
            "users_seen_min": min((w["users"] for w in window), default=0),
            "requests_per_s": sum(req_by_second[sec] for sec in seconds) / n,
            "errors_per_s": sum(err_by_second[sec] for sec in seconds) / n,
            "errors_by_kind": dict(
                sum((kinds_by_second.get(sec, Counter()) for sec in seconds), Counter())
            ),
            "generator_cpu_cores": mean("cpu_cores"),
            "busiest_process_cpu_max": max((w["busiest"] for w in window), default=0.0),
            "cpu_saturated_fraction": cpu_fraction,
            "lag_max_ms": 1000 * max((r["max"] for r in lags), default=0.0),
            "lag_mean_ms": 1000 * (sum(lag) / len(lag) if lag else 0.0),
            "lag_mean_max_ms": 1000 * max(lag, default=0.0),
            "master_lag_mean_max_ms": 1000
            * max((r["mean"] for r in lags if r.get("p") == master_pid), default=0.0),
            "master_cpu_max": max((w["master_cpu"] for w in window), default=0.0),
            "lagging_fraction": lag_fraction,
            "lag_seconds": len(lag),
            "lag_processes": len({r.get("p") for r in lags}),
            "saturated": cpu_saturated or lag_saturated,
            "saturated_by": [
                name for name, hit in (("cpu", cpu_saturated), ("loop_lag", lag_saturated)) if hit
            ],
            "generator_rss_mib": mean("rss") / 2**20,
            "server_cpu_max": max((w["server_cpu"] for w in window), default=0.0),
            "machine_cpu_cores": mean("machine_cpu"),
            "others_cpu_cores": mean("machine_cpu") - mean("cpu_cores") - mean("server_cpu"),
            "samples": len(window),
        }

    try:
        if target == "canned":
            base_url, mcp_path = server.url, "/mcp"
        else:
            mcp = urlsplit(stack.endpoints.mcp_url)
            base_url, mcp_path = f"{mcp.scheme}://{mcp.netloc}", mcp.path
        settings = LoadSettings(
            records_path="capacity-records.jsonl",
            mcp_path=mcp_path,
            think_time_s=THINK_S,
            id_prefix="bench-capacity",
        )
        swarm = StepSwarm(
            stack.registry,
            settings,
            SwarmShape(
                base_url=base_url,
                users=max(steps),
                spawn_rate=SPAWN_RATE,
                run_time_s=hold_s * len(steps) + 10,
                workers=workers,
            ),
        )
        swarm.start()
        master_pid = swarm.pids()[0]
        tail = swarm.tail()
        early: list[dict[str, Any]] = []
        last: dict[int, float] = {}
        last_server = server.cpu_seconds()
        last_machine = busy_cpu_seconds()
        last_t = time.monotonic()
        users_now = 0
        deadline = time.monotonic() + hold_s * len(steps) + 60
        while swarm.running and time.monotonic() < deadline:
            time.sleep(1.0)
            fresh = tail.read_new()
            if t0 is None:
                early.extend(fresh)
                t0 = next((float(r["t"]) for r in early if r.get("k") == "users"), None)
                fresh, early = (early, []) if t0 is not None else ([], early)
            for r in fresh:
                if "t" not in r:
                    continue
                assert t0 is not None
                t_s = r["t"] - t0
                second = math.floor(t_s)
                kind = r.get("k")
                if kind == "users":
                    users_now = r["n"]
                elif kind == "lag":
                    lag_records.append({**r, "t_s": t_s})
                elif kind == "req":
                    req_by_second[second] += 1
                    if not r["ok"]:
                        err_by_second[second] += 1
                        kinds_by_second.setdefault(second, Counter())[
                            f"{r['m']}:{r.get('err')}"
                        ] += 1
            now = time.monotonic()
            pids = swarm.pids()
            cpu = {pid: cpu_seconds(pid) for pid in pids}
            dt = now - last_t
            by_pid = {
                pid: (c - last[pid]) / dt for pid, c in cpu.items() if c is not None and pid in last
            }
            fractions = list(by_pid.values())
            last = {pid: c for pid, c in cpu.items() if c is not None}
            server_cpu, machine = server.cpu_seconds(), busy_cpu_seconds()
            if fractions:
                samples.append(
                    {
                        "t": now,
                        "users": users_now,
                        "cpu_cores": sum(fractions),
                        "busiest": max(fractions),
                        "master_cpu": by_pid.get(pids[0], 0.0),
                        "rss": sum(rss_bytes(pid) for pid in pids),
                        "server_cpu": (server_cpu - last_server) / dt,
                        "machine_cpu": (machine - last_machine) / dt,
                    }
                )
            last_server, last_machine, last_t = server_cpu, machine, now
            if t0 is None:
                continue
            for index in range(len(steps)):
                if index not in judged and now > t0 + hold_s * (index + 1) + 1.5:
                    judged[index] = judge_step(index)
                    if judged[index]["saturated"] and stopped_early_at is None:
                        stopped_early_at = index
            if stopped_early_at is not None:
                break
    finally:
        if swarm is not None:
            swarm.stop()
        server.stop()
        asyncio.run(stack.down())
        stack.remove_run_dir()

    if t0 is not None:
        for index in range(len(steps)):
            if index not in judged and samples and samples[-1]["t"] >= t0 + hold_s * (index + 1):
                judged[index] = judge_step(index)
    results = [judged[i] for i in sorted(judged)]
    report(
        BENCH, figures_of(results, target, workers, hold_s, stack_up_s, time.monotonic() - started)
    )
    return 0


def figures_of(
    results: list[dict[str, Any]],
    target: str,
    workers: int,
    hold_s: float,
    stack_up_s: float,
    wall_s: float,
) -> list[Figure]:
    """Sessions held (last step before the first saturated one), memory per session (RSS
    slope over the steps held), requests/s and generator CPU at the held step."""
    from bench.common import Figure
    from harness.measure.resources import SATURATION_RULE

    held = None
    for result in results:
        if result["saturated"]:
            break
        held = result
    first_saturated = next((r for r in results if r["saturated"]), None)
    unsaturated = [r for r in results if not r["saturated"]]
    slope = least_squares_slope(
        [r["users"] for r in unsaturated], [r["generator_rss_mib"] * 2**20 for r in unsaturated]
    )
    sessions = held["users"] if held else 0
    by_cpu = None
    for result in results:
        if "cpu" in result["saturated_by"]:
            break
        by_cpu = result
    others = [r["others_cpu_cores"] for r in results]
    others_mean = sum(others) / len(others) if others else 0.0
    where = (
        "the canned endpoint (bench.canned; the reference server would be the bottleneck at "
        "these rates) with a LocalStack (Postgres primary + replica, Toxiproxy, reference "
        "server) running beside it"
        if target == "canned"
        else "the reference server through the LocalStack's Toxiproxy"
    )
    stop = (
        f"step {first_saturated['users']} saturated by {'+'.join(first_saturated['saturated_by'])}"
        if first_saturated
        else "no step saturated: the figure is a floor (the steps ended)"
    )
    stop += (
        f"; other processes on the machine (other people's work) used {others_mean:.2f} "
        "cores on average meanwhile"
    )
    note = (
        f"harness Swarm, 1 master + {workers} workers, think {THINK_S[0]:g}-{THINK_S[1]:g} s, "
        f"default tool mix, against {where}; {stop}. Each step judged exactly as a real run "
        f"judges its generator (harness.measure.resources: generator_saturation on the Locust "
        f"processes' CPU sampled each second, loop_lag_by_second and loop_lag_saturation on "
        f"the lag records every Locust process, master included, writes into the swarm's "
        f"records file) over the whole seconds of its last {min(JUDGE_S, hold_s):g} s on the "
        "run's time axis. "
        f"Saturation: {SATURATION_RULE}."
    )
    detail = {
        "steps": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in results
        ],
        "target": target,
        "workers": workers,
        "think_time_s": list(THINK_S),
        "hold_s_per_step": hold_s,
        "judged_s_per_step": min(JUDGE_S, hold_s),
        "stack_up_s": round(stack_up_s, 1),
        "bench_wall_s": round(wall_s, 1),
    }
    figures = [
        Figure(
            BENCH,
            "sessions_held",
            float(sessions),
            "sessions",
            goal=f">= {GOAL_SESSIONS} sessions",
            met=sessions >= GOAL_SESSIONS,
            note=note,
            detail=detail,
        ),
        Figure(
            BENCH,
            "sessions_held_cpu_rule",
            float(by_cpu["users"] if by_cpu else 0),
            "sessions",
            note="by the CPU half of the harness's saturation rule alone (generator_saturation, "
            "without the event-loop lag half); "
            + (
                "no judged step passed it: a floor"
                if by_cpu is results[-1]
                else "the next step passed it"
            ),
        ),
        Figure(
            BENCH,
            "memory_per_session",
            (slope or 0.0) / 1024,
            "KiB/session",
            note="slope of the generator's RSS (master + workers) over the users of the steps held",
        ),
    ]
    if held:
        figures += [
            Figure(
                BENCH,
                "requests_per_s_at_held",
                held["requests_per_s"],
                "req/s",
                note=f"at {sessions} sessions; errors {held['errors_per_s']:.1f}/s",
            ),
            Figure(
                BENCH,
                "generator_cpu_at_held",
                held["generator_cpu_cores"],
                "cores",
                note=f"busiest Locust process {held['busiest_process_cpu_max']:.2f} of a core; "
                f"event loop lag max {held['lag_max_ms']:.0f} ms, mean {held['lag_mean_ms']:.1f} ms; "
                f"canned server at most {held['server_cpu_max']:.2f} of a core",
            ),
        ]
    return figures


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--hold", type=float, default=HOLD_S)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--target", choices=("canned", "reference"), default="canned")
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    return run(steps, args.hold, args.workers, args.target)


if __name__ == "__main__":
    sys.exit(main())
