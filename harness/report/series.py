"""A repeated run (``--repeat N``): one result per run, and the series judged on them.

``repeat.json`` holds each objective across the runs (every run's value and verdict,
min / median / max, the series verdict judged on the worst run, ``flaky`` when runs
disagree); ``junit.xml`` and ``summary.md`` of the series are rendered from it, so a CI
job reads one verdict with its spread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.objectives import SeriesObjective, Verdict
from harness.redaction import redact_data
from harness.report.junit import junit_xml
from harness.report.outputs import JUNIT_FILE, SUMMARY_FILE, write_atomically
from harness.report.result import SCHEMA_VERSION
from harness.report.summary import unit_of, with_unit
from harness.report.text import code, markdown, markup, plain_data

SERIES_FILE = "repeat.json"


def series_result(
    series_id: str,
    scenario: dict[str, Any],
    runs: list[tuple[Path, dict[str, Any]]],
    objectives: list[SeriesObjective],
    verdict: Verdict,
) -> dict[str, Any]:
    flaky = [o.metric for o in objectives if o.flaky]
    notes = [
        f"{o.metric} is flaky: met in {o.verdicts.count('met')} of {len(o.verdicts)} runs"
        for o in objectives
        if o.flaky
    ]
    notes += [f"{r['run_id']}: {r.get('verdict')}" for _, r in runs]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": series_id,
        "series": True,
        "repeat": len(runs),
        "scenario": scenario,
        "started_at": runs[0][1].get("started_at") if runs else None,
        "duration_s": sum(float(r.get("duration_s") or 0.0) for _, r in runs),
        "verdict": verdict,
        "runs": [
            {"run_id": r["run_id"], "dir": str(path), "verdict": r.get("verdict")}
            for path, r in runs
        ],
        "objectives": [o.as_dict() for o in objectives],
        "flaky": flaky,
        "faults": [],
        "metrics": {},
        "notes": notes,
        "doubts": [],
    }


def series_markdown(series: dict[str, Any]) -> str:
    """Everything from the runs is text, never markup (``harness.report.text.markdown``)."""
    series = plain_data(series)
    name = series["scenario"].get("name", "?")
    lines = [
        f"## {markdown(name)}: {series['repeat']} runs on one stack, "
        f"**{markdown(str(series['verdict']).upper())}**",
        "",
        "| objective | target | per run | min / median / max | verdict |",
        "|---|---|---|---|---|",
    ]
    for o in series["objectives"]:
        unit = unit_of(o["metric"])
        sign = "≤" if o["bound"] == "max" else "≥"
        per_run = ", ".join(with_unit(v, unit) for v in o["values"])
        spread = " / ".join(with_unit(o[k], unit) for k in ("min", "median", "max"))
        verdict = o["verdict"] + (" (flaky: " + o["met_in"] + ")" if o["flaky"] else "")
        cells = [
            code(o["metric"], cell=True),
            markdown(f"{sign} {with_unit(o['target'], unit)}", cell=True),
            markdown(per_run, cell=True),
            markdown(spread, cell=True),
            markdown(verdict, cell=True),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        *(
            f"- {markdown(r['run_id'])}: {markdown(r['verdict'])} ({markdown(r['dir'])})"
            for r in series["runs"]
        ),
    ]
    return "\n".join(lines) + "\n"


def write_series(series_dir: Path, series: dict[str, Any]) -> list[Path]:
    """repeat.json, junit.xml (the series verdict per objective, judged on the worst
    run) and summary.md into the series directory."""
    series_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_atomically(
            series_dir / SERIES_FILE, json.dumps(redact_data(series), indent=2, default=str)
        ),
        write_atomically(series_dir / JUNIT_FILE, junit_xml(series)),
        write_atomically(series_dir / SUMMARY_FILE, series_markdown(series)),
    ]


def render_series(series: dict[str, Any], console: Console) -> None:
    """Metric names and verdicts come from the runs: escaped, never Rich markup."""
    series = plain_data(series)
    console.width = max(console.width, 140)
    table = Table(title=f"{series['repeat']} runs on one stack")
    for column in ("objective", "target", "per run", "min / median / max", "verdict"):
        table.add_column(column, justify="left" if column == "objective" else "right")
    for o in series["objectives"]:
        unit = unit_of(o["metric"])
        verdict = markup(o["verdict"]) + (" [yellow](flaky)[/]" if o["flaky"] else "")
        table.add_row(
            markup(o["metric"]),
            markup(("≤ " if o["bound"] == "max" else "≥ ") + with_unit(o["target"], unit)),
            markup(", ".join(with_unit(v, unit) for v in o["values"])),
            markup(" / ".join(with_unit(o[k], unit) for k in ("min", "median", "max"))),
            verdict,
        )
    console.print(table)
    console.print(f"series verdict: {markup(str(series['verdict']).upper())}", highlight=False)
