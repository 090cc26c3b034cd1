"""Shared fixtures. Integration tests share one local stack per session where they can
(tests that break the stack, like a primary kill, bring up their own). ``make test``
hands a module with a module-scoped stack to one pytest-xdist worker, so its tests run in
order on that stack, and every other test to whichever worker is free
(``pytest_xdist_make_scheduler``).

Under pytest-xdist (``make test`` runs the real-stack tests on two workers) an
integration test has the machine to itself unless it is marked ``shares_machine``:
timing figures, saturation and loop-lag doubts and process-wide checks mean nothing
with another stack running beside them, and a doubt turns an objective the test expects
missed into not measured. Tests that only check figures a doubt does not touch (the
rows a restore kept, damage accounted for exactly) share it with each other. A
readers-writer lock on files does this: a shared test holds the lock shared, any other
holds it alone, and a test waiting to be alone stops new shared ones from starting."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.config import Scenario
from harness.stack.local import LocalStack

REPO = Path(__file__).resolve().parents[1]


def _modules_sharing_a_stack() -> frozenset[str]:
    """Integration modules with a module-scoped fixture (a stack their tests share)."""
    return frozenset(
        f"tests/integration/{path.name}"
        for path in (REPO / "tests" / "integration").glob("test_*.py")
        if 'scope="module"' in path.read_text()
    )


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadfile`` for the modules whose tests share a module-scoped stack; every
    other test is a unit of work of its own, so that a long module's tests run on both
    workers instead of making the suite's tail on one."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    sharing = _modules_sharing_a_stack()

    class ModuleOrTestScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in sharing else nodeid

    return ModuleOrTestScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
    items.sort(key=_alone_after_shared(items))


def _alone_after_shared(items: list[pytest.Item]) -> Callable[[pytest.Item], bool]:
    """Sort key: tests that share the machine first, those that need it alone after them.
    Each change between the two modes leaves a worker idle while the other finishes its
    test; grouped, the suite changes mode about once instead of at every alone test. A
    module whose tests share a stack stays in one piece (the sort is stable), alone if any
    of its tests is."""
    sharing = _modules_sharing_a_stack()

    def alone(item: pytest.Item) -> bool:
        return "integration" in item.path.parts and not item.get_closest_marker("shares_machine")

    module_alone = {
        path
        for path in sharing
        if any(alone(i) for i in items if i.path.relative_to(REPO).as_posix() == path)
    }

    def key(item: pytest.Item) -> bool:
        module = item.path.relative_to(REPO).as_posix()
        return module in module_alone if module in sharing else alone(item)

    return key


@contextmanager
def machine_lock(directory: Path, *, alone: bool) -> Iterator[None]:
    """Hold the machine shared or alone. The turnstile is taken first by everyone and
    kept by a test that waits to be alone, so shared tests cannot starve it."""
    directory.mkdir(mode=0o700, exist_ok=True)
    with (
        (directory / "turnstile").open("a") as turnstile,
        (directory / "machine").open("a") as machine,
    ):
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(machine, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(machine, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _machine_share(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    if "PYTEST_XDIST_WORKER" not in os.environ or not request.node.get_closest_marker(
        "integration"
    ):
        yield
        return
    alone = request.node.get_closest_marker("shares_machine") is None
    # Every worker's base temp sits in the run's own directory, which pytest cleans up.
    with machine_lock(tmp_path_factory.getbasetemp().parent / "machine-lock", alone=alone):
        yield


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """One running stack for the tests that only read from it or restore what they change."""
    stack = LocalStack(Scenario(name="test-session"))
    try:
        asyncio.run(stack.up())
    except BaseException:
        stack.remove_run_dir()  # up() stopped what it started; its logs go too
        raise
    try:
        yield stack
    finally:
        asyncio.run(stack.down())
        stack.remove_run_dir()
