"""CLI behaviour that needs no stack: bad input, dry runs, doctor."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.config import Scenario, parse_duration_s
from harness.shipped import SCENARIOS_DIR
from tests.helpers import harness_process_pids

SCENARIO = str(SCENARIOS_DIR / "primary_kill.yaml")


def test_invalid_scenario_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("load: {users: -4}\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "load.users" in err


def test_override_that_breaks_the_schedule_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", SCENARIO, "-t", "10s", "--dry-run"]) == 2
    assert "faults.0.at" in capsys.readouterr().err


def test_dry_run_prints_resolved_scenario_and_schedule_and_starts_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = harness_process_pids()
    assert (
        main(["run", SCENARIO, "-u", "42", "-r", "7", "-t", "90s", "--seed", "5", "--dry-run"]) == 0
    )
    printed = capsys.readouterr()
    resolved = yaml.safe_load(printed.out)  # stdout is the resolved scenario, valid YAML
    assert (resolved["load"]["users"], resolved["load"]["spawn_rate"]) == (42, 7.0)
    assert (resolved["load"]["run_time"], resolved["seed"]) == (90.0, 5)
    assert Scenario.model_validate(resolved).load.users == 42  # and a scenario again
    assert "kill_primary" in printed.err and "promote the replica" in printed.err
    assert harness_process_pids() == before


def test_durations_take_locusts_compound_form() -> None:
    assert [parse_duration_s(v) for v in ("1m30s", "1h30m", "2h0m5s", "90s")] == [
        90.0,
        5400.0,
        7205.0,
        90.0,
    ]
    for junk in ("1m30", "30s1m", "m", ""):
        with pytest.raises(ValueError, match="like 15s, 500ms or 1m30s"):
            parse_duration_s(junk)


def test_version_and_exit_codes_are_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("mcp-harness ")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "exit codes:" in capsys.readouterr().out


def test_objectives_file_replaces_the_scenarios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objectives = tmp_path / "objectives.yaml"
    objectives.write_text("- {metric: reconnect.success_rate, min: 99.5%}\n")
    assert main(["run", SCENARIO, "--objectives", str(objectives), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "reconnect.success_rate" in out and "db_failover_s" not in out.split("objectives:")[1]


def test_bad_flag_values_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", SCENARIO, "-t", "soon"])
    assert info.value.code == 2


def test_doctor_lists_every_part(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor"])
    out = capsys.readouterr().out
    for part in ("postgresql", "toxiproxy-server", "mcp", "locust"):
        assert part in out
    assert code in (0, 3)


def test_report_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path / "nothing.json")]) == 2


def test_set_overrides_any_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "run",
                SCENARIO,
                "--set",
                "load.reconnect.policy=immediate",
                "--set",
                "windows.stability=3s",
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "policy: immediate" in out and "stability: 3.0" in out
    assert main(["run", SCENARIO, "--set", "faults.0.at=7s", "--dry-run"]) == 0
    assert "at: 7.0" in capsys.readouterr().out
    assert main(["run", SCENARIO, "--set", "faults.5.at=7s", "--dry-run"]) == 2
    assert main(["run", SCENARIO, "--set", "load.users.deep=1", "--dry-run"]) == 2
    assert main(["run", SCENARIO, "--set", "nonsense", "--dry-run"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_compare_shows_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from harness.report.compare import comparison

    runs = []
    for name, p99 in (("a", 100.0), ("b", 250.0)):
        result = {
            "run_id": name,
            "verdict": "pass",
            "metrics": {"tools_list_latency_ms": {"storm": {"p99": p99}}},
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(result))
        runs.append(result)
    row = next(r for r in comparison(runs) if r.metric == "tools_list_latency_ms.storm.p99")
    assert row.values == [100.0, 250.0] and row.ratios == [1.0, 2.5]
    assert row.regressed == [False, True]
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "2.50" in out and "regressions against run 1: 1" in out
    flags = ["--fail-on-regression"]
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), *flags]) == 1
    # against the slower run as the baseline, the faster one is no regression
    b_first = ["--baseline", str(tmp_path / "b.json"), *flags]
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), *b_first]) == 0
    assert (
        main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--baseline", "2"])
        == 0
    )
    assert main(["compare", str(tmp_path / "missing.json")]) == 2
    assert main(["compare", str(tmp_path / "a.json"), "--baseline", "3"]) == 2
    assert main(["compare", str(tmp_path / "a.json"), "--tolerance", "lots"]) == 2
    assert "--tolerance" in capsys.readouterr().err


def test_compare_as_json_and_markdown_carries_units(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    paths = []
    for name, p99, failover, verdict, lost in (
        ("a", 100.0, 2.0, "pass", 0),
        ("b", 250.0, 2.1, "fail", 3),
    ):
        result = {
            "run_id": name,
            "verdict": verdict,
            "metrics": {
                "tools_list_latency_ms": {"storm": {"p99": p99}},
                "failover_s": failover,
                "writes": {"lost": lost},
            },
        }
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(result))
    args = ["compare", *map(str, paths)]
    assert main([*args, "--format", "json", "--fail-on-regression"]) == 1
    document = json.loads(capsys.readouterr().out)
    rows = {row["metric"]: row for row in document["metrics"]}
    assert rows["tools_list_latency_ms.storm.p99"]["unit"] == "ms"
    assert rows["tools_list_latency_ms.storm.p99"]["regressed"] == [False, True]
    assert rows["failover_s"] == {
        "metric": "failover_s",
        "unit": "s",
        "better": "lower",
        "values": [2.0, 2.1],
        "ratios": [1.0, 1.05],
        "regressed": [False, False],
    }
    assert [r["verdict_regressed"] for r in document["runs"]] == [False, True]
    assert rows["writes.lost"]["ratios"] == [None, None] and rows["writes.lost"]["regressed"] == [
        False,
        True,
    ]
    assert document["runs"][1]["source"] == str(paths[1]) and document["regressions"] == 3
    assert main([*args, "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert "| `tools_list_latency_ms.storm.p99` | ms | 100 | 250 (×2.50) ▲ |" in markdown
    assert "| verdict | | pass | fail ▲ |" in markdown
    assert "| `writes.lost` | count | 0 | 3 ▲ |" in markdown  # from a baseline of 0: no ratio
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "failover_s" in text and "3 ▲" in text


def test_regressions_know_which_way_is_better() -> None:
    from harness.report.compare import regressed

    assert regressed(12.0, 10.0, "lower", 0.10)
    assert not regressed(10.5, 10.0, "lower", 0.10)
    assert regressed(0.95, 0.999, "higher", 0.01)
    assert not regressed(1.0, 0.99, "higher", 0.01)
    assert regressed(1.0, 0.0, "lower", 0.10)  # 0 lost writes -> 1
    assert not regressed(50.0, 1.0, "neutral", 0.10)
    assert not regressed(None, 1.0, "lower", 0.10)


def test_objective_metrics_join_the_comparison_with_their_direction() -> None:
    from harness.report.compare import comparison

    def run(verdict: str, rate: float) -> dict:
        return {
            "verdict": verdict,
            "metrics": {"custom": {"rate": rate}},
            "objectives": [{"metric": "custom.rate", "bound": "min", "target": 0.9}],
        }

    rows = {r.metric: r for r in comparison([run("pass", 0.99), run("fail", 0.5)])}
    assert rows["custom.rate"].direction == "higher"
    assert rows["custom.rate"].regressed == [False, True]


def test_report_writes_the_outputs_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    sample = Path(__file__).resolve().parents[1] / "data" / "result_sample.json"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(sample, run_dir / "result.json")
    code = main(["report", str(run_dir)])
    assert code in (0, 1, 3)
    for name in ("junit.xml", "summary.md", "report.html", "metrics.prom"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (
        main(["report", str(run_dir / "result.json"), "--out", str(tmp_path / "elsewhere")]) == code
    )
    assert (tmp_path / "elsewhere" / "report.html").exists()


def test_repeat_must_be_a_positive_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", SCENARIO, "--repeat", "0", "--dry-run"])
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err


def test_a_remote_server_url_needs_allow_remote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "remote.yaml"
    scenario.write_text("server: {url: 'http://10.1.2.3:8000/mcp'}\n")
    assert main(["run", str(scenario), "--dry-run"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert main(["run", str(scenario), "--dry-run", "--allow-remote"]) == 0
    killing = tmp_path / "kill.yaml"
    killing.write_text(
        "server: {url: 'http://127.0.0.1:8000/mcp'}\nfaults: [{kind: kill_server, at: 5s}]\n"
    )
    assert main(["run", str(killing), "--dry-run"]) == 2
    assert "kill_server needs a server the harness runs" in capsys.readouterr().err
