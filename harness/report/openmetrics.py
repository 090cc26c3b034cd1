"""``metrics.prom``: the run's key figures in the OpenMetrics text format, for a
node_exporter textfile collector or a Pushgateway (as k6 users get with ``--out``).

Names are ``mcp_harness_`` + the figure's path in result.json with dots as underscores,
in base units as Prometheus prefers them (milliseconds become ``_seconds``, fractions
``_ratio``); every sample carries the scenario's name. Beside the figures: the verdict
and each objective's verdict as 0/1 gauges with the outcome as a label. Rendered by
``prometheus_client``, so names, labels and escaping follow the format.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from harness.catalog import Unit, metric
from harness.report.compare import compared_metrics, value_at
from harness.report.text import plain_data

PREFIX = "mcp_harness_"
VERDICTS = ("pass", "fail", "inconclusive")
OBJECTIVE_VERDICTS = ("met", "missed", "not_measured")
BASE_UNIT: dict[Unit, tuple[str, float]] = {
    "s": ("_seconds", 1.0),
    "ms": ("_seconds", 0.001),
    "fraction": ("_ratio", 1.0),
    "count": ("", 1.0),
    "per_s": ("_per_second", 1.0),
    "bytes": ("_bytes", 1.0),
    "cores": ("_cores", 1.0),
}


def metric_name(path: str) -> tuple[str, float]:
    """(the exposition name of a result.json path, the factor to its base unit)."""
    found = metric(path)
    unit = found.unit if found else "count"
    suffix, factor = BASE_UNIT[unit]
    stem = path.replace(".", "_")
    written_unit = {"s": r"_(s|ms)", "ms": r"_(s|ms)", "per_s": r"_per_s"}.get(unit)
    if written_unit:
        stem = re.sub(written_unit + r"(?=_|$)", "", stem)
    return PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", stem) + suffix, factor


class _RunCollector(Collector):
    def __init__(self, result: dict[str, Any]) -> None:
        self.result = result
        self.scenario = str((result.get("scenario") or {}).get("name", ""))

    def collect(self) -> Iterator[Metric]:
        labels = ["scenario"]
        verdict = GaugeMetricFamily(
            PREFIX + "verdict", "The run's verdict (1 on the label that holds)",
            labels=[*labels, "verdict"],
        )  # fmt: skip
        for name in VERDICTS:
            verdict.add_metric([self.scenario, name], float(self.result.get("verdict") == name))
        yield verdict
        started = _timestamp(self.result.get("started_at"))
        if started is not None:
            family = GaugeMetricFamily(
                PREFIX + "run_started_seconds", "When the run started (Unix time)", labels=labels
            )
            family.add_metric([self.scenario], started)
            yield family
        objectives = GaugeMetricFamily(
            PREFIX + "objective",
            "Each objective's outcome (1 on the label that holds)",
            labels=[*labels, "metric", "verdict"],
        )
        for objective in self.result.get("objectives") or []:
            for name in OBJECTIVE_VERDICTS:
                labels_of = [self.scenario, str(objective.get("metric")), name]
                objectives.add_metric(labels_of, float(objective.get("verdict") == name))
        yield objectives
        yield from self._figures()

    def _figures(self) -> Iterator[Metric]:
        seen = set()
        for path, _ in compared_metrics([self.result]):
            value = value_at(self.result, path)
            name, factor = metric_name(path)
            if value is None or name in seen:
                continue
            seen.add(name)
            found = metric(path)
            family = GaugeMetricFamily(
                name, found.description if found else path, labels=["scenario"]
            )
            family.add_metric([self.scenario], value * factor)
            yield family


def _timestamp(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def openmetrics_text(result: dict[str, Any]) -> str:
    """The exposition of one run (ends with ``# EOF``). Every string from the run is
    redacted and its control characters shown as escapes, as in every other output."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RunCollector(plain_data(result)))
    return generate_latest(registry).decode()
