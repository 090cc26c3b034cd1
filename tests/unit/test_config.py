"""Scenario loading and validation: bad input is refused with the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.config import (
    METRIC_PATHS,
    Objective,
    Scenario,
    ScenarioError,
    load_objectives,
    load_scenario,
    parse_bound,
    parse_duration_s,
)
from harness.shipped import SCENARIOS_DIR


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("15s", 15.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        (3, 3.0),
        ("1.5s", 1.5),
        ("7", 7.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "10 parsecs", True, "s"])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(bad)


def test_bounds_take_the_unit_of_the_metric() -> None:
    assert parse_bound("tools_list_latency_ms.p99", "500ms") == 500.0
    assert parse_bound("tools_list_latency_ms.p99", "1s") == 1000.0
    assert parse_bound("tools_list_latency_ms.p99", 250) == 250.0
    assert parse_bound("failover_s", "1500ms") == 1.5
    assert parse_bound("reconnect.success_rate", "99.5%") == pytest.approx(0.995)


def test_shipped_scenarios_are_valid() -> None:
    for path in sorted((SCENARIOS_DIR).glob("*.yaml")):
        scenario = load_scenario(path)
        assert scenario.name == path.stem


def test_overrides_replace_keys() -> None:
    scenario = load_scenario(SCENARIOS_DIR / "primary_kill.yaml", {"load.users": 12, "seed": 99})
    assert scenario.load.users == 12
    assert scenario.seed == 99


def test_defaults_fill_what_is_missing(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, "load: {users: 3}\n"))
    assert scenario.name == "s"
    assert scenario.load.users == 3
    assert scenario.windows.stability == 5.0
    assert scenario.probes.write_interval <= 0.05


@pytest.mark.parametrize(
    "text,key,expected",
    [
        ("load: {users: 3, colour: red}\n", "load.colour", "unknown key"),
        ("load: {users: many}\n", "load.users", "integer"),
        ("load: {run_time: -5s}\n", "load.run_time", "greater than zero"),
        ("faults: [{kind: kill_primary, at: -1s}]\n", "faults.0.at", "negative"),
        (
            "load: {run_time: 10s}\nfaults: [{kind: kill_primary, at: 30s}]\n",
            "faults.0.at",
            "not before the end",
        ),
        ("faults: [{kind: unplug_everything, at: 3s}]\n", "faults.0", "kill_primary"),
        ("probes: {write_interval: 200ms}\n", "probes.write_interval", "0.05"),
        ("objectives: [{metric: nonsense_s, max: 1s}]\n", "objectives.0", "known metrics"),
        ("objectives: [{metric: failover_s}]\n", "objectives.0", "exactly one of max or min"),
        (
            "recovery: {restore: {target: time}}\nfaults: [{kind: kill_server, at: 5s}]\n",
            "recovery.restore",
            "target_time: needed",
        ),
        (
            "recovery: {restore: {target: time, target_time: '2026-11-25 10:00'}}\n",
            "recovery.restore",
            "no time zone",
        ),
        (
            "recovery: {restore: {target: time, target_time: yesterday}}\n",
            "recovery.restore",
            "ISO 8601",
        ),
        ("recovery: {restore: {target: lsn, target_lsn: '12'}}\n", "recovery.restore", "0/3000060"),
        ("recovery: {restore: {target: restore_point}}\n", "", "this scenario has none"),
        ("recovery: {restore: {target: nearest}}\n", "recovery.restore.target", "restore_point"),
        (
            "server: {command: [my-server], fault_mode: write-garbage}\n",
            "",
            "only the reference server has fault modes",
        ),
        (
            "server: {command: [srv]}\nfaults: [{kind: bad_deployment, at: 5s}]\n",
            "faults.0.command",
            "faulty release",
        ),
        (
            "server: {url: 'http://127.0.0.1:1/mcp'}\nfaults: [{kind: bad_deployment, at: 5s}]\n",
            "faults.0",
            "needs a server the harness runs",
        ),
        ("faults: [{kind: call_tool, at: 5s}]\n", "faults.0.tool", "Field required"),
        ("integrity: {checks: [{name: x}]}\n", "integrity.checks.0.sql", "Field required"),
        ("ledger: {tool: w, extra: 1}\n", "ledger.extra", "unknown key"),
    ],
)
def test_invalid_scenarios_name_file_and_key(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    assert_refused(tmp_path, text, key, expected)


def assert_refused(tmp_path: Path, text: str, key: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert expected in message


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(write(tmp_path, "load: {users: [\n"))
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "missing.yaml")


def test_objective_paths() -> None:
    assert Objective(metric="tools_list_latency_ms.p99", phase="recovered", max="500ms").path == (
        "tools_list_latency_ms.recovered.p99"
    )
    assert (
        Objective(metric="tools_list_latency_ms.p99", max=1).path == "tools_list_latency_ms.all.p99"
    )
    assert Objective(metric="failover_s", max="15s").target == 15.0
    assert "writes.rpo_rows" in METRIC_PATHS


def test_objectives_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "- {metric: failover_s, max: 15s}\n- {metric: reconnect.success_rate, min: 99.5%}\n",
    )
    objectives = load_objectives(path)
    assert [o.target for o in objectives] == [15.0, pytest.approx(0.995)]
    bad = write(tmp_path, "- {metric: failover_s, max: soon}\n", "bad.yaml")
    with pytest.raises(ScenarioError, match="objectives.0"):
        load_objectives(bad)


def test_any_toxic_on_any_proxy_with_its_attributes(tmp_path: Path) -> None:
    scenario = load_scenario(
        write(
            tmp_path,
            """
