"""Unit tests of the reference server's storm protection: the pure logic on a fake clock
(token bucket and queue, storm detector, circuit breaker, connection table), and the glue
(ASGI admission middleware, tool guard, metrics) driven without a network or a database."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from mcp.server.mcpserver.exceptions import ToolError
from starlette.types import Message, Receive, Scope, Send

from harness.server.metrics import Metrics
from harness.server.notes import (
    DatabaseError,
    DatabaseUnavailable,
    NoteNotFound,
    is_infrastructure_failure,
)
from harness.server.protection import (
    AdmissionControl,
    Admitted,
    BreakerState,
    CircuitBreaker,
    ConnectionTracker,
    ProtectionSettings,
    Shed,
    SlidingCounts,
    StormDetector,
)
from harness.server.shield import (
    CIRCUIT_OPEN_TEXT,
    DEFERRED_TEXT,
    AdmissionMiddleware,
    Protection,
    is_initialize,
    overloaded_response,
    refusal_text_middleware,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- token bucket and queue -------------------------------------------------------------


def test_bucket_admits_the_burst_at_once_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    bucket = AdmissionControl(rate=10, burst=5, queue_max=0, max_wait_s=0, clock=clock)
    assert [bucket.request() for _ in range(5)] == [Admitted(0.0)] * 5
    refused = bucket.request()
    assert isinstance(refused, Shed) and refused.reason == "queue_full"
    clock.advance(0.1)
    assert bucket.request() == Admitted(0.0)
    assert isinstance(bucket.request(), Shed)
    clock.advance(0.35)
    assert [bucket.request() for _ in range(3)] == [Admitted(0.0)] * 3
    assert isinstance(bucket.request(), Shed)


def test_bucket_never_holds_more_than_the_burst() -> None:
    clock = FakeClock()
    bucket = AdmissionControl(rate=100, burst=3, queue_max=0, max_wait_s=0, clock=clock)
    clock.advance(3600)
    assert bucket.tokens() == 3
    results = [bucket.request() for _ in range(4)]
    assert results[:3] == [Admitted(0.0)] * 3 and isinstance(results[3], Shed)


def test_waiters_are_served_in_arrival_order_at_the_rate() -> None:
    clock = FakeClock()
    bucket = AdmissionControl(rate=4, burst=1, queue_max=10, max_wait_s=5, clock=clock)
    assert bucket.request() == Admitted(0.0)
    turns = []
    for _ in range(3):
        decision = bucket.request()
        assert isinstance(decision, Admitted)
        turns.append(clock.now + decision.wait_s)
    assert turns == pytest.approx([clock.now + 0.25, clock.now + 0.5, clock.now + 0.75])
    clock.advance(0.1)
    later = bucket.request()
    assert isinstance(later, Admitted)
    assert clock.now + later.wait_s == pytest.approx(turns[-1] + 0.25)
    assert bucket.queue_depth() == 4
    clock.advance(0.2)
    assert bucket.queue_depth() == 3
    clock.advance(10)
    assert bucket.queue_depth() == 0


def test_queue_is_bounded() -> None:
    clock = FakeClock()
    bucket = AdmissionControl(rate=1, burst=1, queue_max=2, max_wait_s=100, clock=clock)
    assert bucket.request() == Admitted(0.0)
    assert isinstance(bucket.request(), Admitted)
    assert isinstance(bucket.request(), Admitted)
    full = bucket.request()
    assert isinstance(full, Shed) and full.reason == "queue_full"
    assert bucket.queue_depth() == 2
    clock.advance(1.0)
    assert bucket.queue_depth() == 1
    assert isinstance(bucket.request(), Admitted)


def test_a_turn_later_than_the_max_wait_is_shed_at_once_with_whole_retry_after() -> None:
    clock = FakeClock()
    bucket = AdmissionControl(rate=2, burst=1, queue_max=100, max_wait_s=1.0, clock=clock)
    assert bucket.request() == Admitted(0.0)
    assert bucket.request() == Admitted(0.5)
    assert bucket.request() == Admitted(1.0)
    late = bucket.request()
    assert isinstance(late, Shed) and late.reason == "max_wait"
    assert isinstance(late.retry_after_s, int) and late.retry_after_s == 2
    assert bucket.queue_depth() == 2
    slow = AdmissionControl(rate=0.25, burst=1, queue_max=0, max_wait_s=0, clock=clock)
    slow.request()
    refused = slow.request()
    assert isinstance(refused, Shed) and refused.retry_after_s == 4
    fast = AdmissionControl(rate=1000, burst=1, queue_max=0, max_wait_s=0, clock=clock)
    fast.request()
    refused = fast.request()
    assert isinstance(refused, Shed) and refused.retry_after_s == 1


def test_admission_refuses_bad_parameters() -> None:
    for args in [(0, 1, 1, 1), (1, 0, 1, 1), (1, 1, -1, 1), (1, 1, 1, -1)]:
        with pytest.raises(ValueError):
            AdmissionControl(*args)


# --- storm detector ---------------------------------------------------------------------


def test_storm_starts_over_the_threshold_and_ends_under_half_of_it() -> None:
    clock = FakeClock()
    storm = StormDetector(threshold_per_s=10, window_s=3.0, clock=clock)
    storm.record(30)
    assert storm.rate() == pytest.approx(10)
    assert not storm.active()
    storm.record(1)
    assert storm.active()
    clock.advance(1.0)
    storm.record(5)
    assert storm.active()
    clock.advance(2.5)
    assert storm.rate() == pytest.approx(5 / 3)
    assert not storm.active()


def test_storm_hysteresis_and_a_waiting_queue() -> None:
    clock = FakeClock()
    storm = StormDetector(threshold_per_s=10, window_s=3.0, clock=clock)
    storm.record(20)
    assert not storm.active()
    assert storm.active(queue_depth=1)
    assert storm.active()
    clock.advance(3.5)
    storm.record(16)
    assert storm.active()
    clock.advance(3.5)
    storm.record(15)
    assert not storm.active()


# --- circuit breaker --------------------------------------------------------------------


def _call(breaker: CircuitBreaker, *, failure: bool) -> bool:
    permit = breaker.acquire()
    if permit is None:
        return False
    breaker.record(permit, failure=failure)
    return True


def test_breaker_opens_on_error_rate_after_min_calls_then_half_opens_and_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(error_rate=0.5, window_s=10, min_calls=4, cooldown_s=5, clock=clock)
    assert _call(breaker, failure=True) and _call(breaker, failure=True)
    assert _call(breaker, failure=True)
    assert breaker.state is BreakerState.CLOSED
    assert _call(breaker, failure=True)
    assert breaker.state is BreakerState.OPEN
    assert not _call(breaker, failure=False)
    assert breaker.rejected == 1
    assert breaker.retry_after_s() == pytest.approx(5)
    clock.advance(4)
    assert breaker.state is BreakerState.OPEN
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN
    probe = breaker.acquire()
    assert probe is not None and probe.probe
    assert breaker.acquire() is None
    breaker.record(probe, failure=False)
    assert breaker.state is BreakerState.CLOSED
    assert _call(breaker, failure=True)
    assert breaker.state is BreakerState.CLOSED


def test_breaker_probe_failure_opens_again_and_a_released_probe_frees_the_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(error_rate=1.0, window_s=10, min_calls=2, cooldown_s=5, clock=clock)
    _call(breaker, failure=True)
    _call(breaker, failure=True)
    assert breaker.state is BreakerState.OPEN
    clock.advance(5)
    probe = breaker.acquire()
    assert probe is not None and probe.probe
    breaker.release(probe)
    probe = breaker.acquire()
    assert probe is not None and probe.probe
    breaker.record(probe, failure=True)
    assert breaker.state is BreakerState.OPEN
    clock.advance(4)
    assert breaker.acquire() is None
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN


def test_breaker_ignores_outcomes_of_calls_begun_in_an_earlier_state() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(error_rate=0.5, window_s=10, min_calls=2, cooldown_s=1, clock=clock)
    slow = [breaker.acquire() for _ in range(3)]
    assert all(p is not None for p in slow)
    _call(breaker, failure=True)
    _call(breaker, failure=True)
    assert breaker.state is BreakerState.OPEN
    clock.advance(1)
    probe = breaker.acquire()
    assert probe is not None
    breaker.record(probe, failure=False)
    for permit in slow:
        assert permit is not None
        breaker.record(permit, failure=True)
    assert breaker.state is BreakerState.CLOSED


def test_breaker_window_slides_and_successes_dilute_the_rate() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(error_rate=0.5, window_s=10, min_calls=4, cooldown_s=1, clock=clock)
    for _ in range(3):
        _call(breaker, failure=True)
    clock.advance(11)
    _call(breaker, failure=True)
    assert breaker.state is BreakerState.CLOSED
    for _ in range(4):
        _call(breaker, failure=False)
    for _ in range(2):
        _call(breaker, failure=True)
    assert breaker.state is BreakerState.CLOSED
    _call(breaker, failure=True)
    assert breaker.state is BreakerState.OPEN


# --- sliding counts, connections, settings ----------------------------------------------


def test_sliding_counts_forget_what_left_the_window() -> None:
    counts = SlidingCounts(window_s=1.0, slots=10)
    counts.add(0.05, events=3, failures=1)
    counts.add(0.55, events=2)
    assert counts.totals(0.95) == (5, 1)
    assert counts.totals(1.05) == (2, 0)
    assert counts.totals(5.0) == (0, 0)


def test_connection_table_expires_idle_pairs_and_keeps_its_bound() -> None:
    clock = FakeClock()
    table = ConnectionTracker(idle_s=5, max_entries=2, clock=clock)
    a, b, c = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)
    assert not table.is_live(a)
    table.touch(a)
    clock.advance(4)
    assert table.is_live(a)
    table.touch(b)
    clock.advance(2)
    assert not table.is_live(a) and table.is_live(b)
    table.touch(a)
    table.touch(c)
    assert not table.is_live(b) and len(table) == 2


def test_settings_default_to_everything_off_and_refuse_nonsense() -> None:
    settings = ProtectionSettings()
    assert not settings.admission_on and not settings.breakers_on
    assert not settings.watches_sessions and settings.tool_concurrency == 64
    bad_settings: list[dict[str, Any]] = [
        {"admission_rate": -1},
        {"admission_burst": 0},
        {"storm_threshold": 0},
        {"breaker_error_rate": 1.5},
        {"admission_max_wait_s": float("nan")},
    ]
    for bad in bad_settings:
        with pytest.raises(ValueError):
            ProtectionSettings(**bad)


def test_only_infrastructure_failures_count_toward_the_breaker() -> None:
    assert is_infrastructure_failure(DatabaseUnavailable("down"))
    assert not is_infrastructure_failure(NoteNotFound("note not found: 'x'"))

    def db_error(cause: BaseException) -> DatabaseError:
        try:
            raise DatabaseError("database error") from cause
        except DatabaseError as exc:
            return exc

    assert is_infrastructure_failure(db_error(asyncpg.exceptions.QueryCanceledError("timeout")))
    assert is_infrastructure_failure(db_error(asyncpg.exceptions.UndefinedTableError("gone")))
    assert not is_infrastructure_failure(
        db_error(asyncpg.exceptions.CharacterNotInRepertoireError("NUL"))
    )
    assert not is_infrastructure_failure(db_error(ValueError("bad argument")))


# --- tool guard -------------------------------------------------------------------------


def _protection(clock: FakeClock, **settings: Any) -> Protection:
    return Protection(
        ProtectionSettings(**settings),
        tools=("get_note", "notes_report"),
        lane_timeout_s=5.0,
        clock=clock,
    )


def test_guard_opens_on_database_failures_but_not_on_missing_notes() -> None:
    clock = FakeClock()
    guard = _protection(clock, breaker_error_rate=0.5, breaker_min_calls=3)

    async def missing() -> None:
        raise NoteNotFound("note not found: 'x'")

    async def unavailable() -> None:
        raise DatabaseUnavailable("database unavailable: ConnectionRefusedError")

    async def ok() -> str:
        return "ok"

    async def scenario() -> list[str]:
        texts = []
        for op in [missing] * 5 + [unavailable] * 5 + [ok]:
            try:
                await guard.call_tool("get_note", op)
                texts.append("ok")
            except ToolError as exc:
                texts.append(str(exc))
        return texts

    texts = asyncio.run(scenario())
    assert texts[:5] == ["note not found: 'x'"] * 5
    assert texts[5:10] == ["database unavailable: ConnectionRefusedError"] * 5
    assert texts[10].startswith(f"{CIRCUIT_OPEN_TEXT}: get_note")
    assert guard.breakers["get_note"].state is BreakerState.OPEN
    assert guard.breakers["notes_report"].state is BreakerState.CLOSED
    clock.advance(5)
    assert asyncio.run(guard.call_tool("get_note", ok)) == "ok"
    assert guard.breakers["get_note"].state is BreakerState.CLOSED


def test_guard_defers_only_expensive_tools_and_only_during_a_storm() -> None:
    clock = FakeClock()
    guard = _protection(clock, defer_expensive=True, storm_threshold=10)

    async def report() -> str:
        return "report"

    assert asyncio.run(guard.call_tool("notes_report", report)) == "report"
    assert guard.storm is not None
    guard.storm.record(40)
    with pytest.raises(ToolError, match=f"^{DEFERRED_TEXT}"):
        asyncio.run(guard.call_tool("notes_report", report))
    assert asyncio.run(guard.call_tool("get_note", report)) == "report"
    assert guard.deferred == {"notes_report": 1}
    clock.advance(4)
    assert asyncio.run(guard.call_tool("notes_report", report)) == "report"


def test_lane_limits_concurrent_tool_calls() -> None:
    clock = FakeClock()
    guard = _protection(clock, tool_concurrency=2)
    running = 0
    peak = 0

    async def op() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running -= 1

    async def many() -> None:
        await asyncio.gather(*(guard.call_tool("get_note", op) for _ in range(7)))

    asyncio.run(many())
    assert peak == 2


def test_metrics_show_only_the_protections_that_are_on() -> None:
    clock = FakeClock()
    off = Metrics(methods=(), tools=())
    _protection(clock).register_metrics(off)
    assert "mcp_admission" not in off.render() and "mcp_breaker" not in off.render()
    on = Metrics(methods=(), tools=())
    guard = _protection(
        clock, admission_rate=1, admission_burst=1, defer_expensive=True, breaker_error_rate=0.5
    )
    guard.register_metrics(on)
    text = on.render()
    for line in [
        "# TYPE mcp_admission_admitted_total counter",
        "mcp_admission_admitted_total 0",
        "mcp_admission_shed_total 0",
        "mcp_admission_queue_depth 0",
        "# TYPE mcp_admission_wait_seconds histogram",
        'mcp_admission_wait_seconds_bucket{le="+Inf"} 0',
        "mcp_admission_wait_seconds_count 0",
        'mcp_deferred_total{tool="notes_report"} 0',
        'mcp_breaker_state{tool="get_note"} 0',
        'mcp_breaker_rejected_total{tool="notes_report"} 0',
        "mcp_storm_active 0",
    ]:
        assert line in text.splitlines(), line


# --- ASGI admission middleware ----------------------------------------------------------


INIT = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "x"}}
).encode()


def _scope(headers: dict[str, str], client: tuple[str, int] = ("127.0.0.1", 40000)) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/mcp",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": client,
    }


class Recorder:
    """A stand-in for the SDK app: records the body it read, answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _serve(app: AdmissionMiddleware, scope: Scope, chunks: list[bytes]) -> list[Message]:
    sent: list[Message] = []
    incoming: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_initialize_is_admitted_with_its_body_intact_then_shed_with_503() -> None:
    clock = FakeClock()
    guard = _protection(clock, admission_rate=1, admission_burst=2, admission_queue=0)
    sdk = Recorder()
    app = AdmissionMiddleware(sdk, protection=guard, path="/mcp")
    session_headers = {"content-type": "application/json"}
    half = len(INIT) // 2
    assert _serve(app, _scope(session_headers), [INIT[:half], INIT[half:]])[0]["status"] == 200
    assert sdk.bodies == [INIT]
    assert _serve(app, _scope(session_headers), [INIT])[0]["status"] == 200
    refused = _serve(app, _scope(session_headers), [INIT])
    start, body = refused[0], refused[1]
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1"
    assert headers[b"content-type"] == b"application/json"
    error = json.loads(body["body"])
    assert error["jsonrpc"] == "2.0" and error["id"] is None
    assert error["error"]["code"] == -32000 and error["error"]["data"]["retryAfter"] == 1
    assert len(sdk.bodies) == 2 and (guard.admitted, guard.shed) == (2, 1)
    listing = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).encode()
    with_session = {**session_headers, "mcp-session-id": "a" * 32}
    assert _serve(app, _scope(with_session), [listing])[0]["status"] == 200
    assert _serve(app, _scope(session_headers), [listing])[0]["status"] == 200
    assert guard.shed == 1 and sdk.bodies[-2:] == [listing, listing]


