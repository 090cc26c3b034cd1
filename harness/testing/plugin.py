"""pytest plugin ``mcp_harness`` (entry point ``pytest11``): resilience tests of your own.

Fixtures:

- ``mcp_stack`` (session): the stack under test, up when the first test asks for it
  and down at the end of the session (also on Ctrl-C or SIGTERM). ``.endpoints``,
  ``.stack`` (the harness's ``Stack``), ``.scenario``. Shared by the tests as long as
  it is clean: what a test changes and can undo is undone when it ends, and a test
  that killed the primary leaves a stack without a standby, so that one is brought
  down when the test ends and the next test gets a fresh stack
  (``harness.testing.stack`` says why).
- ``mcp_swarm``: ``with mcp_swarm(users=500) as swarm:`` runs real Locust MCP clients
  (``swarm.wait_recovered()``, ``swarm.observe()``, ``swarm.stats()``).
- ``chaos``: ``chaos.kill_primary()``, ``chaos.kill_server()``,
  ``with chaos.toxic("pg-primary", "latency", latency=500):``,
  ``with chaos.proxy_down("pg-replica"):``.
- ``mcp_ledger``: ``mcp_ledger.check()`` classifies every acknowledged write.

Options: ``--mcp-backend {local,docker}``, ``--mcp-scenario PATH`` (a scenario YAML for
the stack, the server and the clients; its faults and objectives are not used:
tests fire and judge), ``--mcp-max-users N`` (caps every swarm, for small machines;
also ``MCP_HARNESS_MAX_USERS``). Marker: ``resilience``.

Nothing here starts or imports anything heavy until a test asks for a fixture.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.config import Scenario
    from harness.testing.case import Case
    from harness.testing.chaos import Chaos
    from harness.testing.ledger import Ledger
    from harness.testing.stack import McpStack
    from harness.testing.swarm import SwarmFactory

BACKENDS = ("local", "docker")
MAX_USERS_ENV = "MCP_HARNESS_MAX_USERS"
STACK_KEY = pytest.StashKey["McpStack"]()
SCENARIO_KEY = pytest.StashKey["Scenario"]()

DEFAULT_POSTGRES_SETTINGS = {"wal_retrieve_retry_interval": "100ms"}
"""Without a scenario file: the reference server, and the standby retrying WAL every
100 ms as the shipped primary_kill scenario does (at the stock 5 s some promotions
take 5 s longer)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mcp-harness", "mcp-harness resilience tests")
    group.addoption(
        "--mcp-backend",
        choices=BACKENDS,
        default=None,
        help="where the stack runs: local processes (default) or docker (Testcontainers)",
    )
    group.addoption(
        "--mcp-scenario",
        default=None,
        metavar="PATH",
        help="scenario YAML describing the stack, the server and the clients "
        "(default: the reference server)",
    )
    group.addoption(
        "--mcp-max-users",
        type=int,
        default=None,
        metavar="N",
        help=f"cap every mcp_swarm at N users (also ${MAX_USERS_ENV})",
    )
    parser.addini("mcp_scenario", "scenario YAML for the mcp_stack fixture", default=None)
    parser.addini("mcp_backend", "backend of the mcp_stack fixture: local or docker", default=None)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; a bad option or scenario file stops the run here, before any
    test (usage error, exit code 4). A scenario file is read only when one is named."""
    config.addinivalue_line(
        "markers",
        "resilience: a resilience test against the mcp-harness stack (faults under load)",
    )
    max_users(config)
    _backend(config)
    if _scenario_path(config) is not None:
        config.stash[SCENARIO_KEY] = load_scenario(config)


def pytest_report_header(config: pytest.Config) -> str | None:
    """One line, only when the run was told something about the stack."""
    scenario, backend, cap = _scenario_path(config), _backend(config), max_users(config)
    if scenario is None and backend is None and cap is None:
        return None
    return (
        f"mcp-harness: backend {backend or 'as the scenario says'}, "
        f"scenario {scenario or 'default'}, users per swarm {f'at most {cap}' if cap else 'as asked'}"
    )


def _scenario_path(config: pytest.Config) -> str | None:
    path = config.getoption("--mcp-scenario") or config.getini("mcp_scenario")
    if not path:
        return None
    return str(Path(config.rootpath, path) if not Path(path).is_absolute() else path)


def _backend(config: pytest.Config) -> str | None:
    backend = config.getoption("--mcp-backend") or config.getini("mcp_backend") or None
    if backend is not None and backend not in BACKENDS:
        raise pytest.UsageError(f"mcp_backend = {backend!r}: use one of {', '.join(BACKENDS)}")
    return backend


def max_users(config: pytest.Config) -> int | None:
    """The cap on every swarm's users, from the option or the environment."""
    value = config.getoption("--mcp-max-users")
    if value is None:
        value = os.environ.get(MAX_USERS_ENV) or None
    if value is None:
        return None
    try:
        cap = int(value)
    except ValueError:
        cap = 0
    if cap < 1:
        raise pytest.UsageError(f"--mcp-max-users / {MAX_USERS_ENV}: {value!r} is not a count >= 1")
    return cap