load: {run_time: 60s}
faults:
  - {kind: toxic, at: 5s, duration: 10s, proxy: pg-replication, type: latency, stream: upstream, toxicity: 0.5, attributes: {latency: 200, jitter: 20}}
  - {kind: toxic, at: 6s, proxy: mcp, type: slicer, attributes: {average_size: 64, size_variation: 8, delay: 100}}
  - {kind: proxy_down, at: 7s, duration: 2s, proxy: pg-primary}
  - {kind: kill_server, at: 8s}
""",
        )
    )
    latency, slicer, down, kill = scenario.faults
    assert (latency.proxy, latency.type, latency.stream, latency.toxicity) == (
        "pg-replication",
        "latency",
        "upstream",
        0.5,
    )
    assert latency.duration == 10.0 and slicer.duration is None
    assert down.proxy == "pg-primary" and kill.restart_after == 2.0 and kill.instance == 0


@pytest.mark.parametrize(
    "fault,key,expected",
    [
        (
            "{kind: toxic, at: 5s, proxy: mcp, type: latency, attributes: {rate: 5}}",
            "faults.0",
            "rate not known for a latency toxic",
        ),
        ("{kind: toxic, at: 5s, proxy: nowhere, type: latency}", "faults.0.proxy", "mcp"),
        ("{kind: toxic, at: 5s, proxy: mcp, type: earthquake}", "faults.0.type", "latency"),
        (
            "{kind: toxic, at: 5s, proxy: mcp, type: latency, toxicity: 2}",
            "faults.0.toxicity",
            "less than or equal to 1",
        ),
        ("{kind: kill_server, at: 5s, instance: 3}", "faults.0.instance", "server instance"),
    ],
)
def test_bad_faults_are_refused_with_their_key(
    tmp_path: Path, fault: str, key: str, expected: str
) -> None:
    path = write(tmp_path, f"faults: [{fault}]\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert key in str(info.value) and expected in str(info.value)


def test_restore_target_time_is_run_relative_or_zoned() -> None:
    import datetime as dt

    from harness.config import restore_target_time

    assert restore_target_time("30s") == 30.0
    moment = restore_target_time("2026-11-25T10:00:00+00:00")
    assert isinstance(moment, dt.datetime) and moment.tzinfo is not None


def test_integrity_checks_default_to_the_reference_invariants_only_for_the_reference_server(
    tmp_path: Path,
) -> None:
    reference = load_scenario(write(tmp_path, "name: a\n"))
    assert [c.name for c in reference.integrity_checks] == [
        "checksum",
        "title_not_blank",
        "parent_exists",
    ]
    theirs = load_scenario(write(tmp_path, "server: {command: [srv, '{port}']}\n", "b.yaml"))
    assert theirs.integrity_checks == []
    own = load_scenario(
        write(tmp_path, "integrity: {checks: [{name: c, sql: 'SELECT 1'}]}\n", "c.yaml")
    )
    assert [c.name for c in own.integrity_checks] == ["c"]
    assert reference.hard_cap_s < load_scenario(SCENARIOS_DIR / "pitr_restore.yaml").hard_cap_s


def test_setup_sql_is_found_next_to_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "schema.sql").write_text("CREATE TABLE t (id int);")
    scenario = load_scenario(write(tmp_path, "server: {setup_sql: schema.sql}\n"))
    assert scenario.server.setup_sql == str((tmp_path / "schema.sql").resolve())
    assert_refused(
        tmp_path, "server: {setup_sql: missing.sql}\n", "server.setup_sql", "no such file"
    )


def test_reference_server_options_are_refused_for_your_server(tmp_path: Path) -> None:
    assert_refused(
        tmp_path,
        "server: {command: [srv, '{port}'], json_response: true}\n",
        "server",
        "json_response: options of the reference server",
    )
    plain = load_scenario(write(tmp_path, "server: {command: [srv], json_response: false}\n"))
    assert plain.server.command == ["srv"]


def test_header_references_are_resolved_when_sent_and_kept_in_the_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = load_scenario(
        write(tmp_path, "server: {headers: {Authorization: 'Bearer ${MCP_TEST_TOKEN}'}}\n")
    )
    monkeypatch.delenv("MCP_TEST_TOKEN", raising=False)
    with pytest.raises(ScenarioError, match="MCP_TEST_TOKEN is not set"):
        scenario.server.resolved_headers()
    monkeypatch.setenv("MCP_TEST_TOKEN", "s3cret")
    assert scenario.server.resolved_headers() == {"Authorization": "Bearer s3cret"}
    assert scenario.server.headers["Authorization"] == "Bearer ${MCP_TEST_TOKEN}"


# --- the docker backend's section and the partition fault ----------------------------------


def test_docker_images_default_to_pinned_versions_and_refuse_unpinned_ones(
    tmp_path: Path,
) -> None:
    from harness.config import DEFAULT_POSTGRES_IMAGE, DEFAULT_TOXIPROXY_IMAGE

    scenario = load_scenario(write(tmp_path, "backend: docker\n"))
    assert scenario.docker.postgres_image == DEFAULT_POSTGRES_IMAGE == "postgres:18.6"
    assert scenario.docker.toxiproxy_image == DEFAULT_TOXIPROXY_IMAGE
    assert DEFAULT_TOXIPROXY_IMAGE.endswith(":2.12.0")
    assert scenario.docker.server_image is None
    for bad, why in [
        ("postgres", "names no version"),
        ("postgres:latest", "names no version"),
        ("Postgres:18", "not an image reference"),
        ("postgres:18 6", "not an image reference"),
    ]:
        with pytest.raises(ScenarioError) as caught:
            load_scenario(write(tmp_path, f"docker: {{postgres_image: '{bad}'}}\n"))
        assert "docker.postgres_image" in str(caught.value) and why in str(caught.value)
    with pytest.raises(ScenarioError, match="docker.server_imag"):
        load_scenario(write(tmp_path, "docker: {server_imag: x:1}\n"))


def test_partition_needs_the_docker_backend_and_a_known_target(tmp_path: Path) -> None:
    text = "faults: [{kind: partition, at: 5s, duration: 3s, target: replica}]\n"
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, text))
    assert "faults.0: partition needs --backend docker" in str(caught.value)
    scenario = load_scenario(write(tmp_path, text), {"backend": "docker"})
    [fault] = scenario.faults
    assert (fault.kind, fault.at, fault.duration, fault.target) == (
        "partition",
        5.0,
        3.0,
        "replica",
    )
    with pytest.raises(ScenarioError, match="faults.0.target"):
        load_scenario(write(tmp_path, text.replace("replica", "balancer")), {"backend": "docker"})


def test_a_fault_the_docker_backend_lacks_points_back_to_local(tmp_path: Path) -> None:
    text = "backend: docker\nfaults: [{kind: bad_deployment, at: 5s}]\n"
    with pytest.raises(ScenarioError, match="bad_deployment needs --backend local"):
        load_scenario(write(tmp_path, text))


def test_the_reference_servers_operations_are_the_default_mix() -> None:
    from harness import reference
    from harness.mcp_client.writes import OPTIONAL_PLACEHOLDER, WriteTemplate

    assert Scenario(name="default").load.tool_mix == reference.DEFAULT_TOOL_MIX
    assert set(reference.DEFAULT_TOOL_MIX) == set(reference.OPS)
    assert reference.WRITE_ARGUMENTS["parent_id"] == OPTIONAL_PLACEHOLDER
    assert WriteTemplate().tool == reference.WRITE_TOOL


def test_a_users_own_tools_join_the_mix_with_their_arguments() -> None:
    load = Scenario.model_validate(
        {
            "name": "own",
            "load": {
                "tool_mix": {"tools/list": 2, "lookup_order": 1, "health": 1},
                "tool_arguments": {"lookup_order": {"order_id": "A-1"}},
            },
        }
    ).load
    assert load.tool_mix["lookup_order"] == 1 and load.tool_arguments["lookup_order"] == {
        "order_id": "A-1"
    }
    with pytest.raises(ValidationError, match="tool_arguments: lookup_order not in tool_mix"):
        Scenario.model_validate(
            {"name": "own", "load": {"tool_arguments": {"lookup_order": {"order_id": "A-1"}}}}
        )


def test_a_database_url_file_is_for_a_server_the_user_runs(tmp_path: Path) -> None:
    import stat

    from harness.stack.mcp_server import write_database_url_file

    server = {"url": "http://127.0.0.1:8000/mcp", "database_url_file": str(tmp_path / "db.env")}
    assert Scenario.model_validate({"name": "u", "server": server}).server.database_url_file
    with pytest.raises(ValidationError, match="database_url_file: only with url"):
        Scenario.model_validate(
            {"name": "u", "server": {"command": ["srv"], "database_url_file": "db.env"}}
        )
    with pytest.raises(ValidationError, match="needs database_url_env"):
        Scenario.model_validate({"name": "u", "server": {**server, "database_url_env": None}})
    path = write_database_url_file(
        tmp_path / "d" / "db.env", "DATABASE_URL", "postgresql://a:pw@h/db"
    )
    assert path.read_text() == "DATABASE_URL=postgresql://a:pw@h/db\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and list(path.parent.iterdir()) == [path]
