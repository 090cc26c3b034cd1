"""Hostile and broken input: every case is refused before anything starts, with the exit
code of the contract (2 bad input, 3 an environmental failure such as a full disk; never
1, which means an objective was missed), a message naming the file and the key or flag,
and no traceback. Commands that would start a stack get ``--dry-run`` or a ``--pg-bin``
that does not exist, so nothing starts even if a check were missing."""

from __future__ import annotations

import errno
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.cli import main
from harness.config import (
    Scenario,
    ScenarioError,
    check_id,
    contained,
    load_objectives,
    load_scenario,
)
from harness.drill import DrillTargets, PlannedScenario, load_drill, run_drill
from harness.shipped import SCENARIOS_DIR

REPO = Path(__file__).resolve().parents[2]
SCENARIO = str(SCENARIOS_DIR / "primary_kill.yaml")
NO_PG = ["--pg-bin", "/nonexistent/pg-bin"]
HUGE = "1" + "0" * 400  # a finite-looking number that is inf as a float


def write(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def outcome(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """main's exit code and everything it printed; never a traceback."""
    code = main(argv)
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code, " ".join(text.split())  # rich wraps lines: compare word by word


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """An argparse refusal (exit 2, SystemExit) of a flag's value; its message."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    return " ".join(err.split())


# --- 4. one loopback / exposure check, every command, every listener -----------------

REMOTE_URL = "server: {url: 'http://10.1.2.3:8000/mcp'}\n"


def test_up_refuses_a_remote_server_url_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, REMOTE_URL, "remote.yaml")
    code, text = outcome(capsys, ["up", str(path), *NO_PG])
    assert code == 2
    assert "remote.yaml" in text and "server.url" in text and "--allow-remote" in text


def test_drill_refuses_a_remote_server_url_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, REMOTE_URL, "remote.yaml")
    argv = ["drill", "--scenarios", str(path), "--out", str(tmp_path / "out"), *NO_PG]
    code, text = outcome(capsys, argv)
    assert code == 2
    assert "remote.yaml" in text and "server.url" in text and "--allow-remote" in text
    assert not (tmp_path / "out").exists()


def test_drill_with_allow_remote_gets_past_the_remote_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, REMOTE_URL, "remote.yaml")
    argv = ["drill", "--scenarios", str(path), "--allow-remote", *NO_PG]
    code, text = outcome(capsys, argv)
    assert code == 3 and "missing prerequisite" in text  # the next check: no Postgres binaries


@pytest.mark.parametrize(
    "text,args,key",
    [
        ("load: {master_bind_host: 0.0.0.0}\n", [], "load.master_bind_host"),
        ("{}\n", ["--master-bind-host", "0.0.0.0"], "load.master_bind_host"),
        ("load: {master_bind_host: '::'}\n", [], "load.master_bind_host"),
        (
            "postgres: {settings: {listen_addresses: \"'*'\"}}\n",
            [],
            "postgres.settings.listen_addresses",
        ),
        (
            "postgres: {replica_settings: {listen_addresses: '127.0.0.1, 0.0.0.0'}}\n",
            [],
            "postgres.replica_settings.listen_addresses",
        ),
    ],
)
def test_a_listener_off_loopback_needs_allow_remote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, args: list[str], key: str
) -> None:
    path = write(tmp_path, text, "exposed.yaml")
    code, out = outcome(capsys, ["run", str(path), *args, "--dry-run"])
    assert code == 2
    assert "exposed.yaml" in out and key in out and "--allow-remote" in out
    code, _ = outcome(capsys, ["run", str(path), *args, "--dry-run", "--allow-remote"])
    assert code == 0


def test_up_refuses_an_exposed_listener(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "load: {master_bind_host: 0.0.0.0}\n", "exposed.yaml")
    code, text = outcome(capsys, ["up", str(path), *NO_PG])
    assert code == 2 and "exposed.yaml" in text and "load.master_bind_host" in text


def test_loopback_listeners_pass_and_a_wildcard_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loopback = "load: {master_bind_host: localhost}\npostgres: {settings: {listen_addresses: X}}\n"
    path = write(tmp_path, loopback.replace("X", "\"'127.0.0.1,::1'\""))
    assert outcome(capsys, ["run", str(path), "--dry-run"])[0] == 0
    path = write(tmp_path, loopback.replace("X", "\"'127.0.0.1,*'\""))
    assert outcome(capsys, ["run", str(path), "--dry-run"])[0] == 2


@pytest.mark.parametrize(
    "text,key",
    [
        ('server: {ready: "/healthz\\n    bind 0.0.0.0:9999"}\n', "server.ready"),
        ('server: {ready: "/healthz HTTP/1.0"}\n', "server.ready"),
        ('server: {path: "/mcp\\r\\nX: y"}\n', "server.path"),
        ('server: {path: "mcp"}\n', "server.path"),
        ('server: {headers: {"X-A\\nB": v}}\n', "server.headers"),
        ('server: {headers: {X-Token: "a\\r\\nHost: evil"}}\n', "server.headers"),
        ('server: {command: [srv, "--x\\n--y"]}\n', "server.command"),
        ('server: {command: [srv], port_env: "P=1"}\n', "server.port_env"),
        ('server: {env: {"A\\nB": "1"}}\n', "server.env"),
        ("postgres: {settings: {work_mem: \"'4MB'\\nlisten_addresses = '*'\"}}\n", "work_mem"),
        ('postgres: {settings: {"a = 1\\nb": "2"}}\n', "postgres.settings"),
        ('load: {master_bind_host: "127.0.0.1\\n--x"}\n', "load.master_bind_host"),
        ('server: {url: "http://127.0.0.1:8000/mcp\\nx"}\n', "server.url"),
        (
            'description: "ok"\nintegrity: {checks: [{name: "a\\x1b[2J", sql: "SELECT 1"}]}\n',
            "integrity.checks.0.name",
        ),
    ],
)
def test_control_characters_in_what_reaches_a_config_file_or_command_line_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    path = write(tmp_path, text, "inject.yaml")
    for extra in ([], ["--allow-remote"]):  # not a remote target: no flag lets it through
        code, out = outcome(capsys, ["run", str(path), "--dry-run", *extra])
        assert code == 2
        assert "inject.yaml" in out and key in out


def test_line_breaks_are_refused_in_server_ready_but_allowed_in_sql_and_free_text(
    tmp_path: Path,
) -> None:
    text = (
        "description: |\n  two\n  lines\n"
        'integrity: {checks: [{name: c, sql: "SELECT id\\nFROM notes\\tWHERE false"}]}\n'
    )
    assert "\n" in load_scenario(write(tmp_path, text)).integrity_checks[0].sql
    with pytest.raises(ScenarioError, match="server.ready"):
        load_scenario(write(tmp_path, text + 'server: {ready: "/h\\nx"}\n'))


def test_the_pytest_plugin_loader_refuses_a_remote_target(tmp_path: Path) -> None:
    from harness.testing.plugin import load_scenario as plugin_load

    path = write(tmp_path, REMOTE_URL, "remote.yaml")

    class Config:
        rootpath = tmp_path

        def getoption(self, name: str) -> Any:
            return str(path) if name == "--mcp-scenario" else None

        def getini(self, name: str) -> Any:
            return None

    with pytest.raises(pytest.UsageError, match="server.url"):
        plugin_load(Config())  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match="--allow-remote"):
        load_scenario(path)
    assert load_scenario(path, allow_remote=True).server.url


# --- 5. output paths stay inside the output directory --------------------------------


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", ".hidden", "x" * 65, "a b"])
def test_an_unsafe_scenario_name_is_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = write(tmp_path, f"name: {json.dumps(name)}\n", "named.yaml")
    code, text = outcome(capsys, ["run", str(path), "--dry-run"])
    assert code == 2 and "named.yaml" in text and "name:" in text


def test_an_unsafe_name_from_set_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = outcome(capsys, ["run", SCENARIO, "--set", "name=../../x", "--dry-run"])
    assert code == 2 and "primary_kill.yaml" in text and "name:" in text


def test_an_unsafe_file_name_without_a_name_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "{}\n", "my scenario.yaml")
    code, text = outcome(capsys, ["run", str(path), "--dry-run"])
    assert code == 2 and "my scenario.yaml" in text and "name:" in text


def test_a_drill_cannot_write_outside_its_results_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deep" / "results"
    path = write(tmp_path, "name: ../../escaped\n", "escape.yaml")
    argv = ["drill", "--scenarios", str(path), "--out", str(out), *NO_PG]
    code, text = outcome(capsys, argv)
    assert code == 2 and "escape.yaml" in text and "name:" in text
    assert not (tmp_path / "escaped").exists() and not out.exists()


def test_an_unsafe_drill_file_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drill = write(
        tmp_path,
        f"targets: {{rto_s: 30s, rpo_s: 1s, rpo_rows: 0}}\nscenarios: [{{file: {SCENARIO}}}]\n",
        "q 1;x.yaml",
    )
    code, text = outcome(capsys, ["drill", str(drill), "--out", str(tmp_path / "o"), *NO_PG])
    assert code == 2 and "q 1;x.yaml" in text


def test_run_drill_checks_every_scenario_directory(tmp_path: Path) -> None:
    """The last line of defence: a planned name that escapes is refused before the runner."""
    called: list[Path] = []
    scenario = Scenario(name="ok")
    planned = [PlannedScenario("../outside", Path("x.yaml"), scenario)]
    targets = DrillTargets(rto_s=30, rpo_s=1, rpo_rows=0)

    def runner(item: PlannedScenario, directory: Path) -> Any:
        called.append(directory)
        return "pass"

    with pytest.raises(ScenarioError, match="outside"):
        run_drill("d", targets, planned, tmp_path / "drill", runner)
    assert called == []


def test_output_paths_and_ids_are_checked() -> None:
    root = Path("/tmp/results")
    assert contained(root, root / "run-1", "run") == root.resolve() / "run-1"
    for bad in (root / ".." / "x", Path("/etc/passwd"), root / "a" / ".." / ".." / "b"):
        with pytest.raises(ScenarioError, match="outside"):
            contained(root, bad, "run")
    assert check_id("20260101T000000Z-primary_kill-ab12", "run id")
    for bad_id in ("..", "a/b", "", "-x", "a\nb"):
        with pytest.raises(ScenarioError):
            check_id(bad_id, "run id")


# --- 8. bad files and values: exit 2 (or 3), never a traceback ------------------------

BINARY = b"\x80\x81\xfe\xff\x00\x01garbage\xc3\x28"


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_an_unreadable_scenario_objectives_or_drill_file_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    if kind == "directory":
        bad = tmp_path / "bad.yaml"
        bad.mkdir()
    else:
        bad = write(tmp_path, BINARY, "bad.yaml")
    for argv in (
        ["run", str(bad), "--dry-run"],
        ["run", SCENARIO, "--objectives", str(bad), "--dry-run"],
        ["up", str(bad), *NO_PG],
        ["drill", str(bad), *NO_PG],
        ["drill", "--scenarios", str(bad), *NO_PG],
        ["drill", "--objectives", str(bad), *NO_PG],
    ):
        code, text = outcome(capsys, argv)
        assert code == 2, argv
        assert "bad.yaml" in text, argv
        if kind == "directory":
            assert "directory" in text


def test_a_20000_deep_yaml_list_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "load: " + "[" * 20000 + "]" * 20000 + "\n", "deep.yaml")
    code, text = outcome(capsys, ["run", str(path), "--dry-run"])
    assert code == 2 and "deep.yaml" in text and "load" in text and "deep" in text


def test_a_deep_objectives_file_is_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "- " * 5000 + "x\n", "objectives.yaml")
    with pytest.raises(ScenarioError, match="objectives.yaml"):
        load_objectives(path)


@pytest.mark.parametrize(
    "value",
    ["load.users=[1", "load.users={a: 1", "load.users=*alias", "load.users=a: b: c", "load.=1"],
)
def test_a_broken_set_value_is_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    code, text = outcome(capsys, ["run", SCENARIO, "--set", value, "--dry-run"])
    assert code == 2 and "--set" in text and "load." in text


@pytest.mark.parametrize(
    "content,key",
    [
        ("[]", "a list"),
        ("null", "null"),
        ('"text"', "a string"),
        ('{"verdict": 3}', "verdict"),
        ('{"verdict": "maybe"}', "verdict"),
        ('{"metrics": []}', "metrics"),
        ('{"objectives": [1]}', "objectives.0"),
        ('{"objectives": {"a": 1}}', "objectives"),
        (
            '{"objectives": [{"metric": "rto_s", "verdict": "met", "bound": "max", "target": "5"}]}',
            "objectives.0.target",
        ),
        (
            '{"objectives": [{"metric": 5, "verdict": "met", "bound": "max"}]}',
            "objectives.0.metric",
        ),
        ('{"faults": [null]}', "faults.0"),
        ('{"notes": "x"}', "notes"),
        ('{"scenario": []}', "scenario"),
        ('{"duration_s": "long"}', "duration_s"),
        ('{"complete": 1}', "complete"),
        ('{"schema_version": 99}', "schema_version"),
        ('{"drill_id": "x", "scenarios": []}', "drill.json"),
        ("[" * 100000 + "]" * 100000, "JSON"),
        ("{not json", "JSON"),
    ],
)
def test_report_and_compare_refuse_a_damaged_result_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, key: str
) -> None:
    path = write(tmp_path, content, "result.json")
    for argv in (["report", str(path)], ["compare", str(path)]):
        code, text = outcome(capsys, argv)
        assert code == 2, argv
        assert "result.json" in text and key in text, (argv, text)


def test_nan_and_infinity_in_a_result_are_not_measurements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.report.result import read_result

    path = write(tmp_path, '{"verdict": "pass", "metrics": {"rto_s": NaN, "failover_s": 1e999}}')
    result = read_result(path)
    assert result["metrics"] == {"rto_s": None, "failover_s": None}
    code, _ = outcome(capsys, ["compare", str(path), str(path)])
    assert code == 0


def test_report_out_that_is_a_file_is_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = REPO / "tests" / "data" / "result_sample.json"
    blocker = write(tmp_path, "x", "blocker")
    code, text = outcome(capsys, ["report", str(sample), "--out", str(blocker / "sub")])
    assert code == 2 and "--out" in text and "blocker" in text


def test_a_full_disk_is_exit_3_naming_the_file_and_leaves_no_half_written_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC is the machine, not the input: exit 3 (inconclusive), the file named. The
    reports are replaced only when complete, so what was there stays whole."""
    sample = REPO / "tests" / "data" / "result_sample.json"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "result.json").write_bytes(sample.read_bytes())
    for name in ("junit.xml", "summary.md", "report.html", "metrics.prom"):
        (run_dir / name).write_text("OLD COMPLETE FILE")

    def full_disk(self: Path, data: Any, *args: Any, **kwargs: Any) -> int:
        with open(self, "wb") as handle:  # half of it gets out, then the disk is full
            handle.write((data.encode() if isinstance(data, str) else data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    code, text = outcome(capsys, ["report", str(run_dir)])
    assert code == 3
    assert "no space left" in text and str(run_dir) in text
    for name in ("junit.xml", "summary.md", "report.html", "metrics.prom"):
        assert (run_dir / name).read_text() == "OLD COMPLETE FILE"


# --- 9. YAML limits, duplicate keys, finite numbers, bounded --repeat -----------------

BOMB = (
    "postgres:\n"
    "  settings:\n"
    '    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
)


def test_a_yaml_alias_bomb_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BOMB, "bomb.yaml")
    started = time.process_time()
    code, text = outcome(capsys, ["run", str(path), "--dry-run"])
    assert code == 2 and "bomb.yaml" in text and "postgres.settings.b" in text
    assert "alias" in text
    assert time.process_time() - started < 2.0


def test_a_file_over_one_mebibyte_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "description: '" + "x" * (1024 * 1024) + "'\n", "big.yaml")
    code, text = outcome(capsys, ["run", str(path), "--dry-run"])
    assert code == 2 and "big.yaml" in text and "1024 KiB" in text


@pytest.mark.parametrize(
    "text,key",
    [
        ("load: {users: 5, users: 6}\n", "load.users"),
        ("name: a\nname: b\n", "name"),
        ("faults:\n  - {kind: kill_primary, at: 5s, at: 9s}\n", "faults.0.at"),
        (
            "postgres:\n  settings:\n    work_mem: 4MB\n    work_mem: 8MB\n",
            "postgres.settings.work_mem",
        ),
    ],
)
def test_a_duplicate_key_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    path = write(tmp_path, text, "dup.yaml")
    code, out = outcome(capsys, ["run", str(path), "--dry-run"])
    assert code == 2 and "dup.yaml" in out and key in out and "duplicate" in out


@pytest.mark.parametrize(
    "text,key",
    [
        ("load: {spawn_rate: .inf}\n", "load.spawn_rate"),
        ("load: {tool_mix: {tools/list: .nan}}\n", "load.tool_mix"),
        (f"load: {{run_time: '{HUGE}s'}}\n", "load.run_time"),
        (f"faults: [{{kind: kill_primary, at: {HUGE}}}]\n", "faults.0.at"),
        ("server: {protection: {storm_threshold: .inf}}\n", "server.protection.storm_threshold"),
        ("server: {protection: {admission: {rate: .inf}}}\n", "server.protection.admission.rate"),
        (f"objectives: [{{metric: rto_s, max: '{HUGE}'}}]\n", "objectives.0"),
        ("postgres: {settings: {work_mem: .nan}}\n", "work_mem"),
    ],
)
def test_nan_and_inf_are_refused_where_users_give_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    path = write(tmp_path, text, "numbers.yaml")
    code, out = outcome(capsys, ["run", str(path), "--dry-run"])
    assert code == 2 and "numbers.yaml" in out and key in out


def test_a_drill_target_must_be_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drill = write(
        tmp_path,
        f"targets: {{rto_s: '{HUGE}s', rpo_s: 1s, rpo_rows: 0}}\nscenarios: [{{file: {SCENARIO}}}]\n",
        "drill.yaml",
    )
    code, text = outcome(capsys, ["drill", str(drill), *NO_PG])
    assert code == 2 and "drill.yaml" in text and "targets.rto_s" in text
    with pytest.raises(ScenarioError):
        load_drill(drill)


@pytest.mark.parametrize(
    "flags,flag",
    [
        (["--repeat", "101"], "--repeat"),
        (["-r", "inf"], "--spawn-rate"),
        (["-t", f"{HUGE}s"], "--run-time"),
    ],
)
def test_flag_values_are_bounded_and_finite(
    capsys: pytest.CaptureFixture[str], flags: list[str], flag: str
) -> None:
    assert flag in usage_error(capsys, ["run", SCENARIO, *flags, "--dry-run"])


@pytest.mark.parametrize("tolerance", ["nan", "inf", "NaN%", "inf%"])
def test_compare_tolerance_must_be_finite_so_a_10x_regression_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tolerance: str
) -> None:
    runs = []
    for name, p99 in (("a", 100.0), ("b", 1000.0)):
        result = {"verdict": "pass", "metrics": {"tools_list_latency_ms": {"storm": {"p99": p99}}}}
        runs.append(str(write(tmp_path, json.dumps(result), f"{name}.json")))
    code, text = outcome(
        capsys, ["compare", *runs, "--tolerance", tolerance, "--fail-on-regression"]
    )
    assert code == 2 and "--tolerance" in text
    assert outcome(capsys, ["compare", *runs, "--fail-on-regression"])[0] == 1


