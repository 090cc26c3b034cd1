"""Latency histograms (HDR): exact enough percentiles at any volume, in bounded memory."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: anything slower is clamped, never dropped
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99_9": 99.9}


class LatencySummary(TypedDict):
    """One histogram in result.json: percentiles and max in ms (None when empty), the count."""

    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    p99_9: float | None
    max: float | None
    count: int


class LatencyHistogram:
    """Milliseconds in, percentiles out; recorded in microseconds with 3 significant digits."""

    def __init__(self) -> None:
        self._hdr = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record_ms(self, latency_ms: float) -> None:
        micros = min(max(int(round(latency_ms * 1000.0)), LOWEST_US), HIGHEST_US)
        self._hdr.record_value(micros)

    def record_corrected_ms(self, latency_ms: float, expected_interval_ms: float) -> None:
        """Record a reply, plus the replies a closed-loop client would have had if it had
        not been stuck waiting on this one (HdrHistogram's expected-interval correction for
        coordinated omission): ``latency - k * interval`` for every k while above the interval."""
        micros = min(max(int(round(latency_ms * 1000.0)), LOWEST_US), HIGHEST_US)
        self._hdr.record_corrected_value(micros, max(1, int(round(expected_interval_ms * 1000.0))))

    @property
    def count(self) -> int:
        return int(self._hdr.get_total_count())

    def percentile_ms(self, percentile: float) -> float | None:
        if self.count == 0:
            return None
        return self._hdr.get_value_at_percentile(percentile) / 1000.0

    def summary(self) -> LatencySummary:
        """p50/p90/p95/p99/p99.9/max in ms and the count; percentiles are None when empty."""
        return {
            "p50": self.percentile_ms(PERCENTILES["p50"]),
            "p90": self.percentile_ms(PERCENTILES["p90"]),
            "p95": self.percentile_ms(PERCENTILES["p95"]),
            "p99": self.percentile_ms(PERCENTILES["p99"]),
            "p99_9": self.percentile_ms(PERCENTILES["p99_9"]),
            "max": self._hdr.get_max_value() / 1000.0 if self.count else None,
            "count": self.count,
        }

    @classmethod
    def of(cls, samples_ms: Iterable[float]) -> LatencyHistogram:
        histogram = cls()
        for sample in samples_ms:
            histogram.record_ms(sample)
        return histogram
