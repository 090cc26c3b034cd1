"""The writer topology: how the server reaches the primary (``topology:``), and the
placeholders a server configured by separate settings is given."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.config import Scenario, ServerConfig
from harness.stack.mcp_server import McpServerProcess, placeholders

MULTI_HOST = (
    "postgresql://app:s3cret-_x@127.0.0.1:5101,127.0.0.1:5102/app?target_session_attrs=read-write"
)
ENDPOINT = "postgresql://app:s3cret-_x@127.0.0.1:5101/app"


def test_the_default_is_the_multi_host_dsn_and_nothing_moves() -> None:
    topology = Scenario(name="t").topology
    assert topology.writer == "multi_host" and topology.endpoint_move_delay == 0


def test_a_writer_endpoint_takes_a_move_delay() -> None:
    topology = Scenario(
        name="t", topology={"writer": "endpoint", "endpoint_move_delay": "5s"}
    ).topology
    assert topology.writer == "endpoint" and topology.endpoint_move_delay == 5.0


def test_a_move_delay_without_an_endpoint_is_refused_naming_the_key() -> None:
    with pytest.raises(ValidationError, match="endpoint_move_delay: only a writer endpoint"):
        Scenario(name="t", topology={"endpoint_move_delay": "5s"})


def test_a_writer_endpoint_on_the_docker_backend_is_refused_saying_what_to_do() -> None:
    with pytest.raises(ValidationError, match="use --backend local or writer: multi_host"):
        Scenario(name="t", backend="docker", topology={"writer": "endpoint"})


def test_an_unknown_writer_is_refused() -> None:
    with pytest.raises(ValidationError, match="writer"):
        Scenario(name="t", topology={"writer": "vip"})


@pytest.mark.parametrize("dsn", [MULTI_HOST, ENDPOINT])
def test_placeholders_name_the_writer_and_the_credentials(dsn: str) -> None:
    values = placeholders(dsn, 8123)
    assert values["{writer_host}"] == "127.0.0.1" and values["{writer_port}"] == "5101"
    assert values["{database}"] == "app" and values["{user}"] == "app"
    assert values["{password}"] == "s3cret-_x"
    assert values["{database_url}"] == dsn and values["{port}"] == "8123"


def test_a_server_configured_by_separate_settings_gets_them() -> None:
    config = ServerConfig(
        command=["my-server", "--listen", "{port}", "--db-host", "{writer_host}"],
        env={"PGPORT": "{writer_port}", "PGDATABASE": "{database}", "PGPASSWORD": "{password}"},
        database_url_env=None,
    )
    server = McpServerProcess(config, 8123, ENDPOINT)
    assert server.argv() == ["my-server", "--listen", "8123", "--db-host", "127.0.0.1"]
    env = server.environment()
    assert (env["PGPORT"], env["PGDATABASE"], env["PGPASSWORD"]) == ("5101", "app", "s3cret-_x")
    assert not server.dsn_on_command_line


def test_a_password_on_the_command_line_is_flagged_like_the_dsn() -> None:
    config = ServerConfig(command=["my-server", "--password", "{password}"])
    assert McpServerProcess(config, 8123, ENDPOINT).dsn_on_command_line