# --- the loader never raises anything but ScenarioError --------------------------------

SCHEMA_KEYS = [
    "name", "load", "users", "server", "url", "faults", "at", "kind", "postgres", "settings",
    "objectives", "metric", "max", "min", "path", "ready", "headers", "spawn_rate", "run_time",
    "think_time", "kill_primary", "toxic", "proxy", "type", "attributes", "recovery", "restore",
    "target", "target_time", "ledger", "integrity", "checks", "sql", "windows", "stability",
    "probes", "timeout", "master_bind_host", "listen_addresses", "setup_sql", "command", "env",
    "instances", "docker", "seed", "backend", "description", "tool_mix", "<<", "", "a.b",
]  # fmt: skip
ODD_STRINGS = [
    "15s", f"{HUGE}s", "nan", ".inf", "99.5%", "nan%", "http://10.0.0.1/mcp",
    "http://[::1]:99999/x", "0.0.0.0", "'*'", "/x\ny", "../..", "kill_primary", "mcp",
    "latency", "2024-02-30", "local", "docker", "\x1b[2J", "\x00", "\ud800", "a\r\nb: c",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([10**400, -(10**400), 2**63, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(ODD_STRINGS),
)
KEYS = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=8), st.integers(-3, 3))
DOCS = st.recursive(
    SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(KEYS, kids, max_size=5)),
    max_leaves=30,
)
SHIPPED = [yaml.safe_load(p.read_text()) for p in sorted((SCENARIOS_DIR).glob("*.yaml"))]


