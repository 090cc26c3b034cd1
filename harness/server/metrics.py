"""Prometheus text metrics of the reference server.

Pure bookkeeping with no SDK or database imports, so it can be unit tested and
so that scraping never waits on anything but this process's memory. Label
values are normalised against fixed vocabularies: a client sending made-up
method or tool names must not grow the number of series without bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Latency bucket bounds in seconds: 1 ms (tools/list from memory) to 10 s (the
database timeouts of a tool call add up to about that)."""

OTHER_METHOD = "other"
"""Label for a JSON-RPC method outside the known vocabulary."""

UNKNOWN_TOOL = "unknown"
"""Label for a tools/call naming a tool the server does not have."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of the Prometheus text exposition format."""

REQUESTS = "mcp_requests_total"
ERRORS = "mcp_request_errors_total"
DURATION = "mcp_request_duration_seconds"
HTTP_RESPONSES = "mcp_http_responses_total"


def escape_label_value(value: str) -> str:
    """Escape a label value as the text format requires (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """Format a sample value; integers without a fraction, infinities as +Inf/-Inf."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def format_labels(labels: Mapping[str, str]) -> str:
    """Render `{k="v",...}` in the given order, or nothing for no labels."""
    if not labels:
        return ""
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def tool_name_of(method: str, params: Mapping[str, Any] | None) -> str:
    """The raw tool name of a tools/call request, or "" for any other method."""
    if method != "tools/call" or not params:
        return ""
    name = params.get("name")
    return name if isinstance(name, str) else ""


def result_is_error(result: object) -> bool:
    """True for a tool result flagged `isError` (a tool that raised still answers 200)."""
    if isinstance(result, Mapping):
        return result.get("isError") is True
    return getattr(result, "is_error", None) is True


@dataclass
class _Series:
    """One (method, tool) combination: counters plus a non-cumulative histogram."""

    bucket_count: int
    requests: int = 0
    errors: int = 0
    total_seconds: float = 0.0
    counts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (self.bucket_count + 1)


@dataclass
class _Gauge:
    help: str
    read: Callable[[], float | None]


Sample = tuple[str, Mapping[str, str], float]
"""One sample of a family: (suffix after the family name, labels, value)."""


@dataclass
class _Family:
    kind: str
    help: str
    read: Callable[[], Iterable[Sample]]


