"""Shared fixtures. Integration tests share one local stack per session where they can
(tests that break the stack, like a primary kill, bring up their own)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import Scenario
from harness.stack.local import LocalStack

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


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
