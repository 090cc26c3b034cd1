"""The session's stack, shared by the tests that ask for it, and the loop it runs on.

The harness's stack is asyncio code; pytest tests are not. One event loop runs in a
thread of its own for the whole session and every call on the stack goes through
it (``StackLoop``), so a fault's background work (a promotion after a delay, a
server restart) keeps running while the test thread waits or measures.

Reuse across tests: a stack comes up once, when the first test asks for it, and
serves every later test as long as it is *clean*. What a test changes and can undo
is undone when it ends (toxics removed, proxies enabled, a killed server started
again: see ``case.Case.close``). What cannot be undone in place makes the stack
*dirty*: after ``chaos.kill_primary()`` the promoted replica is the primary and no
standby is left, so another primary kill would have nothing to fail over to.
A dirty stack is brought down when the test that dirtied it ends, and the next
test that asks for ``mcp_stack`` gets a fresh one (its own data, a new replica).
Rebuilding a replica in place was not chosen: after a promotion the old primary's
proxy still points at the dead node, and repointing proxies is each backend's own
business, not a test's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from harness.config import Scenario
from harness.redaction import copy_redacted
from harness.stack import Endpoints, Stack, open_stack

T = TypeVar("T")

UP_TIMEOUT_S = 180.0
DOWN_TIMEOUT_S = 60.0
CANCEL_WAIT_S = 30.0
"""After Ctrl-C, how long a cancelled stack call may take to unwind before cleanup."""


class StackUnavailable(RuntimeError):
    """The stack did not come up; the message says why and what to do."""


class StackLoop:
    """An asyncio event loop in a daemon thread, for calls from synchronous test code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="mcp-harness-stack", daemon=True
        )
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; it runs while the caller goes on."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coro`` on the loop and wait for it. On timeout or Ctrl-C it is cancelled
        and given a moment to unwind, so cleanup that follows never races it."""
        future = self.submit(coro)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            concurrent.futures.wait([future], CANCEL_WAIT_S)
            raise TimeoutError(f"gave up after {timeout_s:g} s") from None
        except BaseException:
            future.cancel()
            concurrent.futures.wait([future], CANCEL_WAIT_S)
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class McpStack:
    """The ``mcp_stack`` fixture: the session's running stack, replaced when dirty.

    ``stack`` is the harness's ``Stack`` (the same object ``mcp-harness run`` uses:
    endpoints, processes, Toxiproxy); ``endpoints`` its addresses. Read them in the
    test that uses them: after a test dirtied the stack, the next one gets another.
    """

    def __init__(self, scenario: Scenario, logs_dir: Path) -> None:
        self.scenario = scenario
        self.logs_dir = logs_dir
        """Each stack's process logs are copied here when it goes down."""
        self.loop = StackLoop()
        self.generation = 0
        """How many stacks this session brought up."""
        self.dirty: str | None = None
        """Why the current stack must not serve another test (None: it may)."""
        self._stack: Stack | None = None
        self._failure: str | None = None
        self.up_s: float | None = None
        """How long the current stack took to come up."""
        self._previous_sigterm: Any = None
        self.closed = False

    @property
    def backend(self) -> str:
        return self.scenario.backend

    @property
    def stack(self) -> Stack:
        if self._stack is None:
            raise StackUnavailable("the stack is not up (it was brought down after a test)")
        return self._stack

    @property
    def endpoints(self) -> Endpoints:
        return self.stack.endpoints

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = UP_TIMEOUT_S) -> T:
        """Run a coroutine (a ``Stack`` method) on the session's loop and wait for it."""
        return self.loop.run(coro, timeout_s)

    def ensure_up(self) -> Stack:
        """The clean stack for the next test: this one, or a fresh one if it was dirtied."""
        if self._failure is not None:
            raise StackUnavailable(self._failure)
        if self._stack is not None and self.dirty is not None:
            self.discard()
        if self._stack is None:
            self._bring_up()
        return self.stack

    def mark_dirty(self, reason: str) -> None:
        if self.dirty is None:
            self.dirty = reason

    def _bring_up(self) -> None:
        self._catch_sigterm()
        try:
            stack = open_stack(self.scenario)
        except Exception as exc:
            self._failure = self._unavailable(exc, started=False)
            raise StackUnavailable(self._failure) from None
        self.generation += 1
        started = time.monotonic()
        try:
            self.run(stack.up(), UP_TIMEOUT_S)
        except Exception as exc:
            self._stop(stack)
            self._failure = self._unavailable(exc)
            raise StackUnavailable(self._failure) from None
        except BaseException:
            self._stop(stack)
            raise
        self.up_s = time.monotonic() - started
        self._stack, self.dirty = stack, None

    def _unavailable(self, exc: BaseException, started: bool = True) -> str:
        message = f"mcp-harness: the {self.backend} stack did not come up: {exc}"
        if self.backend == "docker":
            message += "\nWithout Docker, run the tests with --mcp-backend local (local processes)."
        else:
            message += (
                "\n`mcp-harness doctor` lists what the local backend needs and how to get it."
            )
        if started:
            message += f"\nThe stack's process logs: {self.logs_dir / f'stack-{self.generation}'}"
        return message

    def discard(self) -> None:
        """Bring the current stack down now (its logs are kept in ``logs_dir``)."""
        stack, self._stack = self._stack, None
        self.dirty = None
        if stack is not None:
            self._stop(stack)

    def _stop(self, stack: Stack) -> None:
        try:
            self.run(stack.down(), DOWN_TIMEOUT_S)
        finally:
            target = self.logs_dir / f"stack-{self.generation}"
            target.mkdir(parents=True, exist_ok=True)
            for path in map(Path, stack.log_paths()):
                if path.exists():
                    copy_redacted(path, target / path.name)
            (target / "processes.json").write_text(json.dumps(stack.inventory(), indent=1))
            stack.remove_run_dir()

    def close(self) -> None:
        """End of the session (or Ctrl-C): the stack down, the loop stopped. Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self.discard()
        finally:
            self.loop.close()
            self._restore_sigterm()

    def _catch_sigterm(self) -> None:
        """While a stack runs, SIGTERM (a cancelled CI job) ends the session like Ctrl-C,
        so the stack is brought down instead of left running."""
        if (
            threading.current_thread() is not threading.main_thread()
            or self._previous_sigterm is not None  # SIG_DFL is 0: test for None, not falsy
        ):
            return

        def interrupt(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        self._previous_sigterm = signal.signal(signal.SIGTERM, interrupt) or signal.SIG_DFL

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
