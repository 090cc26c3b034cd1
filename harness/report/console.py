"""The verdict table printed at the end of a run, rendered from result.json.

Every string from the run (scenario name, fault kinds and targets, notes, metric names,
verdicts) is data: redacted, its control characters shown as escapes (no ANSI or OSC
sequence reaches the terminal) and its Rich markup escaped (``[/bold]`` in a name must
neither style the output nor raise ``MarkupError`` after result.json was written)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from harness.catalog import unit_suffix
from harness.report.text import markup, output_console, plain_data

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "inconclusive": "bold yellow"}
OBJECTIVE_STYLE = {"met": "green", "missed": "red", "not_measured": "yellow"}


def _fmt(value: Any, unit: str = "") -> str:
    """A value as Rich markup: a number formatted, anything else escaped."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}{unit}" if abs(value) < 1000 else f"{value:,.0f}{unit}"
    return markup(f"{value}{unit}")


def _styled(text: Any, style: str) -> str:
    """Escaped text in a style (no style: plain; ``[]...[/]`` would not parse)."""
    return f"[{style}]{markup(text)}[/]" if style else markup(text)


def render(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or output_console()
    result = plain_data(result)
    metrics = result.get("metrics") or {}
    verdict = str(result.get("verdict", "inconclusive"))
    console.rule(
        f"{_styled((result.get('scenario') or {}).get('name', '?'), 'bold')} "
        f"· run {markup(result.get('run_id'))}"
    )
    for fault in result.get("faults") or []:
        state = "confirmed" if fault.get("confirmed") else "[red]NOT confirmed[/]"
        console.print(
            f"fault {markup(fault.get('kind'))} on {markup(fault.get('target'))} "
            f"at {_fmt(fault.get('t_fault_s'), ' s')}: {state}",
            highlight=False,
        )
    for note in result.get("notes") or []:
        console.print(f"[yellow]note:[/] {markup(note)}", highlight=False)

    table = Table(title="Measurements", show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("db_failover_s", _fmt(metrics.get("db_failover_s"), " s"))
    table.add_row("failover_s", _fmt(metrics.get("failover_s"), " s"))
    table.add_row("rto_s", _fmt(metrics.get("rto_s"), " s"))
    writes = metrics.get("writes") or {}
    table.add_row(
        "writes acknowledged / intact / lost",
        f"{_fmt(writes.get('acknowledged'))} / {_fmt(writes.get('intact'))} / {_fmt(writes.get('lost'))}",
    )
    table.add_row(
        "rpo_rows / rpo_s", f"{_fmt(writes.get('rpo_rows'))} / {_fmt(writes.get('rpo_s'), ' s')}"
    )
    if writes.get("altered") or writes.get("phantom"):
        table.add_row(
            "writes altered / phantom",
            f"{_fmt(writes.get('altered'))} / {_fmt(writes.get('phantom'))}",
        )
    _integrity_rows(table, metrics)
    reconnect = metrics.get("reconnect") or {}
    table.add_row(
        "reconnect (broken -> back)",
        f"{_fmt(reconnect.get('clients_broken'))} -> {_fmt(reconnect.get('clients_reconnected'))}",
    )
    requests = metrics.get("requests") or {}
    table.add_row(
        "requests / errors", f"{_fmt(requests.get('total'))} / {_fmt(requests.get('errors'))}"
    )
    for phase, figures in (metrics.get("tools_list_latency_ms") or {}).items():
        if phase == "all" or not isinstance(figures, dict):
            continue
        table.add_row(
            f"tools/list {markup(phase)} p50 / p99",
            f"{_fmt(figures.get('p50'), ' ms')} / {_fmt(figures.get('p99'), ' ms')}  (n={_fmt(figures.get('count'))})",
        )
    console.print(table)

    objectives = result.get("objectives") or []
    if objectives:
        judged = Table(title="Objectives")
        for column in ("metric", "target", "measured", "verdict"):
            judged.add_column(column, justify="right" if column != "metric" else "left")
        for item in objectives:
            metric = str(item.get("metric", "?"))
            unit = unit_suffix(metric)
            sign = "≤" if item.get("bound") == "max" else "≥"
            style = OBJECTIVE_STYLE.get(str(item.get("verdict")), "")
            judged.add_row(
                markup(metric),
                f"{sign} {_fmt(item.get('target'), unit)}",
                _fmt(item.get("measured"), unit)
                if item.get("measured_at_least") is None
                else f"> {_fmt(item['measured_at_least'], unit)}",
                _styled(item.get("verdict"), style),
            )
        console.print(judged)
    duration = result.get("duration_s")
    took = f"{duration:.0f} s" if isinstance(duration, (int, float)) else "—"
    console.print(
        f"verdict: {_styled(verdict.upper(), VERDICT_STYLE.get(verdict, ''))}  ({took})",
        highlight=False,
    )


def _integrity_rows(table: Table, metrics: dict[str, Any]) -> None:
    """Detection, the integrity checks before and after, and each restore step."""
    integrity = metrics.get("integrity")
    if integrity:
        table.add_row("time_to_detect_s", _fmt(metrics.get("time_to_detect_s"), " s"))
        before, after = integrity.get("before") or {}, integrity.get("after") or {}
        table.add_row(
            "integrity violations before / after",
            f"{_fmt(before.get('violations'))} / {_fmt(after.get('violations'))}",
        )
    restore = metrics.get("restore")
    if not restore:
        return
    target = restore.get("target") or {}
    table.add_row("restore target", markup(f"{target.get('kind')} {target.get('value')}"))
    for step, seconds in (restore.get("steps") or {}).items():
        table.add_row(f"  restore {markup(step.removesuffix('_s'))}", _fmt(seconds, " s"))
    table.add_row("restore total_s", _fmt(restore.get("total_s"), " s"))
