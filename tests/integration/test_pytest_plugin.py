"""The pytest plugin as a team uses it: pytest run in a subprocess on test files of its
own, on the local backend (real Postgres, Toxiproxy, MCP server and Locust).

Sizes are small for a 2-core machine: swarms capped at 150 users, a 2 s stability
window. Every run's stacks must leave no process behind (their inventories, kept
with their logs, are checked by pid and start time).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.stack.processes import is_alive

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "test_my_server.py"
SMALL_SCENARIO = """\
name: plugin-test
postgres:
  settings:
    wal_retrieve_retry_interval: 100ms
windows:
  stability: 2s
"""


def stack_inventories(root: Path) -> list[list[dict]]:
    """The processes of every stack the run brought up and down."""
    return [json.loads(p.read_text()) for p in sorted(root.rglob("processes.json"))]


def assert_nothing_left(root: Path, stacks: int) -> None:
    inventories = stack_inventories(root)
    assert len(inventories) == stacks, inventories
    for inventory in inventories:
        assert {"toxiproxy", "postgres-primary", "mcp-server"} <= {p["name"] for p in inventory}
        alive = [p for p in inventory if is_alive(p["pid"], p["start_ticks"])]
        assert not alive, alive


def test_the_example_passes_on_the_local_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_my_server=EXAMPLE.read_text())
    scenario = pytester.makefile(".yaml", small=SMALL_SCENARIO)
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        "--mcp-max-users", "150", "--mcp-scenario", str(scenario), "-rA", timeout=240
    )
    took = time.monotonic() - started
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["mcp-harness: backend as the scenario says, scenario */small.yaml*"]
    )
    assert_nothing_left(pytester.path, stacks=1)  # the primary kill comes last: one stack
    assert took < 120, f"the example took {took:.0f} s"


@pytest.mark.shares_machine  # a server that never writes again misses by 30 s, not by ms
def test_the_examples_primary_loss_fails_a_server_that_cannot_write_after_it(
    pytester: pytest.Pytester,
) -> None:
    """docs/pytest.md's example, against a server known to be broken: its pool holds one
    host, the dead primary's, so no write works after the failover. The example must
    fail it (a reconnect rate would have passed it: no MCP session breaks)."""
    pytester.makepyfile(test_my_server=EXAMPLE.read_text())
    member = REPO / "tests" / "gallery" / "single_host_pool.py"
    command = json.dumps([sys.executable, str(member), "--port", "{port}"])
    scenario = pytester.makefile(
        ".yaml",
        broken=SMALL_SCENARIO
        + f"server: {{command: {command}}}\n"
        + "load: {tool_mix: {tools/list: 4, create_note: 2, get_note: 2}}\n",
    )
    result = pytester.runpytest_subprocess(
        "--mcp-max-users", "60", "--mcp-scenario", str(scenario), "-k", "primary_loss",
        "-rA", timeout=240,
    )  # fmt: skip
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*assert*recovered*failover_s*", "*recovered=False*"])
    assert_nothing_left(pytester.path, stacks=1)


CLEANUP_TESTS = """
import pytest
from pydantic import ValidationError


def test_fails_with_the_server_and_mcp_proxy_down(mcp_stack, chaos, mcp_ledger):
    chaos.proxy_down("mcp")  # not undone by the test
    chaos.kill_server(restart_after=None)
    assert mcp_ledger.write(1) == 1


def test_the_same_stack_comes_back_clean(mcp_stack, mcp_ledger, mcp_swarm, chaos):
    assert mcp_stack.generation == 1
    assert mcp_ledger.write(2) == 2
    with pytest.raises(RuntimeError, match="no fault was fired"):
        mcp_swarm(users=1).wait_recovered(timeout=1)
    with pytest.raises(ValidationError, match="not known for a latency toxic"):
        chaos.toxic("pg-primary", "latency", latencyy=5)
    with chaos.kill_server(restart_after=None):
        assert mcp_ledger.write(1) == 0
    assert mcp_ledger.write(1) == 1


