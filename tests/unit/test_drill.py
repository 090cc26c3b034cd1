"""The drill's pure parts: its file model, its gaps and verdict, and its rendering,
from hand-made result dicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import ScenarioError, load_objectives
from harness.drill import (
    DrillTargets,
    ScenarioRun,
    drill_result,
    load_drill,
    plan_drill,
    scenario_gaps,
)
from harness.report.drill import drill_html, drill_markdown
from harness.shipped import DRILLS_DIR, SCENARIOS_DIR

TARGETS = DrillTargets(rto_s=30, rpo_s=1, rpo_rows=0)


def write(tmp_path: Path, text: str, name: str = "drill.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_drill_loads_and_plans_reduced_and_full() -> None:
    path = DRILLS_DIR / "quarterly.yaml"
    drill = load_drill(path)
    assert drill.targets == TARGETS
    reduced = plan_drill(path, drill)
    full = plan_drill(path, drill, full=True)
    assert [p.name for p in reduced] == [p.name for p in full]
    assert all(
        r.scenario.load.users < f.scenario.load.users for r, f in zip(reduced, full, strict=True)
    )


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "targets: {rto_s: 30s, rpo_s: 1s, rpo_rows: 0, rto: 3}\nscenarios: [{file: x.yaml}]\n",
    )
    with pytest.raises(ScenarioError) as exc:
        load_drill(path)
    assert str(path) in str(exc.value) and "targets.rto: unknown key" in str(exc.value)


def test_bad_duration_and_missing_scenarios(tmp_path: Path) -> None:
    path = write(tmp_path, "targets: {rto_s: soon, rpo_s: 1s, rpo_rows: 0}\n")
    with pytest.raises(ScenarioError) as exc:
        load_drill(path)
    assert "targets.rto_s" in str(exc.value) and "scenarios" in str(exc.value)


def test_bad_scenario_override_names_drill_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"targets: {{rto_s: 30s, rpo_s: 1s, rpo_rows: 0}}\n"
        f"scenarios: [{{file: {SCENARIOS_DIR}/server_restart.yaml, set: {{load.userz: 3}}}}]\n",
    )
    with pytest.raises(ScenarioError) as exc:
        plan_drill(path, load_drill(path))
    assert "scenarios.0" in str(exc.value) and "load.userz" in str(exc.value)


def test_scenarios_and_objectives_replace(tmp_path: Path) -> None:
    objectives = write(tmp_path, "- {metric: rto_s, max: 5s}\n", "objectives.yaml")
    path = DRILLS_DIR / "quarterly.yaml"
    planned = plan_drill(
        path,
        load_drill(path),
        scenario_files=[str(SCENARIOS_DIR / "server_restart.yaml")] * 2,
        objectives=load_objectives(objectives),
    )
    assert [p.name for p in planned] == ["server_restart", "server_restart-2"]
    assert all([o.metric for o in p.scenario.objectives] == ["rto_s"] for p in planned)


def result(**metrics: object) -> dict:
    return {
        "run_id": "r1",
        "verdict": "pass",
        "complete": True,
        "faults": [{"kind": "kill_primary", "target": "primary", "confirmed": True}],
        "objectives": [],
        "metrics": {"rto_s": 12.0, "writes": {"rpo_s": 0.0, "rpo_rows": 0}, **metrics},
    }


RUNBOOK = {
    "executions": [
        {
            "t_s": 16.0,
            "steps": [
                {
                    "name": "primary_connectivity",
                    "outcome": "fixed",
                    "detail": "promoted",
                    "start_s": 16.0,
                    "duration_s": 1.5,
                },
                {
                    "name": "replica_lag",
                    "outcome": "alert",
                    "detail": "no replica",
                    "start_s": 17.5,
                    "duration_s": 0.1,
                },
            ],
            "actions": [
                {
                    "step": "primary_connectivity",
                    "action": "check",
                    "outcome": "unhealthy",
                    "detail": "",
                    "start_s": 16,
                    "duration_s": 0.5,
                },
                {
                    "step": "backup",
                    "action": "fix",
                    "outcome": "timed_out",
                    "detail": "no result within 30s",
                    "start_s": 17,
                    "duration_s": 30,
                },
            ],
        }
    ]
}


def test_clean_scenario_has_no_gaps() -> None:
    assert scenario_gaps("a", result(), TARGETS) == []


def test_gaps_list_every_kind() -> None:
    r = result(
        rto_s=45.0,
        writes={"rpo_s": 2.5, "rpo_rows": 3},
        runbook=RUNBOOK,
        restore={"error": "base backup missing", "steps": {}},
    )
    r["faults"].append(
        {"kind": "toxic", "target": "mcp", "confirmed": False, "detail": "not listed"}
    )
    r["objectives"] = [
        {"metric": "failover_s", "bound": "max", "target": 5, "measured": 9, "verdict": "missed"},
        {
            "metric": "reconnect.success_rate",
            "bound": "min",
            "target": 0.99,
            "measured": None,
            "verdict": "not_measured",
        },
        {"metric": "db_failover_s", "bound": "max", "target": 5, "measured": 1, "verdict": "met"},
    ]
    gaps = scenario_gaps("s", r, TARGETS)
    kinds = [g["kind"] for g in gaps]
    assert kinds == [
        "objective_missed",
        "objective_not_measured",
        "fault_unconfirmed",
        "runbook_step",
        "runbook_action",
        "restore_error",
        "rto_over_target",
        "rpo_over_target",
        "rpo_over_target",
    ]
    assert "measured 9 > target 5" in gaps[0]["detail"]
    assert "replica_lag" in gaps[3]["what"] and "manual action" in gaps[3]["what"]
    assert "timed_out" in gaps[4]["what"]
    assert all(g["scenario"] == "s" for g in gaps)


def test_drill_verdict_first_that_applies(tmp_path: Path) -> None:
    ok = result()
    inconclusive = {**result(), "verdict": "inconclusive"}
    over = result(rto_s=31.0)
    run = lambda *rs: drill_result(  # noqa: E731
        "d",
        TARGETS,
        [ScenarioRun(f"s{i}", tmp_path / f"s{i}", r) for i, r in enumerate(rs)],
        drill_dir=tmp_path,
        started_at="now",
        duration_s=1.0,
    )
    assert (run(ok, ok)["verdict"], run(ok, ok)["exit_code"]) == ("pass", 0)
    assert (run(ok, inconclusive)["verdict"], run(ok, inconclusive)["exit_code"]) == (
        "inconclusive",
        3,
    )
    assert (run(inconclusive, over)["verdict"], run(inconclusive, over)["exit_code"]) == ("fail", 1)
    assert run({**result(), "verdict": "fail"}, inconclusive)["exit_code"] == 1


def test_rendering_shows_targets_table_steps_and_gaps(tmp_path: Path) -> None:
    restored = result(
        restore={
            "total_s": 14.2,
            "error": None,
            "steps": {"stop_server_s": 0.4, "restore_base_backup_s": 3.1},
        }
    )
    failed = {**result(rto_s=45.0, runbook=RUNBOOK), "verdict": "fail"}
    drill = drill_result(
        "d1",
        TARGETS,
        [
            ScenarioRun("pitr_restore", tmp_path / "pitr_restore", restored),
            ScenarioRun("primary_kill_runbook", tmp_path / "primary_kill_runbook", failed),
        ],
        drill_dir=tmp_path,
        started_at="2026-11-25T14:00:00+00:00",
        duration_s=240.0,
    )
    assert drill["scenarios"][0]["dir"] == "pitr_restore"
    assert drill["scenarios"][1]["rto"] == {"target_s": 30.0, "measured_s": 45.0}
    md = drill_markdown(drill)
    assert md.index("RTO ≤ 30 s") < md.index("| scenario |") < md.index("## Gaps")
    assert "[report.html](pitr_restore/report.html)" in md
    assert "| primary_connectivity | fixed |" in md and "restore_base_backup_s" in md
    assert "RTO over target: measured 45 s > target 30 s" in md
    html = drill_html(drill)
    assert (
        html.startswith("<!DOCTYPE html>")
        and "<script" not in html
        and "http" not in html.replace('href="pitr', "")
    )
    assert 'href="pitr_restore/report.html"' in html and 'id="gaps"' in html
    assert "needs a manual action" in html


def test_the_record_says_the_size_run_the_keys_changed_the_versions_host_and_commits(
    tmp_path: Path,
) -> None:
    from harness.report.result import environment, git_commit

    env = environment({"postgres": "18.6", "toxiproxy": "2.12.0"})
    assert env["commits"]["harness"] == git_commit(Path(__file__).parent)  # this checkout
    assert env["commits"]["harness"] is not None and git_commit(Path("/")) is None
    ran = {
        **result(),
        "environment": env,
        "scenario": {"load": {"users": 200, "run_time": 50.0}},
    }
    drill = drill_result(
        "d",
        TARGETS,
        [ScenarioRun("primary_kill_runbook", tmp_path / "p", ran, {"load.users": 200})],
        drill_dir=tmp_path,
        started_at="now",
        duration_s=60.0,
        size="reduced",
    )
    assert drill["size"] == "reduced" and drill["environment"] == env
    assert drill["scenarios"][0]["ran"] == {"users": 200, "run_time_s": 50.0}
    assert drill["scenarios"][0]["overrides"] == {"load.users": 200}
    md, html = drill_markdown(drill), drill_html(drill)
    for text in (md, html):
        assert "reduced (each scenario" in text
        assert env["machine"]["host"] in text and env["commits"]["harness"] in text
        assert "200 users for 50 s; the drill set load.users=200" in text
        assert "18.6" in text and "2.12.0" in text