class Histogram:
    """A plain histogram of seconds, for families registered with `Metrics.add_family`."""

    def __init__(self, buckets: Iterable[float] = DEFAULT_BUCKETS) -> None:
        self._buckets = tuple(sorted(set(buckets)))
        if not self._buckets or not all(math.isfinite(b) for b in self._buckets):
            raise ValueError("buckets must be a non-empty set of finite bounds")
        self._counts = [0] * (len(self._buckets) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.count += 1
        self.sum += seconds
        for i, bound in enumerate(self._buckets):
            if seconds <= bound:
                self._counts[i] += 1
                return
        self._counts[-1] += 1

    def samples(self, labels: Mapping[str, str] | None = None) -> list[Sample]:
        """Cumulative `_bucket` samples, then `_sum` and `_count`."""
        base = dict(labels or {})
        out: list[Sample] = []
        cumulative = 0
        for bound, count in zip((*self._buckets, math.inf), self._counts, strict=True):
            cumulative += count
            out.append(("_bucket", {**base, "le": format_value(float(bound))}, cumulative))
        out.append(("_sum", base, self.sum))
        out.append(("_count", base, self.count))
        return out


class Metrics:
    """Counters and histograms per (method, tool), HTTP statuses, and read-on-scrape gauges."""

    def __init__(
        self,
        *,
        methods: Iterable[str],
        tools: Iterable[str],
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        self._methods = frozenset(methods)
        self._tools = frozenset(tools)
        self._buckets = tuple(sorted(set(buckets)))
        if not self._buckets or not all(math.isfinite(b) for b in self._buckets):
            raise ValueError("buckets must be a non-empty set of finite bounds")
        self._series: dict[tuple[str, str], _Series] = {}
        self._http: dict[int, int] = {}
        self._gauges: dict[str, _Gauge] = {}
        self._families: dict[str, _Family] = {}

    @property
    def buckets(self) -> tuple[float, ...]:
        return self._buckets

    def labels_for(self, method: str, tool: str) -> tuple[str, str]:
        """Normalise (method, tool) to a bounded label pair."""
        if method not in self._methods:
            return OTHER_METHOD, ""
        if method != "tools/call":
            return method, ""
        return method, tool if tool in self._tools else UNKNOWN_TOOL

    def observe(self, method: str, tool: str, seconds: float, *, error: bool) -> None:
        """Record one answered JSON-RPC request and how long the server took."""
        key = self.labels_for(method, tool)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(bucket_count=len(self._buckets))
        series.requests += 1
        if error:
            series.errors += 1
        seconds = max(seconds, 0.0)
        series.total_seconds += seconds
        index = len(self._buckets)
        for i, bound in enumerate(self._buckets):
            if seconds <= bound:
                index = i
                break
        series.counts[index] += 1

    def observe_http_status(self, status: int) -> None:
        """Count one HTTP response of the MCP endpoint (404 and 503 never reach JSON-RPC)."""
        self._http[status] = self._http.get(status, 0) + 1

    def add_gauge(self, name: str, help: str, read: Callable[[], float | None]) -> None:
        """Register a gauge read at scrape time; a None reading leaves it out of that scrape."""
        self._gauges[name] = _Gauge(help=help, read=read)

    def add_family(
        self, name: str, kind: str, help: str, read: Callable[[], Iterable[Sample]]
    ) -> None:
        """Register a family (counter, gauge, histogram) whose samples are read at scrape time.

        Its owner keeps the numbers where they are produced; the registry only
        formats them, so a scrape never waits on anything.
        """
        if kind not in ("counter", "gauge", "histogram"):
            raise ValueError(f"unknown metric type {kind!r}")
        self._families[name] = _Family(kind=kind, help=help, read=read)

    def requests(self, method: str, tool: str = "") -> int:
        """Requests counted for a (normalised) label pair, for tests and logs."""
        series = self._series.get(self.labels_for(method, tool))
        return 0 if series is None else series.requests

    def errors(self, method: str, tool: str = "") -> int:
        """Errors counted for a (normalised) label pair."""
        series = self._series.get(self.labels_for(method, tool))
        return 0 if series is None else series.errors

    def render(self) -> str:
        """The whole registry in Prometheus text exposition format, in a stable order."""
        lines: list[str] = []
        keys = sorted(self._series)
        lines.append(f"# HELP {REQUESTS} JSON-RPC requests answered, by method and tool.")
        lines.append(f"# TYPE {REQUESTS} counter")
        for key in keys:
            labels = format_labels({"method": key[0], "tool": key[1]})
            lines.append(f"{REQUESTS}{labels} {self._series[key].requests}")
        lines.append(
            f"# HELP {ERRORS} JSON-RPC requests answered with an error or a tool result "
            "flagged isError."
        )
        lines.append(f"# TYPE {ERRORS} counter")
        for key in keys:
            labels = format_labels({"method": key[0], "tool": key[1]})
            lines.append(f"{ERRORS}{labels} {self._series[key].errors}")
        lines.append(f"# HELP {DURATION} Time the server spent on a JSON-RPC request.")
        lines.append(f"# TYPE {DURATION} histogram")
        for key in keys:
            series = self._series[key]
            base = {"method": key[0], "tool": key[1]}
            cumulative = 0
            for bound, count in zip((*self._buckets, math.inf), series.counts, strict=True):
                cumulative += count
                labels = format_labels({**base, "le": format_value(float(bound))})
                lines.append(f"{DURATION}_bucket{labels} {cumulative}")
            lines.append(
                f"{DURATION}_sum{format_labels(base)} {format_value(series.total_seconds)}"
            )
            lines.append(f"{DURATION}_count{format_labels(base)} {series.requests}")
        lines.append(f"# HELP {HTTP_RESPONSES} HTTP responses of the MCP endpoint, by status.")
        lines.append(f"# TYPE {HTTP_RESPONSES} counter")
        for status in sorted(self._http):
            labels = format_labels({"status": str(status)})
            lines.append(f"{HTTP_RESPONSES}{labels} {self._http[status]}")
        for name in sorted(self._gauges):
            gauge = self._gauges[name]
            value = gauge.read()
            if value is None:
                continue
            lines.append(f"# HELP {name} {gauge.help}")
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {format_value(value)}")
        for name in sorted(self._families):
            family = self._families[name]
            lines.append(f"# HELP {name} {family.help}")
            lines.append(f"# TYPE {name} {family.kind}")
            for suffix, sample_labels, value in family.read():
                lines.append(f"{name}{suffix}{format_labels(sample_labels)} {format_value(value)}")
        return "\n".join(lines) + "\n"
