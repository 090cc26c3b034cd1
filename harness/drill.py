"""The quarterly drill: several scenarios in one command, judged against declared RTO and
RPO targets, with every runbook and restore step and a list of gaps.

A drill file declares its targets first (they drive the design: every scenario is read
against them), then the scenarios, each a scenario file with dotted-key overrides:

```yaml
targets: {rto_s: 30s, rpo_s: 1s, rpo_rows: 0}
scenarios:
  - file: scenarios/primary_kill_runbook.yaml
    set: {load.users: 300}          # the reduced size, dropped by --full
    full: {load.users: 2000}        # optional: applied instead with --full
```

Each scenario runs as ``mcp-harness run`` runs it, on a fresh stack of its own (a stack
per scenario keeps the scenarios independent: a corruption restored in one never shows
in the next), into ``results/<drill_id>/<scenario name>/``. The drill is concluded from
those result.json files alone (:func:`drill_result`), so it is pure and testable.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.config import (
    SAFE_NAME,
    Objective,
    Scenario,
    ScenarioError,
    _format_errors,
    check_id,
    contained,
    load_scenario,
    parse_duration_s,
    read_yaml,
)
from harness.objectives import Verdict, exit_code
from harness.report.result import runbook_executions, runbook_steps
from harness.report.summary import objective_message
from harness.shipped import DRILLS_DIR, find_file, missing_file_hint

DRILL_SCHEMA_VERSION = 1
DRILL_FILE = "drill.json"
RUNBOOK_OK = ("healthy", "fixed")
STEP_GAP = {
    "alert": "needs a manual action",
    "not_fixed": "fix ran but did not fix",
    "fix_failed": "fix failed",
    "skipped": "skipped (a precondition was not healthy)",
}


class DrillTargets(BaseModel):
    """RTO and RPO in DESIGN's terms: ``rto_s`` (incident -> service objectives met
    again), ``rpo_s`` (time of data lost) and ``rpo_rows`` (rows lost or altered)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rto_s: float
    rpo_s: float
    rpo_rows: int = Field(ge=0)

    @field_validator("rto_s", "rpo_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration_s(value)
        if seconds < 0:
            raise ValueError("must not be negative")
        return seconds


class DrillScenario(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    file: str
    set: dict[str, Any] = Field(default_factory=dict)
    """Overrides of the default (reduced) drill; dropped by ``--full``."""
    full: dict[str, Any] = Field(default_factory=dict)
    """Overrides used only by ``--full`` (a full-size drill)."""


class DrillFile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    targets: DrillTargets
    scenarios: list[DrillScenario] = Field(min_length=1)


def load_drill(path: Path | str) -> DrillFile:
    """Read and validate a drill file (or a shipped drill by name); errors name the file and
    the key."""
    path = find_file(path, DRILLS_DIR)
    if not path.exists():
        raise ScenarioError(f"{path}: no such drill file; {missing_file_hint(DRILLS_DIR)}")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping at the top level")
    try:
        return DrillFile.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(
            _format_errors(path, exc).replace("invalid scenario", "invalid drill", 1)
        ) from None


DrillSize = Literal["reduced", "full", "as_written"]


class ScenarioRun(NamedTuple):
    """One scenario of a drill as it ran: its name, directory, result.json, and the keys
    the drill changed in it."""

    name: str
    dir: Path
    result: dict[str, Any]
    overrides: dict[str, Any] = {}


@dataclass(frozen=True)
class PlannedScenario:
    name: str
    """Also its subfolder of the drill directory (unique within the drill)."""
    file: Path
    scenario: Scenario
    overrides: dict[str, Any] = field(default_factory=dict)
    """The drill's ``set:`` (reduced) or ``full:`` keys applied to the file."""


def _scenario_path(file: str, drill_path: Path) -> Path:
    """A scenario path as written: from the working directory, else beside the drill file;
    a path found in neither may name a shipped scenario (``load_scenario`` looks)."""
    path = Path(file)
    if path.is_absolute() or path.exists():
        return path
    beside = drill_path.parent / path
    return beside if beside.exists() else path


def plan_drill(
    drill_path: Path | str,
    drill: DrillFile,
    *,
    full: bool = False,
    scenario_files: Sequence[str] | None = None,
    objectives: list[Objective] | None = None,
    allow_remote: bool = False,
) -> list[PlannedScenario]:
    """Every scenario loaded and validated before anything starts (a bad one stops the
    drill with exit 2), its targets and listeners on this machine unless
    ``allow_remote``. ``scenario_files`` replaces the drill's list (no overrides);
    ``objectives`` replaces every scenario's objectives."""
    drill_path = Path(drill_path)
    entries = (
        [DrillScenario(file=f) for f in scenario_files] if scenario_files else list(drill.scenarios)
    )
    planned: list[PlannedScenario] = []
    names: set[str] = set()
    for index, entry in enumerate(entries):
        path = _scenario_path(entry.file, drill_path)
        overrides = (entry.full if full else entry.set) or {}
        try:
            scenario = load_scenario(path, overrides, allow_remote=allow_remote)
        except ScenarioError as exc:
            raise ScenarioError(f"{drill_path}: scenarios.{index}: {exc}") from None
        if objectives is not None:
            scenario = scenario.model_copy(update={"objectives": list(objectives)})
        name, n = scenario.name, 2
        while name in names:
            name, n = f"{scenario.name}-{n}", n + 1
        names.add(name)
        planned.append(PlannedScenario(name, path, scenario, dict(overrides)))
    return planned


def new_drill_id(drill_path: Path | str) -> str:
    """``<UTC stamp>-drill-<file name>``: a directory name, so the file name must be safe."""
    stem = Path(drill_path).stem
    if not SAFE_NAME.match(stem):
        raise ScenarioError(
            f"{drill_path}: the drill file's name {stem!r} names the drill's results "
            "directory; rename it to letters, digits, '.', '_' or '-'"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return check_id(f"{stamp}-drill-{stem}", "drill id")


ScenarioRunner = Callable[[PlannedScenario, Path], Verdict]
"""Runs one scenario into the given directory (result.json and its reports); its verdict."""


def drill_size(*, full: bool, scenario_files: Sequence[str] | None) -> DrillSize:
    """How big the drill ran: the files as written (``--scenarios``), ``full`` (each
    entry's ``full:`` keys) or ``reduced`` (its ``set:`` keys, the default)."""
    if scenario_files:
        return "as_written"
    return "full" if full else "reduced"


def run_drill(
    drill_id: str,
    targets: DrillTargets,
    planned: Sequence[PlannedScenario],
    drill_dir: Path,
    runner: ScenarioRunner,
    size: DrillSize = "reduced",
) -> dict[str, Any]:
    """Run the scenarios one after the other and conclude the drill from their result.json
    files. An interrupted scenario (Ctrl-C) stops the drill: the rest are not started."""
    from harness.report.result import RESULT_FILE, read_result

    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    runs: list[ScenarioRun] = []
    for item in planned:
        scenario_dir = contained(drill_dir, drill_dir / item.name, f"drill scenario {item.name}")
        verdict = runner(item, scenario_dir)
        try:
            result = read_result(scenario_dir / RESULT_FILE)
        except (OSError, ValueError):
            result = {"verdict": verdict, "notes": ["no result.json was written"]}
        runs.append(ScenarioRun(item.name, scenario_dir, result, item.overrides))
        if result.get("interrupted"):
            break
    return drill_result(
        drill_id,
        targets,
        runs,
        drill_dir=drill_dir,
        started_at=started_at,
        duration_s=time.monotonic() - t0,
        not_run=[p.name for p in planned[len(runs) :]],
        size=size,
    )


def _metric(result: dict[str, Any], *path: str) -> Any:
    node: Any = result.get("metrics") or {}
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def restore_steps(result: dict[str, Any]) -> list[dict[str, Any]]:
    steps = _metric(result, "restore", "steps")
    if not isinstance(steps, dict):
        return []
    return [
        {"name": name, "duration_s": value}
        for name, value in steps.items()
        if _number(value) is not None
    ]


Gap = tuple[str, str, str]
"""(kind, what, detail) of one thing a person has to look at."""


def scenario_gaps(name: str, result: dict[str, Any], targets: DrillTargets) -> list[dict[str, Any]]:
    """What a person has to look at after this scenario: missed and unmeasured objectives,
    faults that did not take effect, runbook steps that were not healthy or fixed (an
    alert needs a manual action), timed-out runbook actions, a restore error, doubts, and
    a measured RTO or RPO over the drill's declared targets."""
    found = [
        *_objective_gaps(result),
        *_fault_gaps(result),
        *_runbook_gaps(result),
        *_run_gaps(result),
        *_target_gaps(result, targets),
    ]
    return [
        {"scenario": name, "kind": kind, "what": what, "detail": detail}
        for kind, what, detail in found
    ]


def _objective_gaps(result: dict[str, Any]) -> Iterator[Gap]:
    for objective in result.get("objectives") or []:
        verdict = objective.get("verdict")
        label = objective.get("metric", "?") + (
            f" ({objective['phase']})" if objective.get("phase") else ""
        )
        if verdict == "missed":
            yield "objective_missed", f"objective missed: {label}", objective_message(objective)
        elif verdict == "not_measured":
            yield (
                "objective_not_measured",
                f"objective not measured: {label}",
                objective_message(objective),
            )


def _fault_gaps(result: dict[str, Any]) -> Iterator[Gap]:
    for fault in result.get("faults") or []:
        if not fault.get("confirmed"):
            yield (
                "fault_unconfirmed",
                f"fault not confirmed: {fault.get('kind')} on {fault.get('target')}",
                str(fault.get("detail") or "the fault did not take effect"),
            )


def _runbook_gaps(result: dict[str, Any]) -> Iterator[Gap]:
    """Each step that was not healthy or fixed (once per outcome and detail), and each
    check or fix that timed out or failed."""
    seen: set[tuple[Any, ...]] = set()
    for step in runbook_steps(result):
        outcome = step.get("outcome")
        key = (step.get("name"), outcome, step.get("detail"))
        if outcome in RUNBOOK_OK or key in seen:
            continue
        seen.add(key)
        yield (
            "runbook_step",
            f"runbook step {step.get('name')}: {STEP_GAP.get(str(outcome), str(outcome))}",
            str(step.get("detail") or outcome),
        )
    for execution in runbook_executions(result):
        for action in execution.get("actions") or []:
            if action.get("outcome") in ("timed_out", "error"):
                yield (
                    "runbook_action",
                    f"runbook {action.get('action')} of {action.get('step')} {action.get('outcome')}",
                    str(action.get("detail") or ""),
                )


def _run_gaps(result: dict[str, Any]) -> Iterator[Gap]:
    """A restore that failed, doubts on figures, a run that did not finish."""
    restore = _metric(result, "restore")
    if isinstance(restore, dict) and restore.get("error"):
        yield "restore_error", "restore failed", str(restore["error"])
    for doubt in result.get("doubts") or []:
        yield "doubt", "a figure could be wrong", str(doubt)
    if result.get("complete") is False or result.get("interrupted"):
        notes = "; ".join(result.get("notes") or []) or "interrupted"
        yield "incomplete", "the run did not finish", notes


def _target_gaps(result: dict[str, Any], targets: DrillTargets) -> Iterator[Gap]:
    """RTO and RPO over the drill's targets, and any acknowledged write lost."""
    for kind, what, path, target, unit in (
        ("rto_over_target", "RTO over target", ("rto_s",), targets.rto_s, " s"),
        ("rpo_over_target", "RPO over target", ("writes", "rpo_s"), targets.rpo_s, " s"),
        (
            "rpo_over_target",
            "RPO rows over target",
            ("writes", "rpo_rows"),
            targets.rpo_rows,
            " rows",
        ),
    ):
        measured = _number(_metric(result, *path))
        if measured is not None and measured > target:
            yield kind, what, f"measured {measured:.3g}{unit} > target {target:g}{unit}"
    lost = _number(_metric(result, "writes", "lost_unintended"))
    if lost:
        yield (
            "acknowledged_writes_lost",
            "acknowledged writes lost",
            f"{lost:g} writes the clients were told were saved are missing on the final "
            "primary (not discarded by a restore on purpose)",
        )


OVER_TARGET = ("rto_over_target", "rpo_over_target")


def scenario_entry(
    name: str,
    scenario_dir: Path,
    result: dict[str, Any],
    targets: DrillTargets,
    drill_dir: Path,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    try:
        rel = str(scenario_dir.relative_to(drill_dir))
    except ValueError:
        rel = str(scenario_dir)
    load = ((result.get("scenario") or {}).get("load")) or {}
    return {
        "name": name,
        "dir": rel,
        "run_id": result.get("run_id"),
        "verdict": result.get("verdict", "inconclusive"),
        "duration_s": result.get("duration_s"),
        "overrides": dict(overrides or {}),
        "ran": {"users": load.get("users"), "run_time_s": load.get("run_time")},
        "rto": {"target_s": targets.rto_s, "measured_s": _metric(result, "rto_s")},
        "rpo": {
            "target_s": targets.rpo_s,
            "measured_s": _metric(result, "writes", "rpo_s"),
            "target_rows": targets.rpo_rows,
            "measured_rows": _metric(result, "writes", "rpo_rows"),
        },
        "objectives": list(result.get("objectives") or []),
        "runbook_steps": runbook_steps(result),
        "restore_steps": restore_steps(result),
        "restore_total_s": _metric(result, "restore", "total_s"),
    }


def drill_verdict(
    scenario_verdicts: Sequence[str], gaps: Sequence[dict[str, Any]], not_run: Sequence[str]
) -> Verdict:
    """The first that applies over all scenarios (DESIGN): fail if a scenario failed or a
    measured RTO / RPO exceeded the drill's target; else inconclusive if a scenario was
    inconclusive or not run; else pass."""
    if "fail" in scenario_verdicts or any(g["kind"] in OVER_TARGET for g in gaps):
        return "fail"
    if not_run or any(v != "pass" for v in scenario_verdicts):
        return "inconclusive"
    return "pass"


def drill_result(
    drill_id: str,
    targets: DrillTargets,
    runs: Sequence[ScenarioRun],
    *,
    drill_dir: Path,
    started_at: str,
    duration_s: float,
    not_run: Sequence[str] = (),
    size: DrillSize = "reduced",
) -> dict[str, Any]:
    """drill.json: the targets, the size it ran at, one entry per scenario (with the keys
    the drill changed and the load that ran), the versions, host and commits of the parts,
    the gaps, the verdict and exit code: a record that stands as audit evidence."""
    scenarios = [
        scenario_entry(run.name, run.dir, run.result, targets, drill_dir, run.overrides)
        for run in runs
    ]
    environment: dict[str, Any] = next(
        (run.result["environment"] for run in runs if run.result.get("environment")), {}
    )
    gaps = [g for run in runs for g in scenario_gaps(run.name, run.result, targets)]
    gaps += [
        {
            "scenario": n,
            "kind": "not_run",
            "what": "scenario not run",
            "detail": "the drill was interrupted",
        }
        for n in not_run
    ]
    verdict = drill_verdict([s["verdict"] for s in scenarios], gaps, not_run)
    return {
        "schema_version": DRILL_SCHEMA_VERSION,
        "drill_id": drill_id,
        "started_at": started_at,
        "duration_s": duration_s,
        "targets": targets.model_dump(),
        "size": size,
        "environment": environment,
        "scenarios": scenarios,
        "gaps": gaps,
        "verdict": verdict,
        "exit_code": exit_code([verdict]),
    }
