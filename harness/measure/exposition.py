"""The servers' /metrics, read with the ``prometheus-client`` library's parser: one
reading of the Prometheus text format for the resource sampler and the runbook.

A malformed exposition raises ``ExpositionError`` rather than yielding the lines that
did parse: a counter read from half a page would make a rate out of nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
"""A Prometheus series: its name and its labels, sorted."""


class ExpositionError(ValueError):
    """Text that is not a Prometheus exposition; the message says where it broke."""


def parse_metrics(text: str) -> dict[SeriesKey, float]:
    """Every sample of a Prometheus text exposition, by series (a sample's timestamp is
    ignored)."""
    series: dict[SeriesKey, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                series[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    except ValueError as exc:
        raise ExpositionError(f"not a Prometheus text exposition: {exc}") from None
    return series


def counter_increase(
    before: Mapping[SeriesKey, float], after: Mapping[SeriesKey, float]
) -> dict[SeriesKey, float]:
    """How much each series of ``after`` grew since ``before``, as a counter: a series
    that went down was reset (its process restarted) and counts whole, a new one counts
    from 0. Meaningful for counters only; pick them from the result."""
    increase: dict[SeriesKey, float] = {}
    for key, value in after.items():
        previous = before.get(key, 0.0)
        increase[key] = value - previous if value >= previous else value
    return increase


def total(series: Mapping[SeriesKey, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s series whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and wanted <= set(ls))
