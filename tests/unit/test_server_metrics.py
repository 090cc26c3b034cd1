"""Unit tests of the reference server's pure parts: metrics, DSN handling, SQL helpers, CLI."""

from __future__ import annotations

import asyncio
import math
import re
from types import SimpleNamespace
from typing import Any

import pytest

from harness.server.metrics import (
    DURATION,
    ERRORS,
    HTTP_RESPONSES,
    OTHER_METHOD,
    REQUESTS,
    UNKNOWN_TOOL,
    Metrics,
    escape_label_value,
    format_value,
    result_is_error,
    tool_name_of,
)
from harness.server.notes import (
    SEARCH_LIMIT_MAX,
    AllHostsFailed,
    clamp_limit,
    connect_order,
    is_connection_error,
    like_pattern,
    split_dsn,
)

METHODS = ("initialize", "tools/list", "tools/call", "ping")
TOOLS = ("create_note", "get_note")

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})? (?P<value>\S+)$",
)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A strict little parser of the text format: fails on any malformed line."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"malformed sample line: {line!r}"
        labels = frozenset(LABEL.findall(match["labels"] or ""))
        key = (match["name"], labels)
        assert key not in samples, f"duplicate series: {line!r}"
        samples[key] = float(match["value"])
    return samples


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def make() -> Metrics:
    return Metrics(methods=METHODS, tools=TOOLS)


def test_labels_are_bounded() -> None:
    m = make()
    assert m.labels_for("tools/call", "create_note") == ("tools/call", "create_note")
    assert m.labels_for("tools/call", "drop_database") == ("tools/call", UNKNOWN_TOOL)
    assert m.labels_for("tools/list", "create_note") == ("tools/list", "")
    assert m.labels_for("made/up", "x") == (OTHER_METHOD, "")


def test_observe_counts_requests_and_errors_per_label_pair() -> None:
    m = make()
    m.observe("tools/call", "create_note", 0.01, error=False)
    m.observe("tools/call", "create_note", 0.02, error=True)
    m.observe("tools/call", "get_note", 0.02, error=False)
    m.observe("tools/list", "", 0.0005, error=False)
    m.observe("nonsense/a", "", 0.1, error=True)
    m.observe("nonsense/b", "", 0.1, error=True)
    assert m.requests("tools/call", "create_note") == 2
    assert m.errors("tools/call", "create_note") == 1
    assert m.requests("tools/call", "get_note") == 1
    assert m.errors("tools/call", "get_note") == 0
    assert m.requests("tools/list") == 1
    assert m.requests("anything/else") == 2
    assert m.errors("anything/else") == 2
    assert m.requests("ping") == 0


def test_histogram_is_cumulative_and_consistent() -> None:
    m = Metrics(methods=METHODS, tools=TOOLS, buckets=(0.01, 0.1, 1.0))
    for seconds in (0.001, 0.01, 0.05, 0.5, 3.0, -1.0):
        m.observe("tools/call", "get_note", seconds, error=False)
    samples = parse(m.render())
    labels = {"method": "tools/call", "tool": "get_note"}
    bucket = f"{DURATION}_bucket"
    # 0.001, 0.01 and the negative (clamped to 0) fall in le=0.01: bounds are inclusive.
    assert samples[series(bucket, **labels, le="0.01")] == 3
    assert samples[series(bucket, **labels, le="0.1")] == 4
    assert samples[series(bucket, **labels, le="1.0")] == 5
    assert samples[series(bucket, **labels, le="+Inf")] == 6
    assert samples[series(f"{DURATION}_count", **labels)] == 6
    assert samples[series(f"{DURATION}_sum", **labels)] == pytest.approx(3.561)