def load_scenario(config: pytest.Config) -> Scenario:
    """The ``--mcp-scenario`` file, or the default; ``--mcp-backend`` over its backend."""
    from harness.config import PostgresConfig, Scenario, ScenarioError
    from harness.config import load_scenario as read_scenario

    path = _scenario_path(config)
    if path is None:
        scenario = Scenario(
            name="pytest", postgres=PostgresConfig(settings=DEFAULT_POSTGRES_SETTINGS)
        )
    else:
        try:
            scenario = read_scenario(path)
        except (ScenarioError, OSError) as exc:
            raise pytest.UsageError(f"--mcp-scenario: {exc}") from None
    backend = _backend(config)
    return scenario.model_copy(update={"backend": backend}) if backend else scenario


def _ensure_up(session: McpStack) -> None:
    """The stack up, or this test fails at setup with why (no traceback: it is not a bug
    in the test). Not a skip: a resilience gate that skips when it has no stack would
    pass without testing anything."""
    from harness.redaction import redact
    from harness.testing.stack import StackUnavailable

    try:
        session.ensure_up()
        return
    except StackUnavailable as exc:
        message = redact(str(exc))
    pytest.fail(message, pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A stack the previous test dirtied is replaced before this test's fixtures run."""
    session = item.config.stash.get(STACK_KEY, None)
    if session is not None and "mcp_stack" in getattr(item, "fixturenames", ()):
        _ensure_up(session)


@pytest.fixture(scope="session")
def mcp_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[McpStack]:
    """The session's running stack (see the module's docstring for reuse across tests)."""
    import atexit

    from harness.testing.stack import McpStack

    config = request.config
    scenario = config.stash.get(SCENARIO_KEY, None) or load_scenario(config)
    session = McpStack(scenario, tmp_path_factory.mktemp("mcp-harness-logs"))
    config.stash[STACK_KEY] = session
    atexit.register(session.close)
    try:
        _ensure_up(session)
        yield session
    finally:
        del config.stash[STACK_KEY]
        session.close()
        atexit.unregister(session.close)


@pytest.fixture
def _mcp_case(mcp_stack: McpStack) -> Iterator[Case]:
    """What the test's swarm, chaos and ledger share; cleaned up when the test ends."""
    from harness.testing.case import Case

    case = Case(mcp_stack)
    try:
        yield case
    finally:
        case.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test's faults and swarms on its time axis, shown with its failure."""
    case = getattr(item, "funcargs", {}).get("_mcp_case") if call.when == "call" else None
    if case is not None and case.events:
        from harness.report.text import plain

        # events carry server strings: redacted, control characters shown, not sent
        item.add_report_section("call", "mcp-harness timeline", plain(case.timeline()))
    report: pytest.TestReport = yield
    return report


@pytest.fixture
def mcp_swarm(_mcp_case: Case, request: pytest.FixtureRequest) -> SwarmFactory:
    """``with mcp_swarm(users=500) as swarm:``: Locust MCP clients on the stack."""
    from harness.testing.swarm import SwarmFactory

    return SwarmFactory(_mcp_case, max_users(request.config))


@pytest.fixture
def chaos(_mcp_case: Case) -> Chaos:
    """Faults: kill_primary, kill_server, toxic, proxy_down."""
    from harness.testing.chaos import Chaos

    return Chaos(_mcp_case)


@pytest.fixture
def mcp_ledger(_mcp_case: Case) -> Ledger:
    """The test's write ledger: ``mcp_ledger.check()`` after the faults."""
    from harness.testing.ledger import Ledger

    return Ledger(_mcp_case)
