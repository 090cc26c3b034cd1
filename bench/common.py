"""What every benchmark shares: one ``Figure`` per number, written as JSON under
``results/bench/`` and printed as one table. A ratio is always against a baseline
measured in the same run, so a noisy machine moves both sides together."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(os.environ.get("MCP_HARNESS_BENCH_DIR", "results/bench"))


@dataclass
class Figure:
    """One measured number. ``baseline`` names the figure (same bench) it is a ratio of;
    ``goal`` is the written target in words and ``met`` whether this run reached it."""

    bench: str
    name: str
    value: float
    unit: str
    baseline: str | None = None
    ratio: float | None = None
    goal: str | None = None
    met: bool | None = None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def with_ratios(figures: list[Figure]) -> list[Figure]:
    """Fill ``ratio`` = value / value of the named baseline, for figures that name one."""
    by_name = {f.name: f for f in figures}
    for f in figures:
        if f.baseline is not None and by_name.get(f.baseline) and by_name[f.baseline].value:
            f.ratio = f.value / by_name[f.baseline].value
    return figures


def busy_cpu_seconds(cpu: int | None = None) -> float:
    """Busy seconds so far (user, nice, system, irq, softirq, steal) of one core, or of
    the whole machine with ``cpu`` None, from ``/proc/stat``; 0 for a core not listed."""
    label = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name == label:
                v = [int(x) for x in values]
                return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_figures(bench: str, figures: Iterable[Figure], out_dir: Path = BENCH_DIR) -> Path:
    """``results/bench/<bench>.json``: the machine and the figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{bench}.json"
    payload = {"bench": bench, "machine": machine(), "figures": [asdict(f) for f in figures]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def read_figures(path: Path) -> list[Figure]:
    data = json.loads(path.read_text())
    return [Figure(**f) for f in data["figures"]]


def _number(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_table(figures: Iterable[Figure]) -> str:
    """One plain-text table: bench, figure, value, ratio to baseline, goal, met."""
    rows = [("bench", "figure", "value", "ratio", "goal", "met")]
    for f in figures:
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}x {f.baseline}"
        met = "" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.bench, f.name, f"{_number(f.value)} {f.unit}", ratio, f.goal or "", met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(bench: str, figures: list[Figure]) -> Path:
    """Ratios filled, the table printed, the JSON written: the end of every bench's main."""
    with_ratios(figures)
    print(format_table(figures), flush=True)
    path = write_figures(bench, figures)
    print(f"wrote {path}", flush=True)
    return path