def test_render_lists_counters_http_statuses_and_gauges() -> None:
    m = make()
    open_sessions = [3]
    m.add_gauge("mcp_sessions_open", "open sessions", lambda: float(open_sessions[0]))
    m.add_gauge("absent_gauge", "not known yet", lambda: None)
    m.observe("tools/call", "create_note", 0.003, error=True)
    m.observe_http_status(200)
    m.observe_http_status(404)
    m.observe_http_status(404)
    text = m.render()
    samples = parse(text)
    assert samples[series(REQUESTS, method="tools/call", tool="create_note")] == 1
    assert samples[series(ERRORS, method="tools/call", tool="create_note")] == 1
    assert samples[series(HTTP_RESPONSES, status="404")] == 2
    assert samples[series(HTTP_RESPONSES, status="200")] == 1
    assert samples[series("mcp_sessions_open")] == 3
    assert "absent_gauge" not in text
    assert f"# TYPE {DURATION} histogram" in text
    assert "# TYPE mcp_sessions_open gauge" in text
    open_sessions[0] = 0
    assert parse(m.render())[series("mcp_sessions_open")] == 0


def test_render_is_stable_and_empty_registry_is_valid() -> None:
    m = make()
    assert parse(m.render()) == {}
    m.observe("tools/list", "", 0.001, error=False)
    m.observe("initialize", "", 0.001, error=False)
    assert m.render() == m.render()
    requests = [line for line in m.render().splitlines() if line.startswith(REQUESTS + "{")]
    assert requests == sorted(requests)


def test_label_values_and_numbers_are_escaped_and_formatted() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert format_value(3) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"


def test_buckets_must_be_finite_and_non_empty() -> None:
    with pytest.raises(ValueError):
        Metrics(methods=METHODS, tools=TOOLS, buckets=())
    with pytest.raises(ValueError):
        Metrics(methods=METHODS, tools=TOOLS, buckets=(0.1, math.inf))
    assert Metrics(methods=METHODS, tools=TOOLS, buckets=(1.0, 0.1, 1.0)).buckets == (0.1, 1.0)


def test_tool_name_and_error_detection() -> None:
    assert tool_name_of("tools/call", {"name": "get_note", "arguments": {}}) == "get_note"
    assert tool_name_of("tools/call", {"name": 7}) == ""
    assert tool_name_of("tools/call", None) == ""
    assert tool_name_of("tools/list", {"name": "get_note"}) == ""
    assert result_is_error({"content": [], "isError": True})
    assert not result_is_error({"content": [], "isError": False})
    assert not result_is_error({"tools": []})
    assert not result_is_error(None)
    assert result_is_error(SimpleNamespace(is_error=True))


def _ctx(method: str, params: dict[str, Any] | None, request_id: int | None = 1) -> Any:
    return SimpleNamespace(method=method, params=params, request_id=request_id)


def test_server_middleware_observes_results_failures_and_skips_notifications() -> None:
    from harness.server.app import TOOL_NAMES, metrics_middleware

    m = Metrics(methods=METHODS, tools=TOOL_NAMES)
    observe = metrics_middleware(m)

    async def ok(ctx: Any) -> dict[str, Any]:
        return {"content": [], "isError": False}

    async def tool_error(ctx: Any) -> dict[str, Any]:
        return {"content": [], "isError": True}

    async def boom(ctx: Any) -> dict[str, Any]:
        raise RuntimeError("handler failed")

    async def scenario() -> None:
        call = {"name": "create_note", "arguments": {}}
        await observe(_ctx("tools/call", call), ok)
        await observe(_ctx("tools/call", call), tool_error)
        with pytest.raises(RuntimeError):
            await observe(_ctx("tools/call", call), boom)
        await observe(_ctx("tools/list", None), ok)
        await observe(_ctx("notifications/initialized", None, request_id=None), ok)

    asyncio.run(scenario())
    assert m.requests("tools/call", "create_note") == 3
    assert m.errors("tools/call", "create_note") == 2
    assert m.requests("tools/list") == 1
    assert m.errors("tools/list") == 0
    assert m.requests("notifications/initialized") == 0