def _dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")


def _loads_or_refuses(path: Path) -> None:
    try:
        assert isinstance(load_scenario(path), Scenario)
    except ScenarioError:
        pass  # the CLI turns this into exit 2; any other exception fails the test


def _leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    children: list[tuple[Any, ...]] = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else []
    )
    for key, value in items:
        children += [(*prefix, key), *_leaf_paths(value, (*prefix, key))]
    return children


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


FILES = st.one_of(
    DOCS.map(_dump),
    st.dictionaries(st.sampled_from(SCHEMA_KEYS[:20]), DOCS, max_size=6).map(_dump),
    st.binary(max_size=300),
)
"""A scenario file's bytes: a junk document, a junk document under real top-level keys,
or raw random bytes."""


@FUZZ
@given(content=FILES)
def test_property_junk_files_load_or_raise_scenario_error(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    path = tmp_path_factory.mktemp("junk") / "s.yaml"
    path.write_bytes(content)
    _loads_or_refuses(path)


@FUZZ
@given(data=st.data())
def test_property_a_shipped_scenario_with_junk_spliced_in_loads_or_raises_scenario_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Junk deep inside a real scenario reaches the validators past the top level."""
    import copy

    doc = copy.deepcopy(data.draw(st.sampled_from(SHIPPED)))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(_leaf_paths(doc)))
        node = doc
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = data.draw(DOCS)
    path = tmp_path_factory.mktemp("spliced") / "s.yaml"
    path.write_bytes(_dump(doc))
    _loads_or_refuses(path)
