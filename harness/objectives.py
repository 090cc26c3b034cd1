"""Objectives -> verdicts, and the run's verdict and exit code (DESIGN.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.config import Objective
from harness.measure.failover import NOT_REACHED_KEY

Verdict = Literal["pass", "fail", "inconclusive"]
ObjectiveVerdict = Literal["met", "missed", "not_measured"]

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3


class UnknownMetric(KeyError):
    pass


@dataclass(frozen=True)
class JudgedObjective:
    metric: str
    bound: Literal["max", "min"]
    target: float
    measured: float | None
    verdict: ObjectiveVerdict
    measured_at_least: float | None = None
    """For a recovery that never came: it took longer than this (the time observed after the fault)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "bound": self.bound,
            "target": self.target,
            "measured": self.measured,
            "measured_at_least": self.measured_at_least,
            "verdict": self.verdict,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgedObjective:
        """Back from result.json's ``objectives`` (``as_dict``)."""
        return cls(
            data["metric"],
            data["bound"],
            data["target"],
            data["measured"],
            data["verdict"],
            data.get("measured_at_least"),
        )


def lookup(metrics: dict[str, Any], path: str) -> Any:
    """The value at a dotted path; ``UnknownMetric`` if the path does not exist."""
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UnknownMetric(path)
        node = node[part]
    return node


def metric_paths(metrics: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted path to a number (or null) in ``metrics``: what an objective may name."""
    paths = []
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            paths.extend(metric_paths(value, path + "."))
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            paths.append(path)
    return paths


def judge(objective: Objective, metrics: dict[str, Any]) -> JudgedObjective:
    """Objective paths are checked when the scenario loads; a path absent here was not
    measured (an interrupted run, a stack that never came up)."""
    try:
        value = lookup(metrics, objective.path)
    except UnknownMetric:
        value = None
    bound: Literal["max", "min"] = "max" if objective.max is not None else "min"
    if value is None or isinstance(value, (dict, list, bool)):
        at_least = (metrics.get(NOT_REACHED_KEY) or {}).get(objective.path)
        if at_least is not None and bound == "max" and at_least > objective.target:
            return JudgedObjective(
                objective.path, bound, objective.target, None, "missed", at_least
            )
        return JudgedObjective(
            objective.path, bound, objective.target, None, "not_measured", at_least
        )
    measured = float(value)
    met = measured <= objective.target if bound == "max" else measured >= objective.target
    return JudgedObjective(
        objective.path, bound, objective.target, measured, "met" if met else "missed"
    )


def judge_all(objectives: Iterable[Objective], metrics: dict[str, Any]) -> list[JudgedObjective]:
    return [judge(o, metrics) for o in objectives]


def run_verdict(
    judged: Sequence[JudgedObjective],
    *,
    faults_confirmed: bool,
    stack_up: bool,
    complete: bool,
    doubts: Sequence[str] = (),
) -> Verdict:
    """inconclusive when a figure could be wrong (``doubts``: a saturated load generator
    measures itself, so neither its misses nor its passes count); else fail if any objective
    was missed; else inconclusive if one was not measured, a fault was not confirmed, the
    stack did not come up or the run did not finish; else pass."""
    if doubts:
        return "inconclusive"
    if any(j.verdict == "missed" for j in judged):
        return "fail"
    if not (faults_confirmed and stack_up and complete) or any(
        j.verdict == "not_measured" for j in judged
    ):
        return "inconclusive"
    return "pass"


def exit_code(verdicts: Iterable[Verdict], *, warn_only: bool = False) -> int:
    """1 if any run failed (0 with ``warn_only``), else 3 if any was inconclusive, else 0."""
    verdicts = list(verdicts)
    if "fail" in verdicts:
        return EXIT_PASS if warn_only else EXIT_FAIL
    if "inconclusive" in verdicts:
        return EXIT_INCONCLUSIVE
    return EXIT_PASS


@dataclass(frozen=True)
class SeriesObjective:
    """One objective over the runs of a series (``--repeat``): each run's value and
    verdict, and one verdict for the series, judged on the worst run: a release gate
    holds only if every run met it. ``flaky``: met in some runs, missed in others."""

    metric: str
    bound: Literal["max", "min"]
    target: float
    values: tuple[float | None, ...]
    verdicts: tuple[ObjectiveVerdict, ...]

    @property
    def measured_values(self) -> list[float]:
        return sorted(v for v in self.values if v is not None)

    @property
    def worst(self) -> float | None:
        values = self.measured_values
        if not values:
            return None
        return values[-1] if self.bound == "max" else values[0]

    @property
    def median(self) -> float | None:
        values = self.measured_values
        if not values:
            return None
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

    @property
    def verdict(self) -> ObjectiveVerdict:
        if "missed" in self.verdicts:
            return "missed"
        if "not_measured" in self.verdicts:
            return "not_measured"
        return "met"

    @property
    def flaky(self) -> bool:
        return "met" in self.verdicts and "missed" in self.verdicts

    def as_dict(self) -> dict[str, Any]:
        values = self.measured_values
        return {
            "metric": self.metric,
            "bound": self.bound,
            "target": self.target,
            "values": list(self.values),
            "verdicts": list(self.verdicts),
            "min": values[0] if values else None,
            "median": self.median,
            "max": values[-1] if values else None,
            "measured": self.worst,
            "measured_at_least": None,
            "verdict": self.verdict,
            "flaky": self.flaky,
            "met_in": f"{self.verdicts.count('met')} of {len(self.verdicts)} runs",
        }


def judge_series(runs: Sequence[Sequence[JudgedObjective]]) -> list[SeriesObjective]:
    """Each objective across the runs (every run judged the same objectives, in order)."""
    if not runs:
        return []
    return [
        SeriesObjective(
            first.metric,
            first.bound,
            first.target,
            tuple(run[i].measured for run in runs),
            tuple(run[i].verdict for run in runs),
        )
        for i, first in enumerate(runs[0])
    ]


def series_verdict(run_verdicts: Sequence[Verdict]) -> Verdict:
    """The first that applies over the runs (as for a drill): fail if any run failed, else
    inconclusive if any was (or none ran), else pass. A run whose figures are in doubt is
    inconclusive whatever it missed, in a series as alone."""
    if "fail" in run_verdicts:
        return "fail"
    if "inconclusive" in run_verdicts or not run_verdicts:
        return "inconclusive"
    return "pass"
