"""Unit tests of the reference server's admin endpoint: who gets in, what bodies are taken,
how admission and breakers change while the server runs, and the endpoint itself driven
in-process (no network, no database: the pool is never started)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.server.mcpserver.exceptions import ToolError

from harness.config import ServerConfig as ScenarioServerConfig
from harness.server.__main__ import ADMIN_TOKEN_ENV, admin_token, parse_args
from harness.server.admin import (
    AdminRequestError,
    access_refusal,
    bearer_token,
    check_token,
    describe_change,
    is_loopback,
    parse_admission,
    parse_body,
    parse_breaker,
    parse_repoint,
)
from harness.server.app import TOOL_NAMES, ServerConfig, build_app
from harness.server.metrics import Metrics
from harness.server.notes import DbSettings, redact_dsn
from harness.server.protection import (
    AdmissionControl,
    Admitted,
    BreakerState,
    ProtectionSettings,
)
from harness.server.shield import CIRCUIT_OPEN_TEXT, Protection
from harness.stack.mcp_server import McpServerProcess
from tests.unit.test_server_protection import FakeClock

TOKEN = "s3cret-token-for-tests-0123456789"
UNUSED_DSN = "postgresql://app:pw@127.0.0.1:1,127.0.0.1:2/notes?target_session_attrs=read-write"


def _protection(clock: FakeClock, **settings: Any) -> Protection:
    return Protection(
        ProtectionSettings(**settings), tools=TOOL_NAMES, lane_timeout_s=5.0, clock=clock
    )


# --- access ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("192.168.1.20", False),
        ("localhost", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_means_127_slash_8_and_ipv6_loopback_only(
    host: str | None, loopback: bool
) -> None:
    assert is_loopback(host) is loopback


def test_bearer_token_takes_the_scheme_in_any_case_and_nothing_else() -> None:
    assert bearer_token(f"Bearer {TOKEN}") == TOKEN
    assert bearer_token(f"bearer   {TOKEN} ") == TOKEN
    assert bearer_token(f"Basic {TOKEN}") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(TOKEN) is None
    assert bearer_token(None) is None


def test_access_needs_a_loopback_client_first_then_the_token() -> None:
    assert access_refusal("127.0.0.1", f"Bearer {TOKEN}", TOKEN) is None
    assert access_refusal("::1", f"Bearer {TOKEN}", TOKEN) is None
    assert access_refusal("10.1.2.3", f"Bearer {TOKEN}", TOKEN) == 403
    assert access_refusal("10.1.2.3", None, TOKEN) == 403
    assert access_refusal(None, f"Bearer {TOKEN}", TOKEN) == 403
    assert access_refusal("127.0.0.1", None, TOKEN) == 401
    assert access_refusal("127.0.0.1", f"Bearer {TOKEN}x", TOKEN) == 401
    assert access_refusal("127.0.0.1", f"Bearer {TOKEN[:-1]}", TOKEN) == 401
    assert access_refusal("127.0.0.1", "Bearer tökén", TOKEN) == 401


def test_a_token_must_be_long_and_printable() -> None:
    assert check_token(TOKEN) == TOKEN
    for bad in ["short", "x" * 15, "sixteen chars with spaces", "tab\tinside-a-long-token", ""]:
        with pytest.raises(ValueError, match="secrets.token_urlsafe"):
            check_token(bad)


def test_token_comes_from_the_environment_or_a_file_never_both(tmp_path: Path) -> None:
    assert admin_token(None, {}) is None
    assert admin_token(None, {ADMIN_TOKEN_ENV: ""}) is None
    assert admin_token(None, {ADMIN_TOKEN_ENV: TOKEN}) == TOKEN
    file = tmp_path / "token"
    file.write_text(f"{TOKEN}\n")
    assert admin_token(file, {}) == TOKEN
    with pytest.raises(ValueError, match="not both"):
        admin_token(file, {ADMIN_TOKEN_ENV: TOKEN})
    with pytest.raises(ValueError, match="cannot read"):
        admin_token(tmp_path / "missing", {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        admin_token(tmp_path / "empty", {})
    args = parse_args(["--port", "8000", "--admin-token-file", str(file)])
    assert args.admin_token_file == file


def test_the_token_stays_out_of_the_config_repr() -> None:
    config = ServerConfig(db=DbSettings(dsn=UNUSED_DSN), admin_token=TOKEN)
    assert TOKEN not in repr(config)


# --- bodies ------------------------------------------------------------------------------


def test_admission_body_needs_a_rate_and_keeps_what_it_omits() -> None:
    guard = _protection(FakeClock(), admission_burst=7, admission_queue=9)
    assert parse_admission({"rate": 5}, guard) == (5.0, 7, 9, 2.0)
    assert parse_admission({"rate": 0.5, "burst": 1, "queue": 0, "max_wait": 0}, guard) == (
        0.5,
        1,
        0,
        0.0,
    )
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "rate is required"),
        ({"rate": -1}, "rate must be >= 0"),
        ({"rate": True}, "rate must be a finite number"),
        ({"rate": "5"}, "rate must be a finite number"),
        ({"rate": float("nan")}, "rate must be a finite number"),
        ({"rate": 5, "burst": 0}, "burst must be >= 1"),
        ({"rate": 5, "burst": 2.5}, "burst must be an integer"),
        ({"rate": 5, "queue": -1}, "queue must be >= 0"),
        ({"rate": 5, "max_wait": -0.1}, "max_wait must be >= 0"),
        ({"rate": 5, "max_wait_s": 1}, "unknown key"),
    ]
    for body, message in bad:
        with pytest.raises(AdminRequestError, match=message):
            parse_admission(body, guard)


def test_breaker_body_names_a_known_tool_and_a_mode() -> None:
    assert parse_breaker({"tool": "create_note", "state": "open"}, TOOL_NAMES) == (
        "create_note",
        "open",
    )
    assert parse_breaker({"tool": "get_note", "state": "auto"}, TOOL_NAMES)[1] == "auto"
    with pytest.raises(AdminRequestError) as unknown:
        parse_breaker({"tool": "drop_table", "state": "open"}, TOOL_NAMES)
    assert all(tool in str(unknown.value) for tool in TOOL_NAMES)
    with pytest.raises(AdminRequestError, match="state must be one of auto, open, closed"):
        parse_breaker({"tool": "get_note", "state": "half_open"}, TOOL_NAMES)
    with pytest.raises(AdminRequestError, match="unknown tool"):
        parse_breaker({"state": "open"}, TOOL_NAMES)


def test_repoint_body_is_empty_or_a_dsn() -> None:
    assert parse_repoint({}) is None
    assert parse_repoint({"dsn": UNUSED_DSN}) == UNUSED_DSN
    bad: list[dict[str, Any]] = [{"dsn": ""}, {"dsn": 5}, {"url": UNUSED_DSN}]
    for body in bad:
        with pytest.raises(AdminRequestError):
            parse_repoint(body)


def test_body_is_a_json_object_or_nothing() -> None:
    assert parse_body(b"") == {} and parse_body(b" \n") == {}
    assert parse_body(b'{"rate": 1}') == {"rate": 1}
    for bad in [b"[1]", b"not json", b'"rate"', b"{" + b" " * 70_000 + b"}"]:
        with pytest.raises(AdminRequestError):
            parse_body(bad)


def test_dsn_passwords_are_redacted_wherever_they_are() -> None:
    assert redact_dsn(UNUSED_DSN) == (
        "postgresql://app:***@127.0.0.1:1,127.0.0.1:2/notes?target_session_attrs=read-write"
    )
    assert redact_dsn("postgresql://app@h:5/db?password=pw&sslpassword=x") == (
        "postgresql://app@h:5/db?password=***&sslpassword=***"
    )
    assert redact_dsn("postgresql:///db") == "postgresql:///db"


def test_changes_are_described_key_by_key() -> None:
    assert describe_change({"rate": 0, "burst": 5}, {"rate": 5, "burst": 5}) == "rate 0 -> 5"
    assert describe_change({"rate": 5}, {"rate": 5}) == "unchanged"


# --- live changes of the protection ------------------------------------------------------


def test_bucket_reconfigured_keeps_its_level_cut_to_the_new_burst() -> None:
    clock = FakeClock()
    bucket = AdmissionControl(rate=10, burst=10, queue_max=0, max_wait_s=0, clock=clock)
    bucket.reconfigure(rate=1, burst=3, queue_max=5, max_wait_s=10)
    assert bucket.tokens() == 3
    assert [bucket.request() for _ in range(3)] == [Admitted(0.0)] * 3
    assert bucket.request() == Admitted(1.0)
    assert bucket.request() == Admitted(2.0)
    bucket.reconfigure(rate=2, burst=3, queue_max=5, max_wait_s=10)
    assert bucket.queue_depth() == 2
    assert bucket.request() == Admitted(1.5), "behind the two reserved turns, repaid at 2/s"
    with pytest.raises(ValueError):
        bucket.reconfigure(rate=0, burst=1, queue_max=0, max_wait_s=0)


def test_admission_turned_on_changed_and_off_at_runtime() -> None:
    clock = FakeClock()
    guard = _protection(clock)
    metrics = Metrics(methods=(), tools=())
    guard.register_metrics(metrics)
    assert guard.admission is None and "mcp_admission" not in metrics.render()

    async def admit(count: int) -> list[bool]:
        return [await guard.admit() is None for _ in range(count)]

    guard.set_admission(rate=1, burst=2, queue=0, max_wait_s=0)
    assert guard.settings.watches_sessions and guard.storm is not None
    assert asyncio.run(admit(3)) == [True, True, False]
    text = metrics.render()
    assert "mcp_admission_admitted_total 2" in text and "mcp_admission_shed_total 1" in text
    assert "mcp_storm_active 0" in text

    guard.set_admission(rate=100, burst=2, queue=0, max_wait_s=0)
    clock.advance(0.015)
    assert asyncio.run(admit(2)) == [True, False], "the empty bucket refills at the new rate"

    guard.set_admission(rate=0, burst=2, queue=0, max_wait_s=0)
    assert guard.admission is None and not guard.settings.admission_on
    assert asyncio.run(admit(50)) == [True] * 50
    assert "mcp_admission_shed_total 2" in metrics.render(), "counters stay where they were"
    with pytest.raises(ValueError):
        guard.set_admission(rate=-1, burst=2, queue=0, max_wait_s=0)
    assert guard.settings.admission_rate == 0


def test_a_held_open_circuit_fails_fast_without_automatic_breakers() -> None:
    clock = FakeClock()
    guard = _protection(clock)
    metrics = Metrics(methods=(), tools=())
    guard.register_metrics(metrics)
    calls = 0

    async def op() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    guard.set_breaker("create_note", "open")
    with pytest.raises(ToolError, match=f"^{CIRCUIT_OPEN_TEXT}: create_note is held open"):
        asyncio.run(guard.call_tool("create_note", op))
    assert asyncio.run(guard.call_tool("get_note", op)) == "ok"
    assert calls == 1
    assert guard.breaker_state("create_note") is BreakerState.OPEN
    assert guard.breaker_mode("create_note") == "open"
    text = metrics.render()
    assert 'mcp_breaker_state{tool="create_note"} 2' in text
    assert 'mcp_breaker_state{tool="get_note"} 0' in text
    assert 'mcp_breaker_rejected_total{tool="create_note"} 1' in text

    guard.set_breaker("create_note", "auto")
    assert asyncio.run(guard.call_tool("create_note", op)) == "ok"
    assert guard.breaker_mode("create_note") == "auto"
    assert 'mcp_breaker_state{tool="create_note"} 0' in metrics.render()
    with pytest.raises(KeyError):
        guard.set_breaker("drop_table", "open")


def test_held_closed_ignores_failures_and_auto_starts_the_breaker_afresh() -> None:
    from harness.server.notes import DatabaseUnavailable

    clock = FakeClock()
    guard = _protection(clock, breaker_error_rate=0.5, breaker_min_calls=2)

    async def down() -> None:
        raise DatabaseUnavailable("database unavailable: refused")

    async def run(count: int) -> list[str]:
        texts = []
        for _ in range(count):
            try:
                await guard.call_tool("get_note", down)
            except ToolError as exc:
                texts.append(str(exc).split(":")[0])
        return texts

    assert asyncio.run(run(3)) == ["database unavailable"] * 2 + [CIRCUIT_OPEN_TEXT]
    assert guard.breaker_state("get_note") is BreakerState.OPEN
    guard.set_breaker("get_note", "closed")
    assert guard.breaker_state("get_note") is BreakerState.CLOSED
    assert asyncio.run(run(5)) == ["database unavailable"] * 5, "held closed: every call goes"
    assert guard.breakers["get_note"].state is BreakerState.OPEN, "the automatic one untouched"
    guard.set_breaker("get_note", "auto")
    assert guard.breakers["get_note"].state is BreakerState.CLOSED
    assert guard.breakers["get_note"].window_totals() == (0, 0)
    assert asyncio.run(run(3)) == ["database unavailable"] * 2 + [CIRCUIT_OPEN_TEXT]
    assert guard.breaker_rejected("get_note") == 2


# --- the endpoint in-process -------------------------------------------------------------


def _app(token: str | None = TOKEN, **protection: Any) -> Any:
    return build_app(
        ServerConfig(
            db=DbSettings(dsn=UNUSED_DSN),
            protection=ProtectionSettings(**protection),
            admin_token=token,
        )
    )


async def _ask(
    app: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> httpx2.Response:
    transport = httpx2.ASGITransport(app=app, client=client)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        content = None if body is None else json.dumps(body)
        return await http.request(method, path, content=content, headers=headers)


def test_endpoint_refuses_without_detail_and_is_absent_without_a_token() -> None:
    app = _app()
    for path in ["/admin/state", "/admin/nothing-here"]:
        remote = asyncio.run(_ask(app, "GET", path, client=("10.0.0.9", 50000)))
        assert (remote.status_code, remote.json()) == (403, {"error": "forbidden"})
        anonymous = asyncio.run(_ask(app, "GET", path, token=None))
        assert (anonymous.status_code, anonymous.json()) == (401, {"error": "unauthorized"})
        assert anonymous.headers["www-authenticate"] == "Bearer"
        wrong = asyncio.run(_ask(app, "GET", path, token=TOKEN + "x"))
        assert wrong.status_code == 401
    assert asyncio.run(_ask(_app(token=None), "GET", "/admin/state")).status_code == 404
    with pytest.raises(ValueError, match="at least 16"):
        _app(token="short")


def test_endpoint_state_and_changes(caplog: pytest.LogCaptureFixture) -> None:
    app = _app(breaker_error_rate=0.5)
    state = asyncio.run(_ask(app, "GET", "/admin/state"))
    assert state.status_code == 200
    body = state.json()
    assert body["admission"] == {
        "enabled": False,
        "rate": 0.0,
        "burst": 50,
        "queue": 200,
        "max_wait": 2.0,
        "queue_depth": 0,
        "admitted": 0,
        "shed": 0,
    }
    assert body["storm"] == {
        "active": False,
        "watching": False,
        "new_sessions_per_s": None,
        "threshold_per_s": 100.0,
    }
    assert body["breakers"]["automatic"] == {
        "error_rate": 0.5,
        "window": 10.0,
        "min_calls": 20,
        "cooldown": 5.0,
    }
    assert set(body["breakers"]["tools"]) == set(TOOL_NAMES)
    assert body["breakers"]["tools"]["create_note"] == {
        "state": "closed",
        "mode": "auto",
        "calls": 0,
        "failures": 0,
        "error_rate": None,
        "rejected": 0,
    }
    assert body["pool"] == {
        "dsn": redact_dsn(UNUSED_DSN),
        "hosts": ["127.0.0.1:1", "127.0.0.1:2"],
        "last_connected_host": None,
        "size": 0,
        "idle": 0,
        "in_use": 0,
        "max_size": 10,
        "waiting": 0,
        "db": "unknown",
    }
    assert body["fault_mode"] == "none" and "pw" not in state.text

    caplog.set_level(logging.WARNING, logger="harness.server.admin")
    admission = asyncio.run(_ask(app, "POST", "/admin/admission", {"rate": 5, "queue": 3}))
    assert admission.status_code == 200
    assert admission.json()["before"]["enabled"] is False
    assert admission.json()["after"] | {"queue_depth": 0} == {
        **body["admission"],
        "enabled": True,
        "rate": 5.0,
        "queue": 3,
    }
    assert "admin: admission on: enabled False -> True, rate 0.0 -> 5.0, queue 200 -> 3" in (
        caplog.text
    )
    breaker = asyncio.run(
        _ask(app, "POST", "/admin/breaker", {"tool": "create_note", "state": "open"})
    )
    assert breaker.status_code == 200
    assert breaker.json()["after"]["state"] == "open" and breaker.json()["after"]["mode"] == "open"
    assert "admin: breaker of create_note held open" in caplog.text
    metrics = asyncio.run(_ask(app, "GET", "/metrics")).text
    assert 'mcp_breaker_state{tool="create_note"} 2' in metrics
    assert "mcp_admission_queue_depth 0" in metrics

    new_dsn = "postgresql://app:other@127.0.0.1:3/notes"
    repoint = asyncio.run(_ask(app, "POST", "/admin/pool/repoint", {"dsn": new_dsn}))
    assert repoint.status_code == 200
    done = repoint.json()
    assert done["dsn_changed"] is True and done["expired"] == 0
    assert done["after"]["hosts"] == ["127.0.0.1:3"]
    assert "other" not in repoint.text and "other" not in caplog.text
    assert "admin: pool repointed" in caplog.text
    assert TOKEN not in caplog.text


def test_endpoint_says_what_is_wrong_with_a_request() -> None:
    app = _app()
    cases: list[tuple[str, str, Any, int, str]] = [
        ("POST", "/admin/breaker", {"tool": "nope", "state": "open"}, 400, "create_note"),
        ("POST", "/admin/admission", {"burst": 3}, 400, "rate is required"),
        ("POST", "/admin/admission", [1], 400, "JSON object"),
        ("POST", "/admin/pool/repoint", {"dsn": "mysql://x"}, 400, "bad dsn"),
        ("GET", "/admin/admission", None, 405, "use POST"),
        ("GET", "/admin/nothing", None, 404, "GET /admin/state"),
    ]
    for method, path, body, status, text in cases:
        reply = asyncio.run(_ask(app, method, path, body))
        assert reply.status_code == status, (path, reply.text)
        assert text in reply.json()["error"], reply.text
    state = asyncio.run(_ask(app, "GET", "/admin/state")).json()
    assert state["pool"]["hosts"] == ["127.0.0.1:1", "127.0.0.1:2"], "a bad DSN changes nothing"


# --- the stack's side --------------------------------------------------------------------


def test_reference_server_gets_its_token_through_the_environment_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    server = McpServerProcess(ScenarioServerConfig(), 8123, UNUSED_DSN)
    token = server.admin_token
    assert token is not None and len(token) >= 32
    assert server.admin_url == "http://127.0.0.1:8123/admin"
    assert server.environment()[ADMIN_TOKEN_ENV] == token
    assert not any(token in arg for arg in server.argv())
    assert token not in repr(server)
    assert McpServerProcess(ScenarioServerConfig(), 8124, UNUSED_DSN).admin_token != token

    server.config = ScenarioServerConfig(command=["my-server", "--port", "{port}"])
    assert server.admin_url is None and server.admin_token is None
    assert ADMIN_TOKEN_ENV not in server.environment()
    server.config = ScenarioServerConfig()
    assert server.admin_token == token, "kept across releases of the instance"


# --- MCP_ADMIN_ALLOW: the gateway of a container's network --------------------------------


def test_allow_list_parses_addresses_and_networks_and_names_a_bad_entry() -> None:
    from harness.server.admin import parse_allow

    assert parse_allow(None) == ()
    assert parse_allow(" ") == ()
    assert [str(n) for n in parse_allow("172.18.0.1, 10.9.0.0/16,fd00::1")] == [
        "172.18.0.1/32",
        "10.9.0.0/16",
        "fd00::1/128",
    ]
    for bad in ["172.18.0.300", "gateway", "10.9.0.1/16"]:  # the last has host bits set
        with pytest.raises(ValueError, match="MCP_ADMIN_ALLOW"):
            parse_allow(f"172.18.0.1,{bad}")


def test_allowed_address_still_needs_the_token_others_stay_forbidden() -> None:
    from harness.server.admin import parse_allow

    allow = parse_allow("172.18.0.1/32")
    assert access_refusal("172.18.0.1", f"Bearer {TOKEN}", TOKEN, allow) is None
    assert access_refusal("::ffff:172.18.0.1", f"Bearer {TOKEN}", TOKEN, allow) is None
    assert access_refusal("172.18.0.1", None, TOKEN, allow) == 401
    assert access_refusal("172.18.0.2", f"Bearer {TOKEN}", TOKEN, allow) == 403, "a neighbour"
    assert access_refusal("127.0.0.1", f"Bearer {TOKEN}", TOKEN, allow) is None
    assert access_refusal("172.18.0.1", f"Bearer {TOKEN}", TOKEN) == 403, "default: loopback"


def test_endpoint_takes_the_allow_list_from_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MCP_ADMIN_ALLOW", "172.18.0.1")
    app = _app()
    gateway = asyncio.run(_ask(app, "GET", "/admin/state", client=("172.18.0.1", 40000)))
    assert gateway.status_code == 200
    neighbour = asyncio.run(_ask(app, "GET", "/admin/state", client=("172.18.0.5", 40000)))
    assert (neighbour.status_code, neighbour.json()) == (403, {"error": "forbidden"})
    no_token = asyncio.run(
        _ask(app, "GET", "/admin/state", token=None, client=("172.18.0.1", 40000))
    )
    assert no_token.status_code == 401
    monkeypatch.setenv("MCP_ADMIN_ALLOW", "not-an-address")
    with pytest.raises(ValueError, match="MCP_ADMIN_ALLOW"):
        _app()
