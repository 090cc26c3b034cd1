"""Objectives -> verdicts, and the run's verdict and exit code (docs/objectives.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.config import Objective
from harness.measure.doubts import BOUNDS_KEY, EVERY_METRIC, Doubt
from harness.measure.failover import NOT_REACHED_KEY

Verdict = Literal["pass", "fail", "inconclusive"]
ObjectiveVerdict = Literal["met", "missed", "not_measured"]

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3


__all__ = ["BOUNDS_KEY", "EVERY_METRIC", "Doubt"]  # measured with the figures, judged here


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
    """For a recovery that never came: it took longer than this (the time observed after
    the fault); for a figure in doubt that stays a lower bound: at least this."""
    reason: str | None = None
    """Why it was not measured (a doubt, unobserved evidence), or the doubt a miss on a
    lower bound stood against."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "bound": self.bound,
            "target": self.target,
            "measured": self.measured,
            "measured_at_least": self.measured_at_least,
            "verdict": self.verdict,
            "reason": self.reason,
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
            data.get("reason"),
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


def _meets(value: float, bound: Literal["max", "min"], target: float) -> bool:
    return value <= target if bound == "max" else value >= target


def judge(
    objective: Objective, metrics: dict[str, Any], doubts: Sequence[Doubt] = ()
) -> JudgedObjective:
    """Objective paths are checked when the scenario loads; a path absent here was not
    measured (an interrupted run, a stack that never came up). A doubt on the figure makes
    it not measured, whatever it reads: neither its misses nor its passes can be trusted,
    unless every such doubt leaves the figure a lower bound and that is already a miss."""
    path, target = objective.path, objective.target
    bound: Literal["max", "min"] = "max" if objective.max is not None else "min"
    try:
        value = lookup(metrics, path)
    except UnknownMetric:
        value = None
    if isinstance(value, (dict, list, bool)):  # not a figure an objective can judge
        value = None
    at_least = (metrics.get(NOT_REACHED_KEY) or {}).get(path)
    touching = [d for d in doubts if d.touches_metric(path)]
    if touching:
        return _judged_in_doubt(path, bound, target, value, at_least, touching)
    if value is None:
        # ``at_least`` is a strict lower bound (still not back after that long, or a
        # client over the window): equal to the target is already over it.
        if at_least is not None and bound == "max" and at_least >= target:
            return JudgedObjective(path, bound, target, None, "missed", at_least)
        return JudgedObjective(path, bound, target, None, "not_measured", at_least)
    measured = float(value)
    span = (metrics.get(BOUNDS_KEY) or {}).get(path)
    if span is not None:
        low, high = (float(v) for v in span)
        if _meets(low, bound, target) != _meets(high, bound, target):
            return JudgedObjective(
                path,
                bound,
                target,
                measured,
                "not_measured",
                reason=f"evidence the run could not observe puts it between {low:g} and {high:g}",
            )
    verdict: ObjectiveVerdict = "met" if _meets(measured, bound, target) else "missed"
    return JudgedObjective(path, bound, target, measured, verdict)


def _judged_in_doubt(
    path: str,
    bound: Literal["max", "min"],
    target: float,
    value: float | None,
    at_least: float | None,
    touching: Sequence[Doubt],
) -> JudgedObjective:
    """Not measured, unless every doubt on the figure leaves it a lower bound of the truth
    and that bound is already over a ``max``: then the miss stands (a recovery the run saw
    take longer than allowed took at least that long, whatever the doubt hides)."""
    reason = touching[0].reason
    if bound == "max" and all(d.keeps_lower_bound(path) for d in touching):
        if value is not None and float(value) > target:
            return JudgedObjective(path, bound, target, None, "missed", float(value), reason)
        if value is None and at_least is not None and at_least >= target:
            return JudgedObjective(path, bound, target, None, "missed", at_least, reason)
    return JudgedObjective(path, bound, target, None, "not_measured", reason=reason)


def judge_all(
    objectives: Iterable[Objective], metrics: dict[str, Any], doubts: Sequence[Doubt] = ()
) -> list[JudgedObjective]:
    return [judge(o, metrics, doubts) for o in objectives]


def run_verdict(
    judged: Sequence[JudgedObjective],
    *,
    faults_confirmed: bool,
    stack_up: bool,
    complete: bool,
) -> Verdict:
    """fail if any objective was missed (doubts were applied by ``judge``: a miss here is on
    a figure no doubt touches); else inconclusive if nothing was judged, one was not
    measured, a fault was not confirmed, the stack did not come up or the run did not
    finish; else pass. A run judged on no objective gates nothing, so it never passes."""
    if any(j.verdict == "missed" for j in judged):
        return "fail"
    if (
        not judged
        or not (faults_confirmed and stack_up and complete)
        or any(j.verdict == "not_measured" for j in judged)
    ):
        return "inconclusive"
    return "pass"


def exit_code(verdicts: Iterable[Verdict], *, warn_only: bool = False) -> int:
    """1 if any run failed (0 with ``warn_only``), else 3 if any was inconclusive or a
    verdict is not one this version knows (or there is none), else 0."""
    verdicts = list(verdicts)
    if "fail" in verdicts:
        return EXIT_PASS if warn_only else EXIT_FAIL
    if not verdicts or any(v != "pass" for v in verdicts):
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
