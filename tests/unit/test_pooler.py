"""PgBouncer in the path (``topology.pooler``): what the scenario may say, the files the
stack writes for it, the reference server's statement cache behind transaction pooling,
and the writer path's figures from recorded probe samples."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.config import PoolerConfig, Scenario, ServerConfig
from harness.measure.failover import WriteProbeSample
from harness.measure.figures import writer_path
from harness.measure.probes import error_kind
from harness.shipped import SCENARIOS_DIR
from harness.stack.mcp_server import McpServerProcess
from harness.stack.pgbouncer import auth_line, render_config

POOLED = {"writer": "endpoint", "pooler": {"pool_mode": "transaction"}}


def test_a_pooler_sits_behind_a_writer_endpoint() -> None:
    pooler = Scenario(name="t", topology=POOLED).topology.pooler
    assert pooler is not None and pooler.kind == "pgbouncer" and pooler.pool_mode == "transaction"
    assert Scenario(name="t", topology={"writer": "endpoint", "pooler": {}}).topology.pooler == (
        PoolerConfig(pool_mode="session")
    )


def test_a_pooler_without_an_endpoint_is_refused_saying_what_to_do() -> None:
    with pytest.raises(ValidationError, match="set writer: endpoint beside pooler"):
        Scenario(name="t", topology={"pooler": {"pool_mode": "session"}})


@pytest.mark.parametrize("key", ["listen_port", "auth_file", "pool_mode", "unix_socket_dir"])
def test_a_setting_the_stack_owns_is_refused_naming_the_key(key: str) -> None:
    with pytest.raises(ValidationError, match=f"settings.{key}: set by the stack"):
        PoolerConfig(settings={key: "1"})


def test_settings_become_ini_values_and_bad_names_are_refused() -> None:
    pooler = PoolerConfig(settings={"server_login_retry": 1, "server_check_query": "select 1"})
    assert pooler.settings == {"server_login_retry": "1", "server_check_query": "select 1"}
    with pytest.raises(ValidationError, match="PgBouncer setting name"):
        PoolerConfig(settings={"bad key\n[databases]": "x"})
    with pytest.raises(ValidationError, match="unknown_mode|pool_mode"):
        PoolerConfig(pool_mode="statement")  # type: ignore[arg-type]


def test_the_ini_listens_on_loopback_and_leads_to_the_writer_endpoint(tmp_path: Path) -> None:
    pooler = PoolerConfig(pool_mode="transaction", settings={"default_pool_size": "5"})
    ini = render_config(pooler, 6432, "mcp", 5101, tmp_path / "userlist.txt")
    lines = ini.splitlines()
    assert lines[:2] == ["[databases]", "mcp = host=127.0.0.1 port=5101 dbname=mcp"]
    assert "listen_addr = 127.0.0.1" in lines and "listen_port = 6432" in lines
    assert "unix_socket_dir = " in lines and "pool_mode = transaction" in lines
    assert "auth_type = scram-sha-256" in lines
    # the scenario's value replaces the stack's default, once
    assert [line for line in lines if line.startswith("default_pool_size")] == [
        "default_pool_size = 5"
    ]


def test_an_auth_line_doubles_a_quote_in_the_password() -> None:
    assert auth_line("mcp_app", 'a"b') == '"mcp_app" "a""b"\n'


def test_the_reference_server_drops_its_statement_cache_behind_transaction_pooling() -> None:
    cached = McpServerProcess(ServerConfig(), 8000, "postgresql://u:p@127.0.0.1:1/d")
    uncached = McpServerProcess(
        ServerConfig(), 8000, "postgresql://u:p@127.0.0.1:1/d", statement_cache=False
    )
    assert "--statement-cache-size" not in cached.argv()
    argv = uncached.argv()
    assert argv[argv.index("--statement-cache-size") + 1] == "0"
    users = McpServerProcess(
        ServerConfig(command=["my-server", "{port}"]),
        8000,
        "postgresql://u:p@127.0.0.1:1/d",
        statement_cache=False,
    )
    assert users.argv() == ["my-server", "8000"]  # a user's server is told nothing new


def test_an_error_kind_carries_the_sqlstate_a_server_sent() -> None:
    class ReadOnlySQLTransactionError(Exception):
        sqlstate = "25006"

    assert error_kind(ReadOnlySQLTransactionError()) == "ReadOnlySQLTransactionError 25006"
    assert error_kind(TimeoutError()) == "TimeoutError"


def sample(seq: int, t_s: float, ok: bool, error: str | None = None) -> WriteProbeSample:
    return WriteProbeSample(seq, t_s, ok, 5102 if ok else None, error, sent_s=t_s - 0.01)


def test_the_writer_path_counts_errors_from_the_kill_to_the_first_write() -> None:
    samples = [
        sample(1, 9.0, False, "ConnectionResetError"),  # before the kill: not this failover's
        sample(2, 10.5, False, "ReadOnlySQLTransactionError 25006"),
        sample(3, 11.0, False, "ReadOnlySQLTransactionError 25006"),
        sample(4, 12.0, False, "ProtocolViolationError 08P01"),
        sample(5, 13.5, True),
        sample(6, 14.0, False, "TimeoutError"),  # after the first write: not counted
    ]
    path = writer_path(samples, 10.0, 13.5, [3.0, 12.5], promotions_s=[2.0, 12.0])
    assert path["detection_s"] == pytest.approx(2.0)  # the promotion before the kill: ignored
    assert path["promotion_s"] == pytest.approx(1.5)
    assert path["endpoint_moved_s"] == pytest.approx(2.5)  # the move before the kill is ignored
    assert path["first_write_after_move_s"] == pytest.approx(1.0)
    assert path["write_errors_by_kind"] == {
        "ProtocolViolationError 08P01": 1,
        "ReadOnlySQLTransactionError 25006": 2,
    }


def test_without_an_endpoint_or_a_first_write_nothing_is_made_up() -> None:
    samples = [sample(1, 10.5, False, "OSError"), sample(2, 11.0, False, "OSError")]
    multi_host = writer_path(samples, 10.0, None, [])
    assert multi_host == {
        "detection_s": None,
        "promotion_s": None,
        "endpoint_moved_s": None,
        "first_write_after_move_s": None,
        "write_errors_by_kind": {"OSError": 2},
    }
    never_written = writer_path(samples, 10.0, None, [12.0])
    assert never_written["endpoint_moved_s"] == pytest.approx(2.0)
    assert never_written["first_write_after_move_s"] is None


def test_a_missing_pgbouncer_stops_the_run_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness import cli
    from harness.stack import pgbouncer, prerequisites

    for check in ("pg_bin_dir", "toxiproxy_server", "pg_run_user"):
        monkeypatch.setattr(prerequisites, check, lambda *_: None)
    monkeypatch.setattr(pgbouncer, "find_pgbouncer", lambda: None)
    scenario = SCENARIOS_DIR / "primary_kill_pgbouncer.yaml"
    code = cli.main(["run", str(scenario), "--out", str(tmp_path / "out")])
    text = " ".join((capsys.readouterr().err).split())
    assert code == 3, text
    assert "topology.pooler needs PgBouncer: `apt-get install pgbouncer`" in text
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_detection_and_promotion_add_up_to_the_failover_and_a_late_write_is_not_made_up() -> None:
    samples = [sample(1, 10.2, False, "OSError"), sample(2, 16.0, True)]
    path = writer_path(samples, 10.0, 16.0, [], promotions_s=[14.0])
    assert (path["detection_s"], path["promotion_s"]) == (pytest.approx(4.0), pytest.approx(2.0))
    assert path["detection_s"] + path["promotion_s"] == pytest.approx(16.0 - 10.0)
    unpromoted = writer_path(samples, 10.0, None, [], promotions_s=[14.0])
    assert unpromoted["detection_s"] == pytest.approx(4.0) and unpromoted["promotion_s"] is None
