"""Two or more runs side by side, from their result.json files, with ratios to the first."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from harness.objectives import UnknownMetric, lookup

COMPARED = (
    "failover_s",
    "rto_s",
    "db_failover_s",
    "reconnect.clients_broken",
    "reconnect.success_rate",
    "reconnect.time_to_reconnect_s.p50",
    "reconnect.time_to_reconnect_s.p99",
    "reconnect.all_reconnected_s",
    "reconnect.attempts.p99",
    "reconnect.initialize_per_s_peak",
    "tools_list_latency_ms.fault_window.p99",
    "tools_list_latency_ms.fault_window.p50",
    "tools_list_latency_ms.storm.p99",
    "tools_list_latency_ms.recovered.p99",
    "tools_list_latency_ms.all.p99",
    "requests.error_rate",
    "writes.lost",
    "server.sessions_open_peak",
    "generator.requests_per_s_mean",
    "generator.cpu_cores_mean",
)


def value_at(result: dict[str, Any], path: str) -> float | None:
    try:
        value = lookup(result.get("metrics", {}), path)
    except UnknownMetric:
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def comparison(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric: each run's value and its ratio to the first run's."""
    rows = []
    for path in COMPARED:
        values = [value_at(r, path) for r in results]
        base = values[0]
        ratios = [None if v is None or not base else v / base for v in values]
        rows.append({"metric": path, "values": values, "ratios": ratios})
    return rows


def render(
    results: list[dict[str, Any]], labels: list[str], console: Console | None = None
) -> None:
    console = console or Console()
    console.width = max(console.width, 40 + 22 * len(results))
    table = Table(title="comparison (ratio to the first run)")
    table.add_column("metric", no_wrap=True)
    for label in labels:
        table.add_column(label, justify="right", no_wrap=True)
    table.add_row("verdict", *(r.get("verdict", "?") for r in results))
    for row in comparison(results):
        cells = []
        for value, ratio in zip(row["values"], row["ratios"], strict=True):
            if value is None:
                cells.append("—")
            elif ratio is None or row["values"][0] is value:
                cells.append(f"{value:.4g}")
            else:
                cells.append(f"{value:.4g} (×{ratio:.2f})")
        table.add_row(row["metric"], *cells)
    console.print(table)