def test_split_dsn_multi_host_keeps_credentials_and_target_attrs() -> None:
    parsed = split_dsn(
        "postgresql://u:p%40ss@127.0.0.1:5001,127.0.0.1:5002/mcp"
        "?target_session_attrs=read-write&connect_timeout=3&application_name=x"
    )
    assert parsed.hosts == (
        "postgresql://u:p%40ss@127.0.0.1:5001/mcp?target_session_attrs=read-write&application_name=x",
        "postgresql://u:p%40ss@127.0.0.1:5002/mcp?target_session_attrs=read-write&application_name=x",
    )
    assert parsed.libpq_options == {"connect_timeout": "3"}
    assert parsed.has_application_name


def test_split_dsn_single_host_and_query_hosts() -> None:
    single = split_dsn("postgres://u@localhost/db?keepalives=1")
    assert single.hosts == ("postgres://u@localhost/db",)
    assert single.libpq_options == {"keepalives": "1"}
    assert not single.has_application_name
    in_query = split_dsn("postgresql:///db?host=/tmp/sock")
    assert in_query.hosts == ("postgresql:///db?host=%2Ftmp%2Fsock",)
    ipv6 = split_dsn("postgresql://u@[::1]:5432,[::1]:5433/db")
    assert ipv6.hosts == ("postgresql://u@[::1]:5432/db", "postgresql://u@[::1]:5433/db")
    with pytest.raises(ValueError):
        split_dsn("mysql://u@h/db")
    with pytest.raises(ValueError):
        split_dsn("postgresql://u@h/db?connect_timeout=soon")


def test_connect_order_starts_with_the_host_that_last_worked() -> None:
    assert connect_order(2, 0) == [0, 1]
    assert connect_order(2, 1) == [1, 0]
    assert connect_order(3, 2) == [2, 0, 1]
    assert connect_order(2, 5) == [0, 1]
    assert connect_order(1, 0) == [0]


def test_all_hosts_failed_names_every_host_and_is_a_connection_error() -> None:
    exc = AllHostsFailed(
        [("h1:5001", ConnectionRefusedError("refused")), ("h2:5002", TimeoutError())]
    )
    assert isinstance(exc, OSError)
    assert str(exc) == "h1:5001: ConnectionRefusedError: refused; h2:5002: TimeoutError"


def test_connection_errors_are_told_apart_from_bad_requests() -> None:
    import asyncpg.exceptions

    assert is_connection_error(ConnectionRefusedError())
    assert is_connection_error(TimeoutError())
    assert is_connection_error(asyncpg.exceptions.ConnectionDoesNotExistError("gone"))
    assert is_connection_error(asyncpg.exceptions.InterfaceError("connection is closed"))
    assert is_connection_error(asyncpg.exceptions.ReadOnlySQLTransactionError("standby"))
    assert is_connection_error(asyncpg.exceptions.CannotConnectNowError("starting up"))
    assert is_connection_error(AllHostsFailed([("h:1", TimeoutError())]))
    assert not is_connection_error(asyncpg.exceptions.UniqueViolationError("dup"))
    assert not is_connection_error(asyncpg.exceptions.UndefinedTableError("no notes"))
    assert not is_connection_error(asyncpg.exceptions.ClientConfigurationError("bad sslmode"))
    assert not is_connection_error(ValueError("bad argument"))


def test_like_pattern_matches_literally_and_limit_is_capped() -> None:
    assert like_pattern("50%_off\\") == "%50\\%\\_off\\\\%"
    assert like_pattern("") == "%%"
    assert clamp_limit(10) == 10
    assert clamp_limit(10_000) == SEARCH_LIMIT_MAX
    assert clamp_limit(0) == 1


def test_cli_refuses_to_start_without_a_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.server.__main__ import main

    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["--port", "8000"]) == 2
    assert "DATABASE_URL" in capsys.readouterr().err
    assert main(["--port", "8000", "--database-url", "mysql://x@y/z"]) == 2
    assert "bad --database-url" in capsys.readouterr().err
