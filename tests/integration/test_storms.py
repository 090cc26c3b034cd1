"""Reconnection storms on the real stack, at reduced size: every client that loses its
connection or session comes back and lists tools again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.measure.resources import LOOP_LAG_LIMIT_S
from tests.helpers import run_scenario

REPO = Path(__file__).resolve().parents[2]


def assert_everyone_came_back(result: dict, at_least_broken: int) -> None:
    reconnect = result["metrics"]["reconnect"]
    assert reconnect["clients_broken"] >= at_least_broken, reconnect
    assert reconnect["success_rate"] == 1.0, reconnect
    assert reconnect["time_to_reconnect_s"]["p50"] is not None
    end = int(result["scenario"]["load"]["run_time"])
    last_seconds = [row for row in result["timeline"] if end - 5 <= row["t_s"] < end - 1]
    assert len(last_seconds) == 4
    assert all(row["tools_list_p50_ms"] is not None for row in last_seconds), last_seconds
    assert result["faults"][0]["confirmed"] is True


def test_all_connections_of_300_clients_dropped(tmp_path: Path) -> None:
    code, result, output = run_scenario(
        tmp_path,
        """
name: drop_all
load: {users: 300, spawn_rate: 150, run_time: 30s, think_time: [500ms, 1s], reconnect: {policy: backoff, base: 100ms, cap: 2s}}
faults: [{kind: proxy_down, at: 7s, duration: 2s, proxy: mcp}]
windows: {reconnect: 23s, stability: 3s}
objectives: [{metric: reconnect.success_rate, min: 100%}]
""",
    )
    # The slowest of 300 reconnects took 10.9 and 16.4 s in two runs (the herd after the
    # proxy returns), hence the 23 s window. 300 clients retrying a refused proxy can
    # saturate the one worker during the 2 s outage: then the run is rightly inconclusive
    # on the reconnect objective, and the figures themselves must still show everyone back.
    saturated = [d for d in result["doubts"] if "saturated during" in d]
    assert code == 0 or (code == 3 and saturated), output[-3000:]
    assert_everyone_came_back(
        result, at_least_broken=200
    )  # a client in think time may miss the 2 s
    kinds = result["metrics"]["requests"]["errors_by_kind"]
    assert set(kinds) & {"connect_refused", "connect_reset"}, kinds


@pytest.mark.parametrize("protocol", ["2025-11-25", "2026-07-28"])
def test_server_restart_in_both_protocol_eras(tmp_path: Path, protocol: str) -> None:
    code, result, output = run_scenario(
        tmp_path,
        f"""
name: restart_{protocol.replace("-", "_")}
load: {{users: 150, spawn_rate: 150, run_time: 16s, think_time: [500ms, 1s], protocol: "{protocol}"}}
faults: [{{kind: kill_server, at: 5s, restart_after: 1s}}]
windows: {{reconnect: 9s, stability: 3s}}
objectives: [{{metric: reconnect.success_rate, min: 100%}}, {{metric: writes.lost_unintended, max: 0}}]
""",
    )
    assert code == 0, output[-3000:]
    assert_everyone_came_back(result, at_least_broken=120)
    initialize_peak = result["metrics"]["reconnect"]["initialize_per_s_peak"]
    if protocol == "2026-07-28":
        assert initialize_peak is None
    else:
        assert initialize_peak >= 50
    assert result["metrics"]["server"]["sessions_open_peak"] is not None


def test_killing_one_of_two_instances_storms_only_its_share(tmp_path: Path) -> None:
    code, result, output = run_scenario(
        tmp_path,
        """
name: one_of_two
server: {instances: 2}
load: {users: 200, spawn_rate: 200, run_time: 16s, think_time: [500ms, 1s]}
faults: [{kind: kill_server, at: 5s, instance: 0, restart_after: null}]
windows: {reconnect: 9s, stability: 3s}
objectives: [{metric: reconnect.success_rate, min: 100%}]
""",
    )
    assert code == 0, output[-3000:]
    broken = result["metrics"]["reconnect"]["clients_broken"]
    # The sessions that lived on instance 0 break (how many HAProxy put there varied from 4
    # to 153 of 200 across runs); the storm never takes every client.
    assert 0 < broken < 190, broken
    assert result["metrics"]["reconnect"]["success_rate"] == 1.0


def test_an_overloaded_generator_makes_the_run_inconclusive(tmp_path: Path) -> None:
    """300 clients retrying every 10 ms on one pinned worker, hammering a proxy that refuses
    every connection: the worker burns its whole core, and the run must say so."""
    code, result, output = run_scenario(
        tmp_path,
        """
name: overload
load: {users: 300, spawn_rate: 300, run_time: 10s, think_time: [0s, 0s], tool_mix: {tools/list: 1}, reconnect: {policy: immediate, base: 10ms}, cpu_split: "on"}
faults: [{kind: proxy_down, at: 3s, proxy: mcp}]
objectives: [{metric: tools_list_latency_ms.p99, max: 100s}]
""",
    )
    assert code == 3, output[-3000:]
    (latency,) = result["objectives"]
    assert latency["verdict"] == "not_measured" and "saturated" in latency["reason"], latency
    generator = result["metrics"]["generator"]
    assert generator["saturated"] is True and generator["cores_available"] == 1
    assert "cpu" in generator["saturated_by"], generator
    assert (
        generator["loop_lag_ms_worst_second"] is not None
    )  # every Locust process reports its loop
    assert result["verdict"] == "inconclusive"
    assert any("saturated" in doubt for doubt in result["doubts"])


@pytest.mark.shares_machine  # 40 users: only the pauses it makes can saturate the generator
def test_a_paused_generator_makes_the_run_inconclusive_by_its_loop_lag(tmp_path: Path) -> None:
    """The generator's worker is stopped for 0.5 s in six seconds running (SIGSTOP, as a
    host stealing its CPU would): it burns almost no CPU, so only its event loop's lateness
    can tell, and the run must be inconclusive for that reason."""
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(
        "name: paused_generator\n"
        "load: {users: 40, spawn_rate: 40, run_time: 14s, think_time: [500ms, 1s]}\n"
        "objectives: [{metric: tools_list_latency_ms.p99, max: 100s}]\n"
    )
    out = tmp_path / "results"
    cli = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        worker = wait_for_worker(cli.pid, timeout_s=60)
        time.sleep(3)
        for _ in range(6):
            os.kill(worker, signal.SIGSTOP)
            time.sleep(0.5)
            os.kill(worker, signal.SIGCONT)
            time.sleep(0.5)
        output, _ = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 3, output[-3000:]
    (run_dir,) = out.iterdir()
    result = json.loads((run_dir / "result.json").read_text())
    generator = result["metrics"]["generator"]
    assert generator["saturated_by"] == ["loop_lag"], generator
    assert generator["loop_lag_ms_worst_second"] > 1000 * LOOP_LAG_LIMIT_S, generator
    assert any("event loop late" in doubt for doubt in result["doubts"]), result["doubts"]
    # The doubt touches the latency it measured: the objective is not measured, not met.
    assert result["objectives"][0]["verdict"] == "not_measured", result["objectives"]


def wait_for_worker(harness_pid: int, timeout_s: float) -> int:
    """The pid of the Locust worker that the run ``harness_pid`` started (its child: the
    harness's environment does not reach it, so no mark set there can find it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            if b"--worker" in cmdline and b"locustfile.py" in cmdline and parent == harness_pid:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError("no Locust worker of the run appeared")
