"""The simulated MCP client: a Locust user that speaks MCP over streamable HTTP itself.

The SDK's asyncio client cannot run once per greenlet, so each user frames its
JSON-RPC with ``wire`` and sends it with Locust's gevent HTTP client. Every
request is timed by Locust under its MCP method name and carries the user's id
in the request context; session and write records (broken, reconnected,
write_attempt, write) are fired on ``McpUser.record_event``. The locustfile
turns both into the records the harness reads.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import gevent
from locust import FastHttpUser, task
from locust.event import EventHook

from harness.load.settings import LoadSettings, load_from_env
from harness.load.wire import (
    ErrorKind,
    McpOutcome,
    McpRequest,
    McpSession,
    new_note,
    note_checksum,
    note_search_term,
    outcome_of,
    transport_failure,
)

if TYPE_CHECKING:
    from locust.contrib.fasthttp import ResponseContextManager
    from locust.env import Environment

Record = dict[str, Any]

USER_CONTEXT_KEY = "mcp_user"
"""Key of the user id in the context of the request events McpUser fires."""

USER_ID_STRIDE = 1_000_000
"""User ids are ``worker_index * USER_ID_STRIDE + n``: unique within a run."""

MAX_REMEMBERED_NOTES = 100
MAX_BACKOFF_EXPONENT = 30

_user_numbers = itertools.count()


class McpRequestFailed(Exception):
    """An MCP exchange failure as Locust records it; ``kind`` is the error kind."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(f"{kind.value}: {detail}" if detail else kind.value)
        self.kind = kind


