"""Ctrl-C during a run: everything stops, and a partial result.json says inconclusive."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.shipped import SCENARIOS_DIR
from harness.stack.processes import is_alive

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.shares_machine  # what an interrupted run leaves, not how fast it ran
def test_sigint_mid_run_stops_everything_and_writes_a_partial_result(tmp_path: Path) -> None:
    run = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(SCENARIOS_DIR / "primary_kill.yaml"),
         "-u", "50", "-r", "50", "-t", "60s", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(tmp_path.glob("*/logs/load-records.jsonl")):
            time.sleep(0.2)
        time.sleep(3)  # the load is running
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=90)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 3, output[-3000:]
    (run_dir,) = tmp_path.iterdir()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["verdict"] == "inconclusive"
    assert result["interrupted"] is True and result["complete"] is False
    assert result["duration_s"] < 50
    assert result["faults"][0]["confirmed"] is False
    started = json.loads((run_dir / "logs" / "processes.json").read_text())
    assert len(started) >= 5
    assert not [p for p in started if is_alive(p["pid"], p["start_ticks"])]
