"""The verdict table printed at the end of a run, rendered from result.json."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "inconclusive": "bold yellow"}
OBJECTIVE_STYLE = {"met": "green", "missed": "red", "not_measured": "yellow"}


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}{unit}" if abs(value) < 1000 else f"{value:,.0f}{unit}"
    return f"{value}{unit}"


def _unit(path: str) -> str:
    if "_ms" in path:
        return " ms"
    if path.endswith("_s") or "_s." in path:
        return " s"
    if path.endswith("rate"):
        return ""
    return ""


def render(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    metrics = result.get("metrics", {})
    verdict = result.get("verdict", "inconclusive")
    console.rule(
        f"[bold]{result.get('scenario', {}).get('name', '?')}[/] · run {result.get('run_id')}"
    )
    for fault in result.get("faults", []):
        state = "confirmed" if fault.get("confirmed") else "[red]NOT confirmed[/]"
        console.print(
            f"fault {fault['kind']} on {fault['target']} at {_fmt(fault.get('t_fault_s'), ' s')}: {state}"
        )
    for note in result.get("notes", []):
        console.print(f"[yellow]note:[/] {escape(note)}")

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
        if phase == "all":
            continue
        table.add_row(
            f"tools/list {phase} p50 / p99",
            f"{_fmt(figures.get('p50'), ' ms')} / {_fmt(figures.get('p99'), ' ms')}  (n={figures.get('count')})",
        )
    console.print(table)

    objectives = result.get("objectives", [])
    if objectives:
        judged = Table(title="Objectives")
        for column in ("metric", "target", "measured", "verdict"):
            judged.add_column(column, justify="right" if column != "metric" else "left")
        for item in objectives:
            unit = _unit(item["metric"])
            sign = "≤" if item["bound"] == "max" else "≥"
            style = OBJECTIVE_STYLE.get(item["verdict"], "")
            judged.add_row(
                item["metric"],
                f"{sign} {_fmt(item['target'], unit)}",
                _fmt(item["measured"], unit)
                if item.get("measured_at_least") is None
                else f"> {_fmt(item['measured_at_least'], unit)}",
                f"[{style}]{item['verdict']}[/]",
            )
        console.print(judged)
    console.print(
        f"verdict: [{VERDICT_STYLE.get(verdict, '')}]{verdict.upper()}[/]  ({result.get('duration_s', 0):.0f} s)"
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
    table.add_row("restore target", f"{target.get('kind')} {target.get('value')}")
    for step, seconds in (restore.get("steps") or {}).items():
        table.add_row(f"  restore {step.removesuffix('_s')}", _fmt(seconds, " s"))
    table.add_row("restore total_s", _fmt(restore.get("total_s"), " s"))
