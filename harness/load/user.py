"""The simulated MCP client: a Locust user that speaks MCP over streamable HTTP itself.

The SDK's asyncio client cannot run once per greenlet, so each user frames its
JSON-RPC with ``wire`` and sends it with Locust's gevent HTTP client. Every
request is timed by Locust under its MCP method name and carries the user's id
in the request context; session and write records (broken, reconnected,
write_attempt, write) are fired on ``McpUser.record_event``. Only a write tool
result that passes the scenario's success rule is acknowledged (``write``); an
unanswered write is sent again with the same id (``create_note``). The locustfile
turns both into the records the harness reads.

A (re)connection is: initialize, notifications/initialized, tools/list in
2025-11-25; a lone tools/list in the sessionless 2026-07-28. Its attempts are
paced by ``policy.ReconnectPolicy``.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import gevent
from geventhttpclient import HTTPParseError
from locust import FastHttpUser, task
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook

from harness.load.policy import Attempt
from harness.load.settings import OPS, USER_ID_STRIDE, LoadSettings, load_from_env
from harness.mcp_client.acks import ack_rule_for, judge_ack
from harness.mcp_client.wire import (
    ErrorKind,
    McpOutcome,
    McpRequest,
    McpSession,
    outcome_of,
    retry_unanswered_write,
    transport_failure,
)
from harness.mcp_client.writes import new_note, note_search_term

if TYPE_CHECKING:
    from locust.contrib.fasthttp import ResponseContextManager
    from locust.env import Environment

Record = dict[str, Any]

USER_CONTEXT_KEY = "mcp_user"
"""Key of the user id in the context of the request events McpUser fires."""

MAX_REMEMBERED_NOTES = 100

STREAM_READ_BYTES = 4096
STREAM_CLOSE_WAIT_S = 2.0
"""How long closing a held stream waits for its greenlet to finish."""

_user_numbers = itertools.count()


class McpRequestFailed(Exception):
    """An MCP exchange failure as Locust records it; ``kind`` is the error kind."""

    def __init__(self, kind: ErrorKind, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{kind.value}: {detail}" if detail else kind.value)
        self.kind = kind
        self.retry_after_s = retry_after_s


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
        self.policy = self.load.policy()
        self.write_template = self.load.write_template()
        self.ack_rule = self.load.ack_rule()
        self.note_prefix = f"{self.load.id_prefix}-{self.user_id}"
        self.written_note_ids: deque[str] = deque(maxlen=MAX_REMEMBERED_NOTES)
        self.ops = list(self.load.tool_mix)
        self.op_weights = [self.load.tool_mix[op] for op in self.ops]
        self.not_before = 0.0
        """Monotonic time before which the server asked not to be sent anything (Retry-After)."""
        self.stream: gevent.Greenlet[..., None] | None = None

    @classmethod
    def configured_settings(cls) -> LoadSettings:
        if cls.settings is None:
            cls.settings = load_from_env()
        return cls.settings

    @property
    def holds_stream(self) -> bool:
        return self.load.hold_stream and not self.session.sessionless

    def context(self) -> dict[str, Any]:
        return {USER_CONTEXT_KEY: self.user_id}

    def wait_time(self) -> float:
        """A think time, stretched to the end of a Retry-After the server sent."""
        low, high = self.load.think_time_s
        think_s = self.rng.uniform(low, high)
        return max(think_s, self.not_before - time.monotonic())

    def on_start(self) -> None:
        self.connect(broken_by=None)

    def on_stop(self) -> None:
        self.close_stream()

    @task
    def run_one_operation(self) -> None:
        op = self.rng.choices(self.ops, self.op_weights)[0]
        outcome = self.perform(op)
        if outcome.breaks_session:
            assert outcome.error_kind is not None
            self.connect(broken_by=outcome.error_kind)
        elif outcome.retry_after_s is not None:
            self.not_before = time.monotonic() + self.policy.retry_after_wait_s(
                outcome.retry_after_s
            )

    def perform(self, op: str) -> McpOutcome:
        """One operation of the mix. The reference server's read tools get arguments chosen
        per call; any other tool is called with the scenario's ``tool_arguments``."""
        if op == "tools/list":
            return self.send(self.session.tools_list())
        if op in ("create_note", self.write_template.tool) or (
            op == "get_note" and not self.written_note_ids
        ):
            return self.create_note()
        if op in self.load.tool_arguments or op not in OPS:
            return self.send(self.session.tools_call(op, self.load.tool_arguments.get(op, {})))
        if op == "get_note":
            note_id = self.rng.choice(self.written_note_ids)
            return self.send(self.session.tools_call("get_note", {"id": note_id}))
        if op == "search_notes":
            arguments = {"query": note_search_term(self.rng), "limit": 10}
            return self.send(self.session.tools_call("search_notes", arguments))
        return self.send(self.session.tools_call("notes_report", {}))

    def create_note(self) -> McpOutcome:
        """Write one note, recording each attempt before it is sent and the acknowledgement
        after.

        An acknowledgement is a reply that passes the scenario's success rule
        (``ack_rule``); a result that fails it is a ``tool_error``. A write that got no
        reply (``retry_unanswered_write``) is sent again with the same id and content,
        after a reconnection (such a failure always breaks the session), as an
        at-least-once client does; a ``write_attempt`` is recorded for every send. The
        outcome returned is the last send's: when it broke the session, the caller
        reconnects.
        """
        note_id, title, body = new_note(self.note_prefix, self.rng)
        parent = None
        if self.written_note_ids and self.rng.random() < self.load.parent_probability:
            parent = self.rng.choice(self.written_note_ids)
        arguments, checksum = self.write_template.render(note_id, title, body, parent)
        retries = 0
        while True:
            self.emit(
                {"k": "write_attempt", "t": time.monotonic(), "id": note_id, "u": self.user_id}
            )
            request = self.session.tools_call(self.write_template.tool, arguments)
            outcome = self.send(request)
            if not retry_unanswered_write(outcome.error_kind, retries, self.load.retry_unanswered):
                break
            retries += 1
            if outcome.breaks_session:
                assert outcome.error_kind is not None
                self.connect(broken_by=outcome.error_kind)
        if outcome.ok:
            acked_at = time.monotonic()
            self.emit(
                {"k": "write", "t": acked_at, "id": note_id, "sum": checksum, "u": self.user_id}
            )
            self.written_note_ids.append(note_id)
        return outcome

    def connect(self, broken_by: ErrorKind | None) -> None:
        """Attempt (re)connections until one works, paced by the reconnect policy.

        ``broken_by`` is the failure that broke the previous session (or, in
        2026-07-28, connection); None for the first, which is neither broken
        nor reconnected. A held stream belongs to the old session: it is
        closed first and opened again on the new one.
        """
        broken_at = time.monotonic()
        if broken_by is not None:
            self.emit({"k": "broken", "t": broken_at, "u": self.user_id, "reason": broken_by.value})
        self.close_stream()
        attempts = self.policy.run(self.handshake, self.rng, gevent.sleep)
        if broken_by is not None:
            now = time.monotonic()
            self.emit(
                {
                    "k": "reconnected",
                    "t": now,
                    "u": self.user_id,
                    "duration_s": now - broken_at,
                    "attempts": attempts,
                }
            )
        if self.holds_stream:
            self.open_stream()

    def handshake(self) -> Attempt:
        """One attempt: initialize, initialized, tools/list; in 2026-07-28 only tools/list."""
        if self.session.sessionless:
            outcome = self.send(self.session.tools_list())
        else:
            self.session.reset()
            outcome = self.send(self.session.initialize())
            if outcome.ok:
                outcome = self.send(self.session.initialized())
            if outcome.ok:
                outcome = self.send(self.session.tools_list())
        return Attempt(outcome.ok, outcome.retry_after_s)

    def send(self, request: McpRequest) -> McpOutcome:
        """POST one message; Locust times it under ``request.stats_name`` with the MCP verdict.

        A call of the write tool must also pass the scenario's success rule (``ack_rule_for``).
        """
        with self.client.request(
            "POST",
            self.load.mcp_path,
            name=request.stats_name,
            data=request.body,
            headers=request.headers,
            catch_response=True,
        ) as response:
            rule = ack_rule_for(request, self.write_template.tool, self.ack_rule)
            outcome = judge_ack(self.judge(request, response), rule)
            mark(response, outcome)
        return outcome

    def judge(self, request: McpRequest, response: ResponseContextManager) -> McpOutcome:
        """The verdict on one reply; a good initialize reply also opens the session."""
        outcome = judge_reply(request, response)
        if request.method == "initialize":
            session_id = header_value(response, "mcp-session-id")
            outcome = self.session.accept_initialize(outcome, session_id)
        return outcome

    def open_stream(self) -> None:
        """Hold the session's standalone GET stream in a greenlet of its own."""
        if self.session.session_id is not None:
            self.stream = gevent.spawn(self.hold_stream, self.session.open_stream())

    def close_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.kill(block=True, timeout=STREAM_CLOSE_WAIT_S)

    def hold_stream(self, request: McpRequest) -> None:
        """Open the stream (one request in the stats), then read it until it ends or is closed.

        It has its own connection pool, so it never takes the connection the
        user's POSTs use, and no read timeout: an idle stream is the normal
        case. Its end is not judged: a session that broke shows on the POSTs.
        The pool is closed on the way out, also when the greenlet is killed.
        """
        client = FastHttpSession(
            self.host,
            request_event=self.environment.events.request,
            user=self,
            insecure=self.insecure,
            network_timeout=None,
            connection_timeout=self.load.request_timeout_s,
            max_retries=0,
            concurrency=1,
        )
        try:
            with client.request(
                "GET",
                self.load.mcp_path,
                name=request.stats_name,
                headers=request.headers,
                stream=True,
                catch_response=True,
            ) as response:
                outcome = self.judge(request, response)
                mark(response, outcome)
            if outcome.ok:
                for _ in response.iter_content(STREAM_READ_BYTES, decode_content=False):
                    pass
        except (OSError, HTTPParseError):
            pass  # the stream's end, however it comes, is not measured
        finally:
            client.client.close()

    def emit(self, record: Record) -> None:
        self.record_event.fire(record=record)


