"""Load generator efficiency: requests/s per generator core of our MCP user against
plain Locust, against the same canned endpoint, in one run, alternating.

Three generators, each one Locust process (Locust as a library, its own process)
pinned to one core, no think time, ``USERS`` users, against ``bench.canned`` pinned
to the other core:

- ``baseline``: a plain ``FastHttpUser`` POSTing a fixed JSON-RPC-sized body to
  ``/plain`` (the reply is as many bytes as a tools/list reply);
- ``mcp_tools_list``: ``McpUser`` (with the locustfile's record stream, as a run
  has it) doing tools/list on the session it opened at start;
- ``mcp_storm``: ``McpUser`` doing the reconnect path over and over: initialize,
  notifications/initialized, tools/list (3 HTTP requests a cycle), with the
  broken / reconnected records a storm writes.

Each round runs the three in a rotated order (drift on a shared machine hits
all of them); each measures a steady window after a warm-up: requests counted by
Locust and the generator's CPU seconds from ``/proc/<pid>/stat``, so
``req/s per core = requests / CPU seconds``. The figure is the median over rounds.
The canned server's CPU seconds over the same window tell it was not the
bottleneck (its fraction of a core stays well under 1).

``python -m bench.generator [--rounds 3] [--window 12] [--users 64]``;
``--profile KIND`` instead runs one generator under py-spy and prints its top.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import canned
from bench.common import Figure, report

BENCH = "generator"
KINDS = ("baseline", "mcp_tools_list", "mcp_storm")
USERS = 64
WARMUP_S = 3.0
WINDOW_S = 10.0
ROUNDS = 3
GOAL_RATIO = 0.5
SERVER_CPU_LIMIT = 0.8
"""The server counts as not the bottleneck while it uses less than this fraction of its core."""
PLAIN_REQUEST = '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'


def pick_cpus() -> tuple[set[int], set[int]]:
    """(generator cores, server cores): one each when two are usable, else shared."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) >= 2:
        return {usable[0]}, {usable[1]}
    return set(usable), set(usable)


# --- the driver: runs in its own process, imports Locust (which patches the stdlib) ---


def drive(
    kind: str,
    host: str,
    users: int,
    warmup_s: float,
    window_s: float,
    server_pids: list[int],
    work_dir: Path,
) -> dict[str, Any]:
    """One generator: start ``users`` users, wait ``warmup_s``, measure ``window_s``."""
    import gevent
    from locust import FastHttpUser, constant, events, task
    from locust.env import Environment

    user_class: type[FastHttpUser]
    if kind == "baseline":

        class PlainUser(FastHttpUser):
            wait_time = constant(0)
            concurrency = 1

            @task
            def post(self) -> None:
                self.client.post(
                    "/plain", data=PLAIN_REQUEST, headers={"Content-Type": "application/json"}
                )

        user_class = PlainUser
    else:
        from harness.load import locustfile  # noqa: F401  (registers the record stream)
        from harness.load.settings import LoadSettings
        from harness.load.user import McpUser
        from harness.mcp_client.wire import ErrorKind

        McpUser.settings = LoadSettings(
            records_path=str(work_dir / f"records-{kind}.jsonl"),
            think_time_s=(0.0, 0.0),
            tool_mix={"tools/list": 1.0},
            reconnect_policy="immediate",
        )
        if kind == "mcp_tools_list":
            user_class = McpUser
        else:

            def storm_cycle(user: McpUser) -> None:
                user.connect(broken_by=ErrorKind.HTTP_404)

            class StormUser(McpUser):
                pass

            # set after the class is made: Locust's metaclass would add McpUser's own task
            StormUser.tasks = [storm_cycle]
            user_class = StormUser

    env = Environment(user_classes=[user_class], host=host, events=events)
    runner = env.create_local_runner()
    events.init.fire(environment=env, runner=runner, web_ui=None)
    runner.start(users, spawn_rate=users)
    gevent.sleep(warmup_s)

    def snapshot() -> tuple[float, int, int, float, float]:
        total = env.stats.total
        server = sum(canned.cpu_seconds(pid) for pid in server_pids)
        own = canned.cpu_seconds(os.getpid())
        return time.monotonic(), total.num_requests, total.num_failures, own, server

    t0, n0, f0, cpu0, srv0 = snapshot()
    gevent.sleep(window_s)
    t1, n1, f1, cpu1, srv1 = snapshot()
    runner.quit()
    elapsed = t1 - t0
    requests = n1 - n0
    cpu_s = cpu1 - cpu0
    return {
        "kind": kind,
        "users": users,
        "window_s": elapsed,
        "requests": requests,
        "failures": f1 - f0,
        "cpu_s": cpu_s,
        "rps": requests / elapsed,
        "rps_per_core": requests / cpu_s if cpu_s > 0 else 0.0,
        "cpu_fraction": cpu_s / elapsed,
        "server_cpu_fraction": (srv1 - srv0) / elapsed,
    }


