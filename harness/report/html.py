"""report.html: one self-contained page a person understands in 30 seconds.

Order: verdict, what happened (one paragraph built from the data), objectives,
load and errors over time, tools/list latency over time, reconnects, restore steps,
writes and integrity, environment, notes and doubts. The page loads nothing: inline
CSS, charts drawn here as inline SVG, no script, no web font, no remote reference;
it reads the same from a CI artifact, a mail attachment or an air-gapped machine.

Charts are checkable from the DOM: every plotted series is a
``<g data-series="NAME" data-points="N">`` holding exactly N drawn points of class
``pt`` (a ``<circle>`` on the time charts, a ``<rect>`` on the bar charts). On a time
chart N is the number of timeline rows whose value for that series is not null: a
second without a successful tools/list has no p50/p99, gets no point, and the line
breaks there. A timeline row ``t_s`` covers [t_s, t_s + 1) and is drawn at its middle,
so fault markers (exact instants) fall where they happened.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from harness.report.result import runbook_executions, runbook_steps
from harness.report.summary import (
    OBJECTIVE_LABEL,
    REQUEST_TABLE_HEAD,
    VERDICT_LABEL,
    doubts_of,
    instant,
    measured_text,
    notes_of,
    number,
    request_type_rows,
    target_text,
    unit_of,
    what_happened,
    with_unit,
)
from harness.report.text import plain_data

WIDTH = 1120
LEFT, RIGHT = 72, 24
PLOT_HEIGHT = 230
LABEL_ROW = 15
FONT = 12

COLOR = {
    "requests_per_s": "#0072b2",
    "errors_per_s": "#d55e00",
    "tools_list_p50_ms": "#009e73",
    "tools_list_p99_ms": "#cc79a7",
    "sessions_open": "#56b4e9",
    "initialize_per_s": "#e69f00",
    "fault": "#24292f",
    "event": "#5e3c99",
    "objective": "#cf222e",
    "bar": "#2f6db5",
    "bar_after": "#8c8c8c",
    "grid": "#d8dee4",
    "axis": "#57606a",
}
PHASE_FILL = {
    "ramp": "#f1eefa",
    "baseline": "#f3f5f7",
    "disruption": "#fbe1dd",
    "storm": "#fdefd2",
    "recovered": "#e3f3e7",
}
VERDICT_COLOR = {"pass": "#1a7f37", "fail": "#cf222e", "inconclusive": "#9a6700"}
HALO = {"paint_order": "stroke", "stroke": "#fff", "stroke_width": 3}
"""A white outline that keeps a label legible over lines and bands."""
OBJECTIVE_CLASS = {"met": "met", "missed": "missed", "not_measured": "unmeasured"}

CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f6f8fa; color: #1f2328;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 20px 40px; }
header { border-radius: 8px; padding: 18px 24px; color: #fff; display: flex; gap: 28px; align-items: center; }
header .verdict { font-size: 44px; font-weight: 800; letter-spacing: 1px; line-height: 1; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; opacity: .92; }
header dl { margin: 8px 0 0; display: flex; flex-wrap: wrap; gap: 4px 22px; font-size: 14px; }
header dl div { white-space: nowrap; }
header dt { display: inline; opacity: .8; } header dd { display: inline; margin: 0 0 0 4px; font-weight: 600; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 14px 20px; margin-top: 16px; }
h2 { font-size: 19px; margin: 0 0 10px; }
.what { font-size: 16px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
table.kv { width: auto; min-width: 50%; }
.two table.kv { width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.met td.v { color: #1a7f37; font-weight: 700; }
tr.missed td { background: #ffebe9; } tr.missed td.v { color: #cf222e; font-weight: 700; }
tr.unmeasured td { background: #fff8c5; } tr.unmeasured td.v { color: #9a6700; font-weight: 700; }
.legend { list-style: none; padding: 0; margin: 6px 0 0; display: flex; flex-wrap: wrap; gap: 4px 18px; font-size: 13px; }
.sw { display: inline-block; width: 18px; height: 10px; margin-right: 6px; vertical-align: middle; border: 1px solid #8c959f; }
.sw.line { height: 3px; border: 0; }
svg { display: block; width: 100%; height: auto; }
svg text { font-family: inherit; }
.muted { color: #57606a; }
.doubts li { color: #9a6700; font-weight: 600; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
details summary { cursor: pointer; color: #0969da; margin-top: 8px; }
code { font-size: 13px; }
footer { color: #57606a; font-size: 13px; margin-top: 16px; }
"""


def _attrs(**attrs: Any) -> str:
    return "".join(
        f' {k.rstrip("_").replace("_", "-")}="{escape(str(v))}"'
        for k, v in attrs.items()
        if v is not None
    )


def _el(tag: str, text: str = "", **attrs: Any) -> str:
    return f"<{tag}{_attrs(**attrs)}>{escape(text)}</{tag}>"


def _f(value: float) -> str:
    return f"{value:.1f}"