def test_primary_killed_and_promoted_by_hand(mcp_stack, chaos, mcp_ledger):
    assert mcp_ledger.write(1) == 1
    chaos.kill_primary(promote_after=None)
    chaos.promote_replica()
    assert mcp_ledger.write(1) == 1
    checked = mcp_ledger.check()
    assert checked.acknowledged == 2 and checked.intact == 2, checked


@pytest.mark.resilience
def test_a_fresh_stack_after_the_primary_kill(mcp_stack, mcp_ledger):
    assert mcp_stack.generation == 2
    assert mcp_ledger.write(1) == 1
"""


@pytest.mark.shares_machine  # outcomes and cleanup, no load
def test_failures_are_reported_and_the_stack_is_cleaned_between_tests(
    pytester: pytest.Pytester,
) -> None:
    """A failing test is failed, with its faults in the report; what it left (a proxy
    down, a server dead) is undone for the next test, and a server killed in a ``with``
    block is back after it; a killed primary gets the next test a fresh stack."""
    pytester.makepyfile(test_cleanup=CLEANUP_TESTS)
    result = pytester.runpytest_subprocess("--strict-markers", timeout=240)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_fails_with_the_server_and_mcp_proxy_down*",
            "*Captured mcp-harness timeline call*",
            "*proxy mcp down (confirmed=True)*",
            "*kill_server [[]0[]] (confirmed=True)*",
        ]
    )
    assert_nothing_left(pytester.path, stacks=2)


def docker_engine_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.shares_machine
@pytest.mark.skipif(docker_engine_reachable(), reason="a Docker engine is reachable here")
def test_docker_backend_without_an_engine_errors_with_what_to_do(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_docker="""
        def test_one(mcp_stack):
            pass

        def test_two(mcp_stack, chaos):
            pass

        def test_without_the_stack():
            pass
        """
    )
    result = pytester.runpytest_subprocess("--mcp-backend", "docker", timeout=120)
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_one*",
            "mcp-harness: the docker stack did not come up: *",
            "Without Docker, run the tests with --mcp-backend local*",
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


@pytest.mark.shares_machine
def test_marker_registered_and_nothing_started_without_the_fixtures(
    pytester: pytest.Pytester,
) -> None:
    """The plugin is loaded in every pytest run where mcp-harness is installed: a run
    that asks for none of its fixtures imports nothing heavy and starts nothing."""
    pytester.makepyfile(
        test_plain="""
        import sys
        import pytest

        @pytest.mark.resilience
        def test_light():
            heavy = {"locust", "gevent", "asyncpg", "harness.testing.stack", "harness.stack"}
            assert not heavy & set(sys.modules)
        """
    )
    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not list(pytester.path.rglob("processes.json"))
    markers = pytester.runpytest_subprocess("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.resilience: *"])


@pytest.mark.shares_machine
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mcp-scenario", "missing.yaml"], "*--mcp-scenario: *missing.yaml*"),
        (["--mcp-max-users", "0"], "*--mcp-max-users*0*is not a count*"),
    ],
)
def test_bad_options_stop_the_run_before_any_test(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(test_x="def test_x(mcp_stack):\n    pass\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.shares_machine
def test_sigterm_brings_the_stack_down(pytester: pytest.Pytester) -> None:
    """A cancelled CI job: SIGTERM in the middle of a test ends the session like Ctrl-C,
    and the stack is brought down."""
    ready = pytester.path / "ready"
    pytester.makepyfile(
        test_long=f"""
        import pathlib, time

        def test_long(mcp_stack, mcp_ledger):
            assert mcp_ledger.write(1) == 1
            pathlib.Path({str(ready)!r}).write_text("up")
            time.sleep(120)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp", "tmp"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), process.communicate(timeout=10)[0].decode()[-3000:]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output.decode()[-3000:]
    assert_nothing_left(pytester.path, stacks=1)
