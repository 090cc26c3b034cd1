"""drill.json, drill.md and drill.html: the drill rendered from drill.json alone.

Order: the declared targets, the record (size run, versions, host, commits), one table
of the scenarios (verdict, RTO and RPO target
against measured, a link to each scenario's report.html), per scenario its runbook and
restore steps with durations and outcomes, then the gaps. The HTML is self-contained and
shares the run report's CSS. What comes from the runs (scenario names, step details,
gaps) is text, never markup: redacted, control characters shown, escaped for Markdown
and HTML (``harness.report.text``); drill.json is redacted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness.redaction import redact_data
from harness.report.html import CSS, VERDICT_COLOR, _el
from harness.report.outputs import REPORT_FILE, write_atomically
from harness.report.summary import DASH, VERDICT_LABEL, number, with_unit
from harness.report.text import markdown, plain_data

DRILL_JSON = "drill.json"
DRILL_MD = "drill.md"
DRILL_HTML = "drill.html"
EXTRA_CSS = "tr.fail td.v { color: #cf222e; font-weight: 700; } tr.inconclusive td.v { color: #9a6700; font-weight: 700; } tr.pass td.v { color: #1a7f37; font-weight: 700; }"


def _seconds(value: Any) -> str:
    return with_unit(value, "s")


def rto_text(entry: dict[str, Any]) -> tuple[str, str]:
    rto = entry.get("rto") or {}
    return f"≤ {_seconds(rto.get('target_s'))}", _seconds(rto.get("measured_s"))


def rpo_text(entry: dict[str, Any]) -> tuple[str, str]:
    rpo = entry.get("rpo") or {}
    target = f"≤ {_seconds(rpo.get('target_s'))}, ≤ {number(rpo.get('target_rows'))} rows"
    rows = rpo.get("measured_rows")
    measured = (
        f"{_seconds(rpo.get('measured_s'))}, {number(rows)} rows"
        if rows is not None
        else _seconds(rpo.get("measured_s"))
    )
    return target, measured


def targets_text(targets: dict[str, Any]) -> str:
    return (
        f"RTO ≤ {_seconds(targets.get('rto_s'))}; RPO ≤ {_seconds(targets.get('rpo_s'))} "
        f"and ≤ {number(targets.get('rpo_rows'))} rows lost or altered"
    )


def report_link(entry: dict[str, Any]) -> str:
    """A relative link: percent-encoded, so a ``:`` can never make it ``javascript:``."""
    return quote(f"{entry.get('dir', entry.get('name'))}/{REPORT_FILE}", safe="/")


SIZE_TEXT = {
    "reduced": "reduced (each scenario's set: keys applied; --full runs it at full size)",
    "full": "full (each scenario's full: keys applied)",
    "as_written": "as written (--scenarios: no keys changed)",
}


def record_facts(drill: dict[str, Any]) -> list[tuple[str, str]]:
    """What the drill's record states beside its figures: the size it ran at, the versions
    of every part, the host and the commits (audit evidence)."""
    env = drill.get("environment") or {}
    machine = env.get("machine") or {}
    commits = env.get("commits") or {}
    size = str(drill.get("size") or "reduced")
    facts = [
        ("size", SIZE_TEXT.get(size, size)),
        ("host", f"{machine.get('host', DASH)} ({machine.get('platform', DASH)}, "
                 f"{machine.get('cpus', DASH)} CPUs, {machine.get('memory_gib', DASH)} GiB)"),
        ("mcp-harness", f"{env.get('harness', DASH)}, commit {commits.get('harness') or 'none (not a checkout)'}"),
        ("working directory commit", str(commits.get("working_directory") or "none (not a checkout)")),
    ]  # fmt: skip
    for key, name in (
        ("postgres", "PostgreSQL"),
        ("toxiproxy", "Toxiproxy"),
        ("mcp_sdk", "MCP SDK"),
        ("locust", "Locust"),
        ("asyncpg", "asyncpg"),
        ("python", "Python"),
    ):
        facts.append((name, str(env.get(key) or DASH)))
    return facts


def ran_text(entry: dict[str, Any]) -> str:
    """The load a scenario ran with, and the keys the drill changed to get it."""
    ran = entry.get("ran") or {}
    text = f"{number(ran.get('users'))} users for {_seconds(ran.get('run_time_s'))}"
    overrides = entry.get("overrides") or {}
    if overrides:
        text += "; the drill set " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    return text


def _md_cell(text: Any) -> str:
    return markdown(text, cell=True)


def _md(text: Any) -> str:
    return markdown(text)


def drill_markdown(drill: dict[str, Any]) -> str:
    drill = plain_data(drill)
    verdict = str(drill.get("verdict", "inconclusive"))
    lines = [
        f"# Drill {_md(drill.get('drill_id'))}: {_md(VERDICT_LABEL.get(verdict, verdict.upper()))}",
        "",
        f"Declared targets: {_md(targets_text(drill.get('targets') or {}))}.",
        f"Started {_md(drill.get('started_at'))}, took {_md(_seconds(drill.get('duration_s')))}.",
        "",
        "| record | |",
        "|---|---|",
        *(f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in record_facts(drill)),
        "",
        "| scenario | verdict | RTO target | RTO measured | RPO target | RPO measured | report |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in drill.get("scenarios") or []:
        rto_t, rto_m = rto_text(entry)
        rpo_t, rpo_m = rpo_text(entry)
        v = str(entry.get("verdict"))
        cells = [entry.get("name"), VERDICT_LABEL.get(v, v), rto_t, rto_m, rpo_t, rpo_m]
        lines.append(
            "| "
            + " | ".join(_md_cell(c) for c in cells)
            + f" | [report.html]({report_link(entry)}) |"
        )
    for entry in drill.get("scenarios") or []:
        lines += ["", f"## {_md(entry.get('name'))}", "", f"Ran: {_md(ran_text(entry))}."]
        steps = entry.get("runbook_steps") or []
        if steps:
            lines += [
                "",
                "Runbook steps:",
                "",
                "| execution | step | outcome | start | duration | detail |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                "| "
                + " | ".join(
                    _md_cell(c)
                    for c in (
                        s.get("execution"),
                        s.get("name"),
                        s.get("outcome"),
                        _seconds(s.get("start_s")),
                        _seconds(s.get("duration_s")),
                        s.get("detail") or "",
                    )
                )
                + " |"
                for s in steps
            ]
        restore = entry.get("restore_steps") or []
        if restore:
            lines += [
                "",
                f"Restore steps (total {_md(_seconds(entry.get('restore_total_s')))}):",
                "",
                "| step | duration |",
                "|---|---|",
            ]
            lines += [
                f"| {_md_cell(s.get('name'))} | {_md_cell(_seconds(s.get('duration_s')))} |"
                for s in restore
            ]
        if not steps and not restore:
            lines += ["", "No runbook or restore steps in this scenario."]
    lines += ["", "## Gaps", ""]
    gaps = drill.get("gaps") or []
    if not gaps:
        lines.append("None: every objective met, every step healthy or fixed, every target kept.")
    lines += [
        f"- **{_md(g.get('scenario'))}**: {_md(g.get('what'))}: {_md(g.get('detail'))}"
        for g in gaps
    ]
    return "\n".join(lines) + "\n"


def _rows(
    head: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] | None = None
) -> str:
    out = "<table><tr>" + "".join(_el("th", h) for h in head) + "</tr>"
    for i, row in enumerate(rows):
        cls = f' class="{escape(classes[i])}"' if classes else ""
        out += f"<tr{cls}>" + "".join(row) + "</tr>"
    return out + "</table>"


def drill_html(drill: dict[str, Any]) -> str:
    drill = plain_data(drill)
    verdict = str(drill.get("verdict", "inconclusive"))
    label = VERDICT_LABEL.get(verdict, verdict.upper())
    facts = [
        ("drill", drill.get("drill_id")),
        ("started", drill.get("started_at")),
        ("duration", _seconds(drill.get("duration_s"))),
        ("exit code", drill.get("exit_code")),
    ]
    dl = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(str(v))}</dd></div>" for k, v in facts)
    body = [
        f'<header style="background:{VERDICT_COLOR.get(verdict, "#57606a")}">'
        f'<div class="verdict">{escape(label)}</div><div>{_el("h1", "Disaster-recovery drill")}'
        f"{_el('p', 'Declared targets: ' + targets_text(drill.get('targets') or {}))}<dl>{dl}</dl></div></header>"
    ]
    rows, classes = [], []
    for entry in drill.get("scenarios") or []:
        rto_t, rto_m = rto_text(entry)
        rpo_t, rpo_m = rpo_text(entry)
        v = str(entry.get("verdict"))
        classes.append(v)
        link = f'<td><a href="{escape(report_link(entry))}">report.html</a></td>'
        rows.append(
            (
                _el("td", str(entry.get("name"))),
                _el("td", VERDICT_LABEL.get(v, v), class_="v"),
                _el("td", rto_t, class_="num"),
                _el("td", rto_m, class_="num"),
                _el("td", rpo_t, class_="num"),
                _el("td", rpo_m, class_="num"),
                link,
            )
        )
    body.append(
        '<section id="record"><h2>Record</h2>'
        + _rows(("what", "value"), [(_el("td", k), _el("td", v)) for k, v in record_facts(drill)])
        + "</section>"
    )
    body.append(
        '<section id="scenarios"><h2>Scenarios: targets against measured</h2>'
        + _rows(
            (
                "scenario",
                "verdict",
                "RTO target",
                "RTO measured",
                "RPO target",
                "RPO measured",
                "report",
            ),
            rows,
            classes,
        )
        + "</section>"
    )
    for entry in drill.get("scenarios") or []:
        out = (
            f'<section class="scenario" id="{escape("s-" + str(entry.get("name")))}">'
            + _el("h2", str(entry.get("name")))
            + _el("p", "Ran: " + ran_text(entry) + ".")
        )
        steps = entry.get("runbook_steps") or []
        if steps:
            out += "<h3>Runbook steps</h3>" + _rows(
                ("execution", "step", "outcome", "start", "duration", "detail"),
                [
                    (
                        _el("td", str(s.get("execution"))),
                        _el("td", str(s.get("name"))),
                        _el("td", str(s.get("outcome")), class_="v"),
                        _el("td", _seconds(s.get("start_s")), class_="num"),
                        _el("td", _seconds(s.get("duration_s")), class_="num"),
                        _el("td", str(s.get("detail") or "")),
                    )
                    for s in steps
                ],
                ["met" if s.get("outcome") in ("healthy", "fixed") else "missed" for s in steps],
            )
        restore = entry.get("restore_steps") or []
        if restore:
            out += _el(
                "h3", f"Restore steps (total {_seconds(entry.get('restore_total_s'))})"
            ) + _rows(
                ("step", "duration"),
                [
                    (
                        _el("td", str(s.get("name"))),
                        _el("td", _seconds(s.get("duration_s")), class_="num"),
                    )
                    for s in restore
                ],
            )
        if not steps and not restore:
            out += _el("p", "No runbook or restore steps in this scenario.", class_="muted")
        body.append(out + "</section>")
    gaps = drill.get("gaps") or []
    gap_html = (
        _rows(
            ("scenario", "what", "detail"),
            [
                (
                    _el("td", str(g.get("scenario"))),
                    _el("td", str(g.get("what"))),
                    _el("td", str(g.get("detail"))),
                )
                for g in gaps
            ],
            ["missed"] * len(gaps),
        )
        if gaps
        else _el(
            "p",
            "None: every objective met, every step healthy or fixed, every target kept.",
            class_="muted",
        )
    )
    body.append('<section id="gaps"><h2>Gaps</h2>' + gap_html + "</section>")
    body.append(
        _el(
            "footer",
            f"Rendered from drill.json (schema_version {drill.get('schema_version', DASH)}) by mcp-harness.",
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(f'{label} · drill · mcp-harness')}</title>"
        f"<style>{CSS}{EXTRA_CSS}</style></head><body><main>"
        + "\n".join(body)
        + "</main></body></html>\n"
    )


def write_drill(drill_dir: Path, drill: dict[str, Any]) -> list[Path]:
    """drill.json, drill.md and drill.html in the drill's directory; their paths."""
    drill_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_atomically(drill_dir / DRILL_JSON, json.dumps(redact_data(drill), indent=1) + "\n"),
        write_atomically(drill_dir / DRILL_MD, drill_markdown(drill)),
        write_atomically(drill_dir / DRILL_HTML, drill_html(drill)),
    ]