class McpUser(FastHttpUser):
    """One MCP client: a session, a weighted mix of operations, a new session when one breaks."""

    settings: ClassVar[LoadSettings | None] = None
    """Shared by all users of the process; read from ``MCP_HARNESS_LOAD`` when not set."""

    record_event: ClassVar[EventHook] = EventHook()
    """Fired with ``record=<dict>`` for every session and write record."""

    concurrency = 1

    def __init__(self, environment: Environment) -> None:
        self.load = self.configured_settings()
        self.network_timeout = self.load.request_timeout_s
        self.connection_timeout = self.load.request_timeout_s
        super().__init__(environment)
        worker_index = max(getattr(environment.runner, "worker_index", 0), 0)
        self.user_id = worker_index * USER_ID_STRIDE + next(_user_numbers)
        self.rng = random.Random(f"{self.load.seed}:{self.user_id}")
        self.session = McpSession(self.load.protocol, self.load.headers)
        self.note_prefix = f"{self.load.id_prefix}-{self.user_id}"
        self.written_note_ids: deque[str] = deque(maxlen=MAX_REMEMBERED_NOTES)
        self.ops = list(self.load.tool_mix)
        self.op_weights = [self.load.tool_mix[op] for op in self.ops]

    @classmethod
    def configured_settings(cls) -> LoadSettings:
        if cls.settings is None:
            cls.settings = load_from_env()
        return cls.settings

    def context(self) -> dict[str, Any]:
        return {USER_CONTEXT_KEY: self.user_id}

    def wait_time(self) -> float:
        low, high = self.load.think_time_s
        return self.rng.uniform(low, high)

    def on_start(self) -> None:
        self.start_session(broken_by=None)

    @task
    def run_one_operation(self) -> None:
        op = self.rng.choices(self.ops, self.op_weights)[0]
        outcome = self.perform(op)
        if outcome.breaks_session:
            assert outcome.error_kind is not None
            self.start_session(broken_by=outcome.error_kind)

    def perform(self, op: str) -> McpOutcome:
        if op == "tools/list":
            return self.send(self.session.tools_list())
        if op == "create_note" or (op == "get_note" and not self.written_note_ids):
            return self.create_note()
        if op == "get_note":
            note_id = self.rng.choice(self.written_note_ids)
            return self.send(self.session.tools_call("get_note", {"id": note_id}))
        if op == "search_notes":
            arguments = {"query": note_search_term(self.rng), "limit": 10}
            return self.send(self.session.tools_call("search_notes", arguments))
        return self.send(self.session.tools_call("notes_report", {}))

    def create_note(self) -> McpOutcome:
        """Write one note, recording the attempt before and the acknowledgement after."""
        note_id, title, body = new_note(self.note_prefix, self.rng)
        self.emit({"k": "write_attempt", "t": time.monotonic(), "id": note_id, "u": self.user_id})
        arguments = {"id": note_id, "title": title, "body": body}
        outcome = self.send(self.session.tools_call("create_note", arguments))
        if outcome.ok:
            acked_at = time.monotonic()
            checksum = note_checksum(title, body)
            self.emit(
                {"k": "write", "t": acked_at, "id": note_id, "sum": checksum, "u": self.user_id}
            )
            self.written_note_ids.append(note_id)
        return outcome

    def start_session(self, broken_by: ErrorKind | None) -> None:
        """Handshake until a session works, pacing attempts by the reconnect policy.

        ``broken_by`` is the failure that broke the previous session; None for
        the first session, which is neither broken nor reconnected.
        """
        broken_at = time.monotonic()
        if broken_by is not None:
            self.emit({"k": "broken", "t": broken_at, "u": self.user_id, "reason": broken_by.value})
        attempt = 0
        while True:
            self.pause_before_attempt(attempt)
            attempt += 1
            if self.handshake():
                break
        if broken_by is not None:
            now = time.monotonic()
            self.emit(
                {
                    "k": "reconnected",
                    "t": now,
                    "u": self.user_id,
                    "duration_s": now - broken_at,
                    "attempts": attempt,
                }
            )

    def pause_before_attempt(self, attempt: int) -> None:
        """``backoff``: full jitter; ``immediate``: no pause first, then a think time per retry."""
        if self.load.reconnect_policy == "backoff":
            ceiling = self.load.backoff_base_s * 2 ** min(attempt, MAX_BACKOFF_EXPONENT)
            gevent.sleep(self.rng.uniform(0, min(self.load.backoff_cap_s, ceiling)))
        elif attempt > 0:
            gevent.sleep(self.wait_time())

    def handshake(self) -> bool:
        """initialize, notifications/initialized, tools/list on a fresh session."""
        self.session.reset()
        return (
            self.send(self.session.initialize()).ok
            and self.send(self.session.initialized()).ok
            and self.send(self.session.tools_list()).ok
        )

    def send(self, request: McpRequest) -> McpOutcome:
        """POST one message; Locust times it under ``request.stats_name`` with the MCP verdict."""
        with self.client.request(
            "POST",
            self.load.mcp_path,
            name=request.stats_name,
            data=request.body,
            headers=request.headers,
            catch_response=True,
        ) as response:
            outcome = self.judge(request, response)
            if outcome.error_kind is None:
                response.success()
            else:
                response.failure(McpRequestFailed(outcome.error_kind, outcome.detail))
        return outcome

    def judge(self, request: McpRequest, response: ResponseContextManager) -> McpOutcome:
        error = response.request_meta.get("exception")
        status = response.status_code
        if status == 0 or (error is not None and getattr(error, "response", None) is None):
            return transport_failure(error or "no response")
        content_type = header_value(response, "content-type")
        outcome = outcome_of(request, status, response.content, content_type)
        if request.method == "initialize":
            session_id = header_value(response, "mcp-session-id")
            outcome = self.session.accept_initialize(outcome, session_id)
        return outcome

    def emit(self, record: Record) -> None:
        self.record_event.fire(record=record)


def header_value(response: ResponseContextManager, name: str) -> str | None:
    """One header of a reply (the first, if repeated); names are case-insensitive."""
    value = response.headers.get(name) if response.headers is not None else None
    if isinstance(value, list):
        return value[0] if value else None
    return value
