"""Runs side by side, from their result.json files: a trend table for nightly history
and a before/after of a change. Each figure is shown with its ratio to a baseline run
(the first unless named), and a figure that got worse by more than the tolerance is a
regression."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from harness.catalog import KEY_FIGURES, Worse, metric
from harness.objectives import UnknownMetric, lookup
from harness.report.text import code, markdown, markup, output_console

Direction = Literal["lower", "higher", "neutral"]
"""Which way is better (neutral: no regression either way)."""

COMPARED: tuple[str, ...] = KEY_FIGURES
"""The figures a comparison shows; which way is better comes from the catalog."""

BETTER: dict[Worse, Direction] = {"higher": "lower", "lower": "higher", "neither": "neutral"}


def direction(path: str) -> Direction:
    found = metric(path)
    return "neutral" if found is None else BETTER[found.worse]


DEFAULT_TOLERANCE = 0.10


@dataclass(frozen=True)
class Row:
    metric: str
    direction: Direction
    values: list[float | None]
    ratios: list[float | None]
    regressed: list[bool]

    @property
    def unit(self) -> str:
        """The catalog's unit (``s``, ``ms``, ``fraction``, ...); empty when not in it."""
        found = metric(self.metric)
        return "" if found is None else found.unit


def value_at(result: dict[str, Any], path: str) -> float | None:
    try:
        value = lookup(result.get("metrics", {}), path)
    except UnknownMetric:
        value = _series_value(result, path)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None  # NaN / inf: not a measurement


def _series_value(result: dict[str, Any], path: str) -> Any:
    """A repeated run (repeat.json) has no metrics: its objectives carry the worst run."""
    return next(
        (o.get("measured") for o in result.get("objectives", []) if o.get("metric") == path),
        None,
    )


def parse_tolerance(text: str) -> float:
    """``--tolerance``: a percentage (``10%``) or a fraction (``0.1``), finite and >= 0
    (NaN compares false with everything and inf forgives everything: with either, a 10x
    regression would not be flagged)."""
    value = text.strip()
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(
            f"--tolerance {text!r}: expected a percentage like 10% or a fraction like 0.1"
        ) from None
    if not math.isfinite(number):
        raise ValueError(f"--tolerance {text!r}: expected a finite number")
    if number < 0:
        raise ValueError(f"--tolerance {text!r}: must not be negative")
    return number


def regressed(
    value: float | None, base: float | None, direction: Direction, tolerance: float
) -> bool:
    """Worse than the baseline by more than ``tolerance`` (relative); from a zero baseline,
    any change the wrong way (0 lost writes -> 1 is a regression)."""
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance {tolerance!r}: expected a finite fraction >= 0")
    if value is None or base is None or direction == "neutral":
        return False
    worse = value - base if direction == "lower" else base - value
    if base == 0:
        return worse > 0
    return worse / abs(base) > tolerance


def compared_metrics(results: list[dict[str, Any]]) -> list[tuple[str, Direction]]:
    """The standard figures, then every objective's metric the runs were judged on."""
    rows = [(path, direction(path)) for path in COMPARED]
    known = set(COMPARED)
    for result in results:
        for objective in result.get("objectives", []):
            path = objective.get("metric")
            if path and path not in known:
                known.add(path)
                rows.append((path, "lower" if objective.get("bound") == "max" else "higher"))
    return rows


def comparison(
    results: list[dict[str, Any]], baseline: int = 0, tolerance: float = DEFAULT_TOLERANCE
) -> list[Row]:
    """One row per figure: each run's value, its ratio to the baseline run's, regressions."""
    rows = []
    for path, better in compared_metrics(results):
        values = [value_at(r, path) for r in results]
        base = values[baseline]
        rows.append(
            Row(
                path,
                better,
                values,
                [None if v is None or not base else v / base for v in values],
                [regressed(v, base, better, tolerance) for v in values],
            )
        )
    return rows


def verdict_regressions(results: list[dict[str, Any]], baseline: int = 0) -> list[int]:
    """Runs whose verdict is worse than the baseline's (pass -> inconclusive -> fail)."""
    rank = {"pass": 0, "inconclusive": 1, "fail": 2}
    base = rank.get(results[baseline].get("verdict", ""), 1)
    return [i for i, r in enumerate(results) if rank.get(r.get("verdict", ""), 1) > base]


def figure_cell(value: float | None, ratio: float | None, *, baseline: bool) -> str:
    """One run's figure in a comparison: the value, and its ratio to the baseline's when
    there is one (none for the baseline itself, or when the baseline's value is 0)."""
    if value is None:
        return "—"
    if ratio is None or baseline:
        return f"{value:.4g}"
    return f"{value:.4g} (×{ratio:.2f})"