def _axis_text(text: str, x: float, y: float, anchor: str = "middle", **attrs: Any) -> str:
    """Grey text of an axis: tick values, axis names."""
    style = {"font_size": FONT, "fill": COLOR["axis"]} | attrs
    return _el("text", text, x=_f(x), y=_f(y), text_anchor=anchor, **style)


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k apart) from ``low`` up to the first at or above ``high``."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def log_ticks(low: float, high: float) -> list[float]:
    """1, 2, 5 per decade between two powers of ten."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0**exponent
            if low * 0.999 <= value <= high * 1.001:
                ticks.append(value)
    return ticks


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float, str]]
    """(t_s, value, tooltip) for the rows that have a value."""
    area: bool = False
    """Filled down to zero, translucent: another line stays visible on top of it."""


@dataclass(frozen=True)
class Marker:
    t_s: float
    label: str
    color: str
    dash: str | None = None


def errors_total(value: Any) -> float | None:
    """errors_per_s is a dict by kind (a number in older results)."""
    if isinstance(value, dict):
        return float(sum(v for v in value.values() if isinstance(v, (int, float))))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _plain(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


SERIES_VALUE: dict[str, Callable[[Any], float | None]] = {
    "requests_per_s": _plain,
    "errors_per_s": errors_total,
    "tools_list_p50_ms": _plain,
    "tools_list_p99_ms": _plain,
    "sessions_open": _plain,
    "initialize_per_s": _plain,
}


def series_values(timeline: Sequence[dict[str, Any]], name: str) -> list[tuple[int, float]]:
    """(t_s, value) of the rows where the series has a value: what its chart draws."""
    read = SERIES_VALUE[name]
    out = []
    for row in timeline:
        value = read(row.get(name))
        if value is not None and math.isfinite(value):
            out.append((int(row.get("t_s", 0)), value))
    return out


def _tooltip(name: str, row: dict[str, Any], value: float) -> str:
    t = row.get("t_s")
    if name == "errors_per_s" and isinstance(row.get(name), dict) and row[name]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(row[name].items()))
        return f"t={t} s: {number(value)} errors/s ({kinds})"
    if name == "sessions_open":
        return f"t={t} s: {number(value)} sessions open"
    unit = "ms" if name.endswith("_ms") else "/s"
    return f"t={t} s: {name} {number(value)} {unit}".replace(" /s", "/s")


def build_series(timeline: Sequence[dict[str, Any]], name: str, *, area: bool = False) -> Series:
    by_t = {int(row.get("t_s", 0)): row for row in timeline}
    return Series(
        name,
        [(t + 0.5, v, _tooltip(name, by_t[t], v)) for t, v in series_values(timeline, name)],
        area,
    )


class TimeChart:
    """A time axis shared by the charts of a run: same span, same markers, same phases."""

    def __init__(self, x_max: float, markers: Sequence[Marker], phases: Sequence[dict[str, Any]]):
        self.x_max = max(x_max, 1.0)
        self.markers = sorted(markers, key=lambda m: m.t_s)
        self.phases = phases
        self.rows = self._label_rows()
        self.top = 8 + LABEL_ROW * (max(self.rows.values(), default=-1) + 1) + 14
        self.bottom = self.top + PLOT_HEIGHT
        self.height = self.bottom + 44

    def x(self, t_s: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * min(max(t_s, 0.0), self.x_max) / self.x_max

    def label_anchor(self, marker: Marker) -> tuple[str, float]:
        """Where a marker's label sits: centred on its line, or flush to the line's side that
        keeps it inside the chart (a fault at 0 s or at the end is not clipped)."""
        x, width = self.x(marker.t_s), len(marker.label) * 7.0 + 8
        if x - width / 2 < 2:
            return "start", x - 4
        if x + width / 2 > WIDTH - 2:
            return "end", x - width + 4
        return "middle", x - width / 2

    def _label_rows(self) -> dict[int, int]:
        """Marker labels go on as many rows above the plot as they need not to overlap."""
        rows: dict[int, int] = {}
        ends: list[float] = []
        for i, marker in enumerate(self.markers):
            width = len(marker.label) * 7.0 + 12
            start = self.label_anchor(marker)[1] - 2
            row = next((r for r, end in enumerate(ends) if end <= start), len(ends))
            if row == len(ends):
                ends.append(0.0)
            ends[row] = start + width
            rows[i] = row
        return rows

    def _frame(self, y_ticks: Sequence[tuple[float, str]], y_label: str) -> list[str]:
        parts = []
        for phase in self.phases:
            start, end = phase.get("start_s"), phase.get("end_s")
            if start is None or end is None or end <= start:
                continue
            x0, x1 = self.x(start), self.x(end)
            name = str(phase.get("name"))
            parts.append(
                f'<rect class="phase" data-phase="{escape(name)}" x="{_f(x0)}" y="{self.top}" '
                f'width="{_f(x1 - x0)}" height="{PLOT_HEIGHT}" fill="{PHASE_FILL.get(name, "#eef1f4")}"/>'
            )
            if x1 - x0 > len(name) * 7 + 8:
                parts.append(
                    _el(
                        "text",
                        name,
                        x=_f((x0 + x1) / 2),
                        y=self.top + 14,
                        text_anchor="middle",
                        font_size=11,
                        fill="#57606a",
                        **HALO,
                    )
                )
        for y, label in y_ticks:
            parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(y)}" y2="{_f(y)}" stroke="{COLOR["grid"]}"/>'
            )
            parts.append(_axis_text(label, LEFT - 6, y + 4, "end"))
        for t in [t for t in nice_ticks(0, self.x_max, 12) if t <= self.x_max]:
            x = self.x(t)
            parts.append(
                f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{self.bottom}" y2="{self.bottom + 5}" stroke="{COLOR["axis"]}"/>'
            )
            parts.append(_axis_text(f"{number(t)}", x, self.bottom + 18))
        parts.append(
            _axis_text(
                "t (seconds since the load started)", (LEFT + WIDTH - RIGHT) / 2, self.bottom + 36
            )
        )
        mid = (self.top + self.bottom) / 2
        parts.append(_axis_text(y_label, 16, mid, transform=f"rotate(-90 16 {_f(mid)})"))
        parts.append(
            f'<rect x="{LEFT}" y="{self.top}" width="{WIDTH - LEFT - RIGHT}" height="{PLOT_HEIGHT}" '
            f'fill="none" stroke="{COLOR["axis"]}"/>'
        )
        return parts

    def _markers(self) -> list[str]:
        """Lines first, then the labels on their opaque backgrounds, so no line crosses a label."""
        lines, labels = [], []
        for i, marker in enumerate(self.markers):
            x = self.x(marker.t_s)
            y = 8 + LABEL_ROW * self.rows[i] + 11
            lines.append(
                f'<line class="marker" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(y + 3)}" y2="{self.bottom}" '
                f'stroke="{marker.color}" stroke-width="1.5"'
                + (f' stroke-dasharray="{marker.dash}"' if marker.dash else "")
                + "/>"
            )
            labels.append(_label(marker.label, x, y, self.label_anchor(marker)[0], marker.color))
        return lines + labels

    def render(
        self,
        series: Sequence[Series],
        *,
        y_label: str,
        log: bool = False,
        thresholds: Sequence[tuple[float, str]] = (),
        title: str,
    ) -> str:
        values = [v for s in series for _, v, _ in s.points] + [t for t, _ in thresholds]
        if log:
            positive = [v for v in values if v > 0] or [1.0]
            low = 10 ** math.floor(math.log10(min(positive)))
            high = 10 ** math.ceil(math.log10(max(positive)))
            if high <= low:
                high = low * 10
            ticks = log_ticks(low, high)

            def y(v: float) -> float:
                v = max(v, low)
                span = math.log10(high) - math.log10(low)
                return self.bottom - PLOT_HEIGHT * (math.log10(v) - math.log10(low)) / span
        else:
            ticks = nice_ticks(0, max(values, default=1.0) or 1.0, 5)
            high = max(ticks[-1], 1e-9)

            def y(v: float) -> float:
                return self.bottom - PLOT_HEIGHT * v / high

        parts = self._frame([(y(t), number(t)) for t in ticks], y_label)
        thresholds_labels = []
        for value, label in thresholds:
            yy = y(value)
            parts.append(
                f'<line class="objective" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(yy)}" y2="{_f(yy)}" '
                f'stroke="{COLOR["objective"]}" stroke-width="1.5" stroke-dasharray="8 4"/>'
            )
            thresholds_labels.append(
                _label(label, WIDTH - RIGHT - 6, yy + 15, "end", COLOR["objective"])
            )
        for s in series:
            parts.append(self._series(s, y))
        if not any(s.points for s in series):
            parts.append(
                _axis_text(
                    "no values in any second",
                    (LEFT + WIDTH - RIGHT) / 2,
                    (self.top + self.bottom) / 2,
                    font_size=14,
                )
            )
        parts += thresholds_labels + self._markers()
        return (
            f'<svg viewBox="0 0 {WIDTH} {self.height}" role="img" aria-label="{escape(title)}">'
            + "".join(parts)
            + "</svg>"
        )

    def _series(self, s: Series, y: Callable[[float], float]) -> str:
        color = COLOR.get(s.name, "#333")
        segments: list[list[tuple[float, float]]] = []
        previous: float | None = None
        for t, v, _ in s.points:
            if previous is None or t - previous > 1.0001:
                segments.append([])
            segments[-1].append((self.x(t), y(v)))
            previous = t
        path = ["M" + " L".join(f"{_f(px)} {_f(py)}" for px, py in segment) for segment in segments]
        fill = ""
        if s.area:
            zero = _f(y(0.0))
            shapes = [
                f"M{_f(seg[0][0])} {zero} L"
                + " L".join(f"{_f(px)} {_f(py)}" for px, py in seg)
                + f" L{_f(seg[-1][0])} {zero} Z"
                for seg in segments
            ]
            fill = (
                f'<path d="{" ".join(shapes)}" fill="{color}" fill-opacity="0.22" stroke="none"/>'
            )
        dots = "".join(
            f'<circle class="pt" cx="{_f(self.x(t))}" cy="{_f(y(v))}" r="2.6" fill="{color}">'
            f"<title>{escape(tip)}</title></circle>"
            for t, v, tip in s.points
        )
        line = (
            f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2" '
            'stroke-linejoin="round"/>'
            if path
            else ""
        )
        return (
            f'<g class="series" data-series="{escape(s.name)}" data-points="{len(s.points)}">'
            f"{fill}{line}{dots}</g>"
        )


def _label(text: str, x: float, y: float, anchor: str, color: str) -> str:
    """Bold text on a white box (its width estimated from the text: no layout engine here)."""
    width = len(text) * 7.0 + 8
    left = {"start": x - 4, "middle": x - width / 2, "end": x - width + 4}[anchor]
    return (
        f'<rect x="{_f(left)}" y="{_f(y - 12)}" width="{_f(width)}" height="16" rx="3" '
        'fill="#fff" fill-opacity="0.9"/>'
        + _el(
            "text",
            text,
            x=_f(x),
            y=_f(y),
            text_anchor=anchor,
            font_size=FONT,
            fill=color,
            font_weight=600,
        )
    )


ENDED_LABEL = {
    "kill_server": "server restarted",
    "kill_primary": "old primary restarted",
    "bad_deployment": "rolled back",
    "partition": "partition healed",
    "switchover": "switchover done",
}
"""How a fault's end reads on a chart; any other kind is ``<kind> lifted``."""