def test_sessionless_revision_admits_new_connections_not_keep_alive_reuse() -> None:
    clock = FakeClock()
    guard = _protection(clock, admission_rate=1, admission_burst=1, admission_queue=0)
    app = AdmissionMiddleware(Recorder(), protection=guard, path="/mcp")
    modern = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    listing = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    first = ("127.0.0.1", 50001)
    assert _serve(app, _scope(modern, first), [listing])[0]["status"] == 200
    assert _serve(app, _scope(modern, first), [listing])[0]["status"] == 200
    second = ("127.0.0.1", 50002)
    assert _serve(app, _scope(modern, second), [listing])[0]["status"] == 503
    assert _serve(app, _scope(modern, first), [listing])[0]["status"] == 200
    clock.advance(1.0)
    assert _serve(app, _scope(modern, second), [listing])[0]["status"] == 200
    assert _serve(app, _scope(modern, second), [listing])[0]["status"] == 200
    clock.advance(6.0)
    assert _serve(app, _scope(modern, first), [listing])[0]["status"] == 200
    assert (guard.admitted, guard.shed) == (3, 1)


def test_initialize_detection() -> None:
    assert is_initialize(INIT)
    assert is_initialize(b'[{"jsonrpc":"2.0","method":"initialize","id":1}]')
    assert not is_initialize(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert not is_initialize(b'{"method": "initialize"')
    assert not is_initialize(b"")


def test_overloaded_response_retry_after_is_whole_seconds() -> None:
    response = overloaded_response(Shed(3, "max_wait"), "connections")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert b"new connections" in bytes(response.body)


def test_refusals_lose_the_sdk_prefix_and_database_failures_keep_it() -> None:
    strip = refusal_text_middleware()

    def call(text: str) -> Any:
        ctx: Any = SimpleNamespace(method="tools/call", params={"name": "notes_report"})

        async def call_next(_: Any) -> dict[str, Any]:
            return {
                "content": [{"type": "text", "text": f"Error executing tool notes_report: {text}"}],
                "isError": True,
                "resultType": "complete",
            }

        return asyncio.run(strip(ctx, call_next))

    deferred = call(f"{DEFERRED_TEXT}; retry in a few seconds")
    assert deferred["content"][0]["text"].startswith(DEFERRED_TEXT)
    assert deferred["resultType"] == "complete" and deferred["isError"] is True
    assert call("circuit open: x")["content"][0]["text"] == "circuit open: x"
    failed = call("database unavailable: refused")["content"][0]["text"]
    assert failed == "Error executing tool notes_report: database unavailable: refused"