def comparison_document(
    results: list[dict[str, Any]],
    labels: list[str],
    *,
    baseline: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """The comparison as data (``compare --format json``, and what the table and the
    Markdown show): each run's label and verdict, and each figure with its unit, which way
    is better, values, ratios to the baseline and regressions; figures no run has are left
    out. ``regressions`` counts worse verdicts and regressed figures."""
    worse_verdicts = verdict_regressions(results, baseline)
    rows = [
        r for r in comparison(results, baseline, tolerance) if any(v is not None for v in r.values)
    ]
    return {
        "baseline": labels[baseline],
        "tolerance": tolerance,
        "runs": [
            {
                "label": label,
                "run_id": result.get("run_id"),
                "verdict": result.get("verdict"),
                "verdict_regressed": index in worse_verdicts,
            }
            for index, (label, result) in enumerate(zip(labels, results, strict=True))
        ],
        "metrics": [
            {
                "metric": row.metric,
                "unit": row.unit,
                "better": row.direction,
                "values": row.values,
                "ratios": row.ratios,
                "regressed": row.regressed,
            }
            for row in rows
        ],
        "regressions": len(worse_verdicts) + sum(sum(row.regressed) for row in rows),
    }


def _cells(document: dict[str, Any], row: dict[str, Any]) -> list[tuple[str, bool]]:
    """(text, regressed) of each run's figure in ``row``."""
    return [
        (figure_cell(value, ratio, baseline=run["label"] == document["baseline"]), bad)
        for run, value, ratio, bad in zip(
            document["runs"], row["values"], row["ratios"], row["regressed"], strict=True
        )
    ]


def render(
    results: list[dict[str, Any]],
    labels: list[str],
    console: Console | None = None,
    *,
    baseline: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
) -> int:
    """Print the trend table; the number of regressions flagged (figures and verdicts).
    Labels, verdicts and metric names come from the files: escaped, never Rich markup."""
    console = console or output_console()
    console.width = max(console.width, 54 + 24 * len(results))
    document = comparison_document(results, labels, baseline=baseline, tolerance=tolerance)
    base = markup(document["baseline"])
    table = Table(
        title=f"comparison: ratio to {base}; [red]▲[/] worse by more than "
        f"{tolerance:.0%} (a regression)"
    )
    table.add_column("metric", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    for run in document["runs"]:
        shown = markup(run["label"]) + (
            " (baseline)" if run["label"] == document["baseline"] else ""
        )
        table.add_column(shown, justify="right", no_wrap=True)

    def flagged(text: str, bad: bool) -> str:
        return f"[red]{text} ▲[/]" if bad else text

    table.add_row(
        "verdict",
        "",
        *(flagged(markup(r["verdict"] or "?"), r["verdict_regressed"]) for r in document["runs"]),
    )
    for row in document["metrics"]:
        cells = [flagged(text, bad) for text, bad in _cells(document, row)]
        table.add_row(markup(row["metric"]), row["unit"], *cells)
    console.print(table)
    console.print(f"regressions against {base}: {document['regressions']}", highlight=False)
    return int(document["regressions"])


def comparison_markdown(document: dict[str, Any]) -> str:
    """The comparison as a Markdown table (``compare --format markdown``, for a job summary
    or a pull request): value, ratio to the baseline, and ▲ on a regression. Labels,
    verdicts and metric names come from the files: escaped for a table cell."""
    runs = document["runs"]
    baseline = document["baseline"]

    def flagged(text: str, bad: bool) -> str:
        return f"{text} ▲" if bad else text

    header = ["metric", "unit"] + [
        markdown(r["label"], cell=True) + (" (baseline)" if r["label"] == baseline else "")
        for r in runs
    ]
    lines = [
        f"Ratio to {markdown(baseline)}; ▲ worse by more than {document['tolerance']:.0%} "
        "(a regression).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * 2 + "---:|" * len(runs),
        "| verdict | | "
        + " | ".join(
            flagged(markdown(r["verdict"] or "?", cell=True), r["verdict_regressed"]) for r in runs
        )
        + " |",
    ]
    for row in document["metrics"]:
        cells = [flagged(text, bad) for text, bad in _cells(document, row)]
        lines.append(
            f"| {code(row['metric'], cell=True)} | {row['unit']} | " + " | ".join(cells) + " |"
        )
    lines += ["", f"Regressions against {markdown(baseline)}: {document['regressions']}."]
    return "\n".join(lines) + "\n"