def markers_of(result: dict[str, Any]) -> list[Marker]:
    """Faults where they took effect (and ended), the first write on a promoted primary,
    detection, each runbook execution, restore start and end."""
    metrics = result.get("metrics") or {}
    markers = []
    first_fault = None
    for fault in result.get("faults") or []:
        if fault.get("confirmed") and fault.get("t_fault_s") is not None:
            markers.append(Marker(fault["t_fault_s"], str(fault.get("kind")), COLOR["fault"]))
            first_fault = (
                fault["t_fault_s"] if first_fault is None else min(first_fault, fault["t_fault_s"])
            )
            if fault.get("t_end_s") is not None:
                kind = str(fault.get("kind"))
                ended = ENDED_LABEL.get(kind, f"{kind} lifted")
                markers.append(Marker(fault["t_end_s"], ended, COLOR["fault"], "5 3"))
    if first_fault is not None and metrics.get("db_failover_s") is not None:
        markers.append(
            Marker(
                first_fault + metrics["db_failover_s"], "new primary writes", COLOR["event"], "2 3"
            )
        )
    if first_fault is not None and metrics.get("time_to_detect_s") is not None:
        markers.append(
            Marker(first_fault + metrics["time_to_detect_s"], "detected", COLOR["event"], "2 3")
        )
    for index, execution in enumerate(runbook_executions(result), start=1):
        if isinstance(execution.get("t_s"), (int, float)):
            markers.append(Marker(execution["t_s"], f"runbook #{index}", COLOR["event"], "4 2"))
    restore = metrics.get("restore") or {}
    if restore.get("started_s") is not None:
        markers.append(Marker(restore["started_s"], "restore starts", COLOR["event"], "6 3"))
        if restore.get("total_s") is not None:
            markers.append(
                Marker(
                    restore["started_s"] + restore["total_s"], "restore done", COLOR["event"], "6 3"
                )
            )
    return markers