def run_driver(
    kind: str,
    server: canned.Canned,
    cpus: set[int],
    users: int,
    window_s: float,
    work_dir: Path,
    wrap: list[str] | None = None,
) -> dict[str, Any]:
    """Run one generator as its own process pinned to ``cpus``; its measured window."""
    argv = [
        sys.executable, "-m", "bench.generator", "--drive", kind,
        "--host", server.url, "--users", str(users), "--window", str(window_s),
        "--work-dir", str(work_dir), "--cpus", ",".join(map(str, sorted(cpus))),
        "--server-pids", ",".join(map(str, server.pids)),
    ]  # fmt: skip
    out = subprocess.run(
        (wrap or []) + argv,
        cwd=canned.REPO,
        capture_output=True,
        text=True,
        timeout=window_s + WARMUP_S + 60,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"generator {kind} failed ({out.returncode}): {out.stderr[-2000:]}")
    if wrap:
        print(out.stdout, out.stderr[-3000:], sep="\n")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def figures_of(results: list[dict[str, Any]], cpus: dict[str, list[int]]) -> list[Figure]:
    by_kind = {k: [r for r in results if r["kind"] == k] for k in KINDS}
    median = {k: statistics.median(r["rps_per_core"] for r in rs) for k, rs in by_kind.items()}
    server_max = max(r["server_cpu_fraction"] for r in results)
    server_ok = server_max < SERVER_CPU_LIMIT
    server_note = (
        f"canned server (pinned to CPU {cpus['server']}) used at most {server_max:.2f} of its "
        f"core in any window: {'not' if server_ok else 'POSSIBLY'} the bottleneck"
    )
    rounds = len(by_kind["baseline"])
    per_round_ratio = {
        k: [
            b["rps_per_core"] / a["rps_per_core"]
            for a, b in zip(by_kind["baseline"], by_kind[k], strict=True)
        ]
        for k in KINDS[1:]
    }
    figures = []
    for kind in KINDS:
        rs = by_kind[kind]
        detail: dict[str, Any] = {
            "rounds": rounds,
            "users": rs[0]["users"],
            "rps_per_core_by_round": [round(r["rps_per_core"]) for r in rs],
            "rps_by_round": [round(r["rps"]) for r in rs],
            "generator_cpu_fraction_by_round": [round(r["cpu_fraction"], 2) for r in rs],
            "server_cpu_fraction_by_round": [round(r["server_cpu_fraction"], 2) for r in rs],
            "failures": sum(r["failures"] for r in rs),
            "generator_cpus": cpus["generator"],
            "server_cpus": cpus["server"],
        }
        if kind in per_round_ratio:
            detail["ratio_by_round"] = [round(x, 2) for x in per_round_ratio[kind]]
        if kind == "mcp_storm":
            detail["handshakes_per_core"] = round(median[kind] / 3)
        figure = Figure(
            BENCH,
            f"{kind}_rps_per_core",
            median[kind],
            "req/s per core",
            baseline=None if kind == "baseline" else "baseline_rps_per_core",
            note=server_note,
            detail=detail,
        )
        if kind == "mcp_tools_list":
            figure.goal = f">= {GOAL_RATIO}x baseline per core"
            figure.met = median[kind] >= GOAL_RATIO * median["baseline"] and server_ok
        figures.append(figure)
    figures.append(
        Figure(
            BENCH,
            "canned_server_cpu_max",
            server_max,
            "cores",
            goal=f"< {SERVER_CPU_LIMIT} (server not the bottleneck)",
            met=server_ok,
            note=server_note,
        )
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generator", description=__doc__)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--window", type=float, default=WINDOW_S)
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--profile", choices=KINDS, help="run one generator under py-spy top")
    parser.add_argument("--drive", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", help=argparse.SUPPRESS)
    parser.add_argument("--server-pids", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        if args.cpus:
            os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        pids = [int(p) for p in args.server_pids.split(",")] if args.server_pids else []
        result = drive(
            args.drive, args.host, args.users, WARMUP_S, args.window, pids, Path(args.work_dir)
        )
        print(json.dumps(result), flush=True)
        return 0

    gen_cpus, server_cpus = pick_cpus()
    cpus = {"generator": sorted(gen_cpus), "server": sorted(server_cpus)}
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-generator-") as tmp,
        canned.start(processes=1, cpus=server_cpus) as server,
    ):
        if args.profile:
            return profile(args.profile, server, gen_cpus, args.users, args.window, Path(tmp))
        for round_index in range(args.rounds):
            order = KINDS[round_index % 3 :] + KINDS[: round_index % 3]
            for kind in order:
                result = run_driver(kind, server, gen_cpus, args.users, args.window, Path(tmp))
                results.append(result)
                print(
                    f"round {round_index + 1} {kind:15s} {result['rps']:8.0f} req/s "
                    f"{result['rps_per_core']:8.0f} req/s/core  generator "
                    f"{result['cpu_fraction']:.2f} core  server "
                    f"{result['server_cpu_fraction']:.2f} core  failures {result['failures']}",
                    flush=True,
                )
    report(BENCH, figures_of(results, cpus))
    return 0


def profile(
    kind: str, server: canned.Canned, cpus: set[int], users: int, window_s: float, work_dir: Path
) -> int:
    """One generator under ``py-spy record`` (raw folded stacks) then a flat summary."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = work_dir / f"{kind}.folded"
    wrap = [
        py_spy,
        "record",
        "--gil",
        "--nonblocking",
        "--format",
        "raw",
        "--rate",
        "250",
        "-o",
        str(out),
        "--",
    ]
    result = run_driver(kind, server, cpus, users, window_s, work_dir, wrap=wrap)
    print(json.dumps(result))
    keep = Path(f"/tmp/bench-profile-{kind}.folded")
    shutil.copy(out, keep)
    print(f"folded stacks: {keep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
