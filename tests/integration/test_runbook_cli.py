"""`mcp-harness runbook` against a stack that `mcp-harness up` runs in another process:
check-only changes nothing; with the primary killed, --execute promotes the replica
through Postgres and repoints the server's pool through its admin endpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.shares_machine
"""Checks what the run did, not how fast: runs beside another such test."""

REPO = Path(__file__).resolve().parents[2]


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip


def test_runbook_against_a_running_stack() -> None:
    up = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert up.stdout is not None
        shown = json.loads(up.stdout.readline())
        credentials = shown["credentials_file"]
        assert oct(os.stat(credentials).st_mode & 0o777) == "0o600"

        checked = harness("runbook", "--check-only", "--stack", credentials)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "primary_connectivity" in checked.stdout and "fix" not in checked.stdout

        run_dir = Path(shown["run_dir"])
        postmaster = int((run_dir / "primary" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)  # started by our `up`: a dead primary machine

        executed = harness("runbook", "--execute")  # finds the running stack by itself
        out = executed.stdout + executed.stderr
        assert "primary_connectivity" in out and "fixed" in out, out
        assert "fix: done" in out, out
        # no standby streams now; a new one needs the processes `up` owns: said, not done
        assert re.search(r"replication_lag\s*│\s*fix_failed", executed.stdout), out
        said = " ".join(out.split())
        assert "replication_lag fix: failed" in said, out
        assert "a new replica needs the processes, which belong to `mcp-harness up`" in said, out
        after = harness("runbook", "--check-only", "--stack", credentials)
        assert re.search(r"primary_connectivity\s*│\s*healthy", after.stdout), after.stdout
        # the old replica is the primary now, with no standby of its own: an alert
        assert re.search(r"replication_lag\s*│\s*alert", after.stdout), after.stdout
        assert after.returncode == 1
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
    assert up.returncode == 0
    assert not Path(credentials).exists()  # passwords and tokens end with the stack
    assert not run_dir.exists()  # nothing left behind in the temporary directory