def judge_reply(request: McpRequest, response: ResponseContextManager) -> McpOutcome:
    """The MCP verdict on what Locust's HTTP client got for ``request``.

    No status means no reply (refused, reset, timed out); neither does a
    status with an error that carries no response object: the headers came,
    the body was cut off or timed out. A stream's body is never read here.
    """
    error = response.request_meta.get("exception")
    status = response.status_code
    if status == 0 or (error is not None and getattr(error, "response", None) is None):
        return transport_failure(error or "no response")
    content_type = header_value(response, "content-type")
    body = None if request.http_method == "GET" else response.content
    retry_after = header_value(response, "retry-after")
    return outcome_of(request, status, body, content_type, retry_after=retry_after)


def mark(response: ResponseContextManager, outcome: McpOutcome) -> None:
    """Tell Locust the MCP verdict of one exchange (reported when its ``with`` block ends)."""
    if outcome.error_kind is None:
        response.success()
    else:
        failure = McpRequestFailed(outcome.error_kind, outcome.detail, outcome.retry_after_s)
        response.failure(failure)


def header_value(response: ResponseContextManager, name: str) -> str | None:
    """One header of a reply (the first, if repeated); names are case-insensitive."""
    value = response.headers.get(name) if response.headers is not None else None
    if isinstance(value, list):
        return value[0] if value else None
    return value
