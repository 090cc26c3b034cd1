"""A server the user runs (``server.url``) is told which database to use: the harness
writes the run's DSN to ``server.database_url_file`` once Postgres is up, waits for the
server, and removes the file when the stack stops.

The server here is the example (``examples/notes_server.py``) behind a wrapper that waits
for the file, as a team's compose ``env_file`` or start script would. Every write it
acknowledges must be in the run's database (the ledger reads it back from there): a
server left on another database would lose them all. The run is judged on writes only,
so it may share the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.stack.net import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "notes_server.py"

pytestmark = pytest.mark.shares_machine


def test_a_server_run_by_the_user_gets_the_runs_database_from_a_file(tmp_path: Path) -> None:
    port = free_port()
    handed = tmp_path / "handover" / "database.env"
    wrapper = (
        f'while [ ! -f "{handed}" ]; do sleep 0.1; done; set -a; . "{handed}"; set +a; '
        f'exec "{sys.executable}" "{EXAMPLE}" --port {port}'
    )
    scenario = tmp_path / "url_server.yaml"
    scenario.write_text(
        "name: url_server\n"
        "postgres: {settings: {wal_retrieve_retry_interval: 100ms}}\n"
        f"server: {{url: 'http://127.0.0.1:{port}/mcp', ready: /healthz, ready_timeout: 60s,\n"
        f"         database_url_file: '{handed}'}}\n"
        "load: {users: 10, spawn_rate: 10, run_time: 22s,\n"
        "       tool_mix: {tools/list: 2, create_note: 2}}\n"
        "faults: [{kind: kill_primary, at: 9s}]\n"
        "recovery: {promote_after: 1s}\n"
        "windows: {stability: 2s, reconnect: 10s}\n"
        "objectives: [{metric: writes.lost_unintended, max: 0}]\n"
    )
    server = subprocess.Popen(
        ["sh", "-c", wrapper], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.cli",
                "run",
                str(scenario),
                "--out",
                str(tmp_path / "out"),
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=REPO,
        )
    finally:
        server.kill()  # the process this test started, by its handle
        server.wait(timeout=10)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (result_path,) = (tmp_path / "out").glob("*/result.json")
    writes = json.loads(result_path.read_text())["metrics"]["writes"]
    assert writes["acknowledged"] > 20 and writes["lost_unintended"] == 0, writes
    assert not handed.exists(), "the file holds the password: removed when the stack stopped"