def _legend(items: Sequence[tuple[str, str, str]]) -> str:
    """(kind line|box|dash, color, text)."""
    out = []
    for kind, color, text in items:
        if kind == "box":
            swatch = f'<span class="sw" style="background:{color}"></span>'
        elif kind == "dash":
            swatch = f'<span class="sw line" style="background:repeating-linear-gradient(90deg,{color} 0 6px,transparent 6px 9px)"></span>'
        else:
            swatch = f'<span class="sw line" style="background:{color}"></span>'
        out.append(f"<li>{swatch}{escape(text)}</li>")
    return f'<ul class="legend">{"".join(out)}</ul>'


EMPTY_PHASE_WHY = {
    "storm": " (new sessions were under twice the baseline's rate when the service returned: no herd)",
    "disruption": " (a service write succeeded at once after the fault)",
}


def _phase_legend(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    items = []
    for phase in result.get("phases") or []:
        start, end = phase.get("start_s"), phase.get("end_s")
        name = str(phase.get("name"))
        if start is None or end is None:
            continue
        span = f"{name} {start:.1f}–{end:.1f} s"
        if end <= start:
            span = f"{name}: none" + EMPTY_PHASE_WHY.get(name, "")
        items.append(("box", PHASE_FILL.get(name, "#eef1f4"), span))
    return items


def _marker_legend(markers: Sequence[Marker]) -> list[tuple[str, str, str]]:
    return [
        ("dash" if m.dash else "line", m.color, f"{m.label} at {instant(m.t_s)}") for m in markers
    ]


def _latency_thresholds(result: dict[str, Any]) -> list[tuple[float, str]]:
    """tools/list p99 objectives, drawn where a reader compares them with the p99 line."""
    by_target: dict[float, list[str]] = {}
    for objective in result.get("objectives") or []:
        metric = str(objective.get("metric", ""))
        if metric.startswith("tools_list_latency_ms.") and metric.endswith(".p99"):
            phase = metric.split(".")[1] if metric.count(".") == 2 else "all"
            target = objective.get("target")
            if isinstance(target, (int, float)):
                by_target.setdefault(float(target), []).append(phase)
    return [
        (target, f"p99 objective ≤ {number(target)} ms ({', '.join(phases)})")
        for target, phases in sorted(by_target.items())
    ]


def timeline_charts(result: dict[str, Any]) -> str:
    timeline = result.get("timeline") or []
    if not timeline:
        return _el("p", "No timeline: the load did not run.", class_="muted")
    markers = markers_of(result)
    phases = result.get("phases") or []
    x_max = max(
        [float(len(timeline))]
        + [float(p["end_s"]) for p in phases if isinstance(p.get("end_s"), (int, float))]
        + [m.t_s for m in markers]
    )
    chart = TimeChart(nice_ticks(0, x_max, 12)[-1], markers, phases)
    context = _phase_legend(result) + _marker_legend(markers)
    load = chart.render(
        [
            build_series(timeline, "errors_per_s", area=True),
            build_series(timeline, "requests_per_s"),
        ],
        y_label="per second",
        title="requests and errors per second",
    )
    latency = chart.render(
        [
            build_series(timeline, "tools_list_p50_ms"),
            build_series(timeline, "tools_list_p99_ms"),
        ],
        y_label="ms (log scale)",
        log=True,
        thresholds=_latency_thresholds(result),
        title="tools/list latency per second",
    )
    sessions = chart.render(
        [
            build_series(timeline, "initialize_per_s", area=True),
            build_series(timeline, "sessions_open"),
        ],
        y_label="sessions / initializes per second",
        title="sessions open and initializes per second",
    )
    missing = sum(1 for row in timeline if _plain(row.get("tools_list_p99_ms")) is None)
    gap_note = (
        f" {missing} of {len(timeline)} seconds had no successful tools/list: no point, the line breaks."
        if missing
        else ""
    )
    return (
        '<section id="load"><h2>Load and errors over time</h2>'
        + load
        + _legend(
            [
                ("line", COLOR["requests_per_s"], "requests/s"),
                (
                    "line",
                    COLOR["errors_per_s"],
                    "errors/s, shaded (all kinds; hover a point for the kinds)",
                ),
            ]
            + context
        )
        + '</section><section id="latency"><h2>tools/list latency per second</h2>'
        + latency
        + _legend(
            [
                ("line", COLOR["tools_list_p50_ms"], "p50"),
                ("line", COLOR["tools_list_p99_ms"], "p99"),
            ]
            + (
                [("dash", COLOR["objective"], "p99 objective")]
                if _latency_thresholds(result)
                else []
            )
            + context
        )
        + _el(
            "p",
            "Successful tools/list calls only, per second of the run." + gap_note,
            class_="muted",
        )
        + '</section><section id="sessions"><h2>Sessions and initializes over time</h2>'
        + sessions
        + _legend(
            [
                ("line", COLOR["sessions_open"], "sessions open (clients holding one)"),
                ("line", COLOR["initialize_per_s"], "successful initializes/s, shaded"),
            ]
            + context
        )
        + _el(
            "p",
            "A reconnect herd is the shaded hump after a fault: every broken client opening a "
            "session again. Sessionless clients (2026-07-28) open none.",
            class_="muted",
        )
        + "</section>"
    )


@dataclass(frozen=True)
class Bar:
    label: str
    start: float
    length: float
    text: str
    color: str = COLOR["bar"]


def bar_chart(
    bars: Sequence[Bar],
    *,
    series: str,
    unit: str,
    title: str,
    marker: tuple[float, str] | None = None,
) -> str:
    """Horizontal bars (a waterfall when bars start after each other); one ``pt`` per bar."""
    label_w, row_h, top = 190, 30, 26 if marker else 10
    right = WIDTH - 90
    high = max([b.start + b.length for b in bars] + [marker[0] if marker else 0.0] + [1e-9])
    ticks = nice_ticks(0, high, 6)
    high = max(ticks[-1], high)
    bottom = top + row_h * len(bars)
    height = bottom + 40

    def x(v: float) -> float:
        return label_w + (right - label_w) * v / high

    parts = []
    for t in ticks:
        parts.append(
            f'<line x1="{_f(x(t))}" x2="{_f(x(t))}" y1="{top}" y2="{bottom}" stroke="{COLOR["grid"]}"/>'
        )
        parts.append(_axis_text(number(t), x(t), bottom + 16))
    parts.append(_axis_text(unit, (label_w + right) / 2, bottom + 34))
    dots = []
    for i, bar in enumerate(bars):
        y = top + i * row_h
        parts.append(
            _el(
                "text",
                bar.label,
                x=label_w - 8,
                y=y + 19,
                text_anchor="end",
                font_size=13,
                fill="#1f2328",
            )
        )
        width = max(x(bar.start + bar.length) - x(bar.start), 1.5)
        dots.append(
            f'<rect class="pt" x="{_f(x(bar.start))}" y="{y + 6}" width="{_f(width)}" height="{row_h - 12}" '
            f'fill="{bar.color}"><title>{escape(bar.label + ": " + bar.text)}</title></rect>'
        )
        end = x(bar.start) + width
        if end + 6 + len(bar.text) * 6.6 > WIDTH:
            parts.append(
                _el(
                    "text",
                    bar.text,
                    x=_f(x(bar.start) - 6),
                    y=y + 19,
                    text_anchor="end",
                    font_size=FONT,
                    fill="#1f2328",
                )
            )
        else:
            parts.append(
                _el("text", bar.text, x=_f(end + 6), y=y + 19, font_size=FONT, fill="#1f2328")
            )
    parts.append(
        f'<g class="series" data-series="{escape(series)}" data-points="{len(bars)}">{"".join(dots)}</g>'
    )
    if marker:
        mx = x(marker[0])
        parts.append(
            f'<line class="marker" x1="{_f(mx)}" x2="{_f(mx)}" y1="{top - 8}" y2="{bottom}" stroke="{COLOR["event"]}" stroke-width="1.5" stroke-dasharray="6 3"/>'
        )
        parts.append(
            _el(
                "text",
                marker[1],
                x=_f(mx),
                y=top - 12,
                text_anchor="middle",
                font_size=FONT,
                fill=COLOR["event"],
                font_weight=600,
            )
        )
    parts.append(
        f'<line x1="{label_w}" x2="{label_w}" y1="{top}" y2="{bottom}" stroke="{COLOR["axis"]}"/>'
    )
    return f'<svg viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">{"".join(parts)}</svg>'


def reconnect_section(result: dict[str, Any]) -> str:
    reconnect = (result.get("metrics") or {}).get("reconnect")
    head = '<section id="reconnect"><h2>Reconnects</h2>'
    if not reconnect:
        return head + _el("p", "Not measured in this run.", class_="muted") + "</section>"
    broken = reconnect.get("clients_broken")
    if not broken:
        text = (
            "No client's session broke: there was nothing to reconnect."
            if broken == 0
            else "Not measured."
        )
        if not any(f.get("confirmed") for f in result.get("faults") or []):
            text = "No fault took effect: no reconnect was expected."
        return head + _el("p", text) + "</section>"
    attempts = reconnect.get("attempts") or {}
    lines = (
        f"{number(reconnect.get('episodes_reconnected'))} of {number(reconnect.get('episodes'))} session "
        f"breaks after the fault (of {number(broken)} clients) were followed by a working session within "
        f"the reconnect window ({with_unit(reconnect.get('success_rate'), '%')})"
    )
    if reconnect.get("episodes_not_reconnected"):
        lines += f"; {number(reconnect['episodes_not_reconnected'])} were not"
    if reconnect.get("episodes_unobserved"):
        lines += (
            f"; {number(reconnect['episodes_unobserved'])} broke too close to the end of the run to be "
            "watched for a whole window (not judged, whatever their outcome)"
        )
    lines += f". Attempts per client: mean {number(attempts.get('mean'))}, max {number(attempts.get('max'))}."
    histogram = reconnect.get("histogram")
    times = reconnect.get("time_to_reconnect_s") or {}
    if histogram:
        bars = [
            Bar(f"≤ {number(bound)} s", 0.0, float(count), f"{number(count)} clients")
            for bound, count in histogram
        ]
        chart = bar_chart(
            bars, series="reconnect_histogram", unit="clients", title="time to reconnect"
        )
        caption = "Clients by time to reconnect (upper bound of each bucket)."
    else:
        bars = [
            Bar(name, 0.0, float(times[key]), with_unit(times[key], "s"))
            for name, key in (
                ("p50", "p50"),
                ("p95", "p95"),
                ("p99", "p99"),
                ("slowest (max)", "max"),
            )
            if isinstance(times.get(key), (int, float))
        ]
        if not bars:
            return (
                head
                + _el("p", lines)
                + _el(
                    "p",
                    "No time to reconnect was recorded (none in this protocol version).",
                    class_="muted",
                )
                + "</section>"
            )
        chart = bar_chart(
            bars, series="reconnect_time_s", unit="seconds to reconnect", title="time to reconnect"
        )
        caption = "Time to reconnect per client, as percentiles: half the clients were back within p50, 99% within p99."
    return head + _el("p", lines) + chart + _el("p", caption, class_="muted") + "</section>"


PARALLEL_AFTER_REATTACH = ("first_good_write_s", "rebuild_replica_s")


def restore_section(result: dict[str, Any]) -> str:
    """Restore steps as a waterfall: the timed steps run one after the other; the first good
    write and the replica rebuild both start when the server is reattached."""
    restore = (result.get("metrics") or {}).get("restore")
    if not restore:
        return ""
    head = '<section id="restore"><h2>Restore</h2>'
    target = restore.get("target") or {}
    facts = _table(
        [
            ("trigger", f"{restore.get('trigger')} (at {instant(restore.get('t_trigger_s'))})"),
            ("target", f"{target.get('kind')} {target.get('value') or ''}".strip()),
            ("found by", str(target.get("found_by") or "—")),
            ("started at", instant(restore.get("started_s"))),
            ("total (start → first good write)", with_unit(restore.get("total_s"), "s")),
            ("stopped at LSN", str(restore.get("stopped_at_lsn") or "—")),
            ("error", str(restore.get("error") or "none")),
        ]
    )
    steps = [(k, v) for k, v in (restore.get("steps") or {}).items() if isinstance(v, (int, float))]
    if not steps:
        return head + facts + "</section>"
    bars, clock = [], 0.0
    sequential_end = sum(v for k, v in steps if k not in PARALLEL_AFTER_REATTACH)
    for key, seconds in steps:
        start = sequential_end if key in PARALLEL_AFTER_REATTACH else clock
        if key not in PARALLEL_AFTER_REATTACH:
            clock += seconds
        after = key == "rebuild_replica_s"
        bars.append(
            Bar(
                key.removesuffix("_s").replace("_", " "),
                start,
                float(seconds),
                with_unit(seconds, "s") + (" (after service is back)" if after else ""),
                COLOR["bar_after"] if after else COLOR["bar"],
            )
        )
    total = restore.get("total_s")
    marker = (
        (float(total), f"service back: {with_unit(total, 's')}")
        if isinstance(total, (int, float))
        else None
    )
    chart = bar_chart(
        bars,
        series="restore_steps",
        unit="seconds since the restore started",
        title="restore steps",
        marker=marker,
    )
    return head + chart + facts + "</section>"


STEP_COLOR = {"healthy": COLOR["bar_after"], "fixed": COLOR["bar"]}
"""A step that needed a person (alert, not fixed, failed, skipped) is drawn in red."""


def runbook_section(result: dict[str, Any]) -> str:
    """Each runbook execution's steps as bars from the first execution's start: when each
    began, how long it took and how it ended (the drill's evidence, in the run's report),
    then why each execution ran and what it left for a person."""
    executions = runbook_executions(result)
    steps = [
        step
        for step in runbook_steps(result)
        if isinstance(step["start_s"], (int, float))
        and isinstance(step["duration_s"], (int, float))
    ]
    if not steps:
        return ""
    t0 = min(float(step["start_s"]) for step in steps)
    bars = [
        Bar(
            f"#{step['execution']} {step['name']}",
            float(step["start_s"]) - t0,
            float(step["duration_s"]),
            f"{step['outcome']}, {with_unit(step['duration_s'], 's')}",
            STEP_COLOR.get(str(step["outcome"]), COLOR["objective"]),
        )
        for step in steps
    ]
    chart = bar_chart(
        bars,
        series="runbook_steps",
        unit=f"seconds since runbook #1 began (t = {number(t0)} s of the load)",
        title="runbook executions",
    )
    rows = "".join(
        "<tr>"
        + _el("td", f"#{index} at {instant(e.get('t_s'))}")
        + _el(
            "td",
            "triggered by "
            + (
                ", ".join(f"{t.get('step')} ({t.get('detail')})" for t in e.get("trigger") or [])
                or "—"
            )
            + f"; gaps: {', '.join(map(str, e.get('gaps') or [])) or 'none'}",
        )
        + "</tr>"
        for index, e in enumerate(executions, start=1)
    )
    return (
        '<section id="runbook"><h2>Runbook executions</h2>'
        + chart
        + "<table><tr><th>execution</th><th>why it ran, and what is left for a person</th></tr>"
        + rows
        + "</table></section>"
    )


def _table(rows: Sequence[tuple[str, str]], head: tuple[str, str] | None = None) -> str:
    thead = f"<tr><th>{escape(head[0])}</th><th>{escape(head[1])}</th></tr>" if head else ""
    body = "".join(
        f'<tr><td>{escape(k)}</td><td class="num">{escape(v)}</td></tr>' for k, v in rows
    )
    return f'<table class="kv">{thead}{body}</table>'


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, scalar) for every scalar under ``data``; lists joined."""
    if isinstance(data, dict):
        out = []
        for key, value in data.items():
            out += flatten(value, f"{prefix}{key}.")
        return out
    if isinstance(data, list):
        if all(not isinstance(v, (dict, list)) for v in data):
            return [(prefix.rstrip("."), ", ".join(str(v) for v in data) if data else "—")]
        return [(prefix.rstrip("."), f"{len(data)} items")]
    return [(prefix.rstrip("."), data)]


def _value(path: str, value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return with_unit(value, unit_of(path))
    return "—" if value is None else str(value)


def figures_section(result: dict[str, Any]) -> str:
    metrics = result.get("metrics") or {}
    writes = {k: v for k, v in (metrics.get("writes") or {}).items() if k != "samples"}
    blocks = []
    if writes:
        rows = [(p, _value(p, v)) for p, v in flatten(writes) if not p.endswith("samples")]
        blocks.append("<div><h3>Writes (the ledger)</h3>" + _table(rows) + "</div>")
    integrity = metrics.get("integrity")
    if integrity:
        rows = [("time_to_detect_s", with_unit(metrics.get("time_to_detect_s"), "s"))]
        for moment in ("baseline", "before", "after"):
            check = integrity.get(moment) or {}
            per_check = ", ".join(
                f"{name} {number((c or {}).get('violations'))}"
                for name, c in (check.get("checks") or {}).items()
            )
            rows.append(
                (
                    f"violations {moment} ({instant(check.get('t_s'))})",
                    f"{number(check.get('violations'))}" + (f" ({per_check})" if per_check else ""),
                )
            )
        for key in ("injected", "detected", "missed"):
            if key in integrity:
                rows.append(
                    (
                        key,
                        _value(key, integrity[key])
                        if not isinstance(integrity[key], dict)
                        else ", ".join(f"{k} {number(v)}" for k, v in integrity[key].items()),
                    )
                )
        rows.append(
            (
                "rounds (unmeasured)",
                f"{number(integrity.get('rounds'))} ({number(integrity.get('rounds_unmeasured'))})",
            )
        )
        blocks.append("<div><h3>Integrity</h3>" + _table(rows) + "</div>")
    everything = [
        (p, _value(p, v)) for p, v in flatten(metrics) if ".samples" not in p and ".sample" not in p
    ]
    return (
        '<section id="figures"><h2>Writes and integrity</h2>'
        + (
            f'<div class="two">{"".join(blocks)}</div>'
            if blocks
            else _el("p", "No writes were checked.", class_="muted")
        )
        + "<details><summary>All measurements</summary>"
        + _table(everything, ("metric", "value"))
        + "</details></section>"
    )


def objectives_section(result: dict[str, Any]) -> str:
    objectives = result.get("objectives") or []
    head = '<section id="objectives"><h2>Objectives</h2>'
    if not objectives:
        return (
            head + _el("p", "No objectives were set for this run.", class_="muted") + "</section>"
        )
    rows = "".join(
        f'<tr class="{OBJECTIVE_CLASS.get(o.get("verdict", ""), "")}">'
        f"<td><code>{escape(str(o.get('metric')))}</code></td>"
        f'<td class="num">{escape(target_text(o))}</td>'
        f'<td class="num">{escape(measured_text(o))}</td>'
        f'<td class="v">{escape(OBJECTIVE_LABEL.get(o.get("verdict", ""), str(o.get("verdict"))))}</td></tr>'
        for o in objectives
    )
    return (
        head
        + "<table><tr><th>objective</th><th>target</th><th>measured</th><th>verdict</th></tr>"
        + rows
        + "</table></section>"
    )


def _header(result: dict[str, Any]) -> str:
    scenario = result.get("scenario") or {}
    verdict = str(result.get("verdict") or "inconclusive")
    facts = [
        ("run", result.get("run_id")),
        ("started", result.get("started_at")),
        ("duration", with_unit(result.get("duration_s"), "s")),
        ("backend", result.get("backend")),
        ("seed", result.get("seed")),
    ]
    dl = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(str(v))}</dd></div>" for k, v in facts)
    return (
        f'<header style="background:{VERDICT_COLOR.get(verdict, "#57606a")}">'
        f'<div class="verdict">{escape(VERDICT_LABEL.get(verdict, verdict.upper()))}</div>'
        f"<div>{_el('h1', str(scenario.get('name', '?')))}"
        + (_el("p", str(scenario["description"])) if scenario.get("description") else "")
        + f"<dl>{dl}</dl></div></header>"
    )


def _notes(result: dict[str, Any]) -> str:
    doubts, notes = doubts_of(result), notes_of(result)
    if not doubts and not notes:
        return '<section id="notes"><h2>Notes and doubts</h2><p class="muted">None.</p></section>'
    out = '<section id="notes"><h2>Notes and doubts</h2>'
    if doubts:
        out += "<h3>Doubts (a figure could be wrong: the run is inconclusive)</h3>"
        out += '<ul class="doubts">' + "".join(_el("li", d) for d in doubts) + "</ul>"
    if notes:
        out += "<h3>Notes</h3><ul>" + "".join(_el("li", n) for n in notes) + "</ul>"
    return out + "</section>"


def requests_section(result: dict[str, Any]) -> str:
    """Every request type's count, failures and latency (Locust's table), and the failed
    requests by kind, in plain sight."""
    rows = request_type_rows(result)
    if not rows:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in REQUEST_TABLE_HEAD)
    body = "".join(
        "<tr>"
        + _el("td", row[0])
        + "".join(f'<td class="num">{escape(c)}</td>' for c in row[1:])
        + "</tr>"
        for row in rows
    )
    kinds = ((result.get("metrics") or {}).get("requests") or {}).get("errors_by_kind") or {}
    errors = (
        "<h3>Failed requests by kind</h3>"
        + _table([(str(k), str(v)) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])])
        if kinds
        else _el("p", "No request failed.", class_="muted")
    )
    return (
        '<section id="requests"><h2>Requests by type</h2>'
        f'<table class="requests"><tr>{head}</tr>{body}</table>{errors}</section>'
    )


def report_html(result: dict[str, Any]) -> str:
    """The whole report as one HTML document (no external reference of any kind). Every
    string from the run is redacted, its control characters shown as escapes, and
    HTML-escaped where it is placed (``_el``, ``_attrs``, ``escape``)."""
    result = plain_data(result)
    scenario = str((result.get("scenario") or {}).get("name", "?"))
    verdict = VERDICT_LABEL.get(str(result.get("verdict")), str(result.get("verdict")).upper())
    environment = [
        (p, "—" if v is None else str(v)) for p, v in flatten(result.get("environment") or {})
    ]
    body = [
        _header(result),
        '<section id="what-happened"><h2>What happened</h2>'
        + _el("p", what_happened(result), class_="what")
        + "</section>",
        objectives_section(result),
        timeline_charts(result),
        requests_section(result),
        reconnect_section(result),
        runbook_section(result),
        restore_section(result),
        figures_section(result),
        '<section id="environment"><h2>Environment</h2>'
        + (_table(environment) if environment else _el("p", "Not recorded.", class_="muted"))
        + "</section>",
        _notes(result),
        _el(
            "footer",
            f"Rendered from result.json (schema_version {result.get('schema_version', '?')}) by mcp-harness.",
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(f'{verdict} · {scenario} · mcp-harness')}</title>"
        f"<style>{CSS}</style></head><body><main>"
        + "\n".join(b for b in body if b)
        + "</main></body></html>\n"
    )
