"""The files a run leaves next to its result.json: junit.xml, summary.md, report.html,
metrics.prom.

Each is rendered from the result alone, so ``mcp-harness report`` can write them again
from a stored result.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.report.html import report_html
from harness.report.junit import junit_xml
from harness.report.openmetrics import openmetrics_text
from harness.report.result import write_atomically
from harness.report.summary import summary_markdown

JUNIT_FILE = "junit.xml"
SUMMARY_FILE = "summary.md"
REPORT_FILE = "report.html"
METRICS_FILE = "metrics.prom"
__all__ = [
    "JUNIT_FILE",
    "METRICS_FILE",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "write_atomically",
    "write_outputs",
]


def write_outputs(result_dir: Path, result: dict[str, Any]) -> list[Path]:
    """Write junit.xml, summary.md, report.html and metrics.prom into ``result_dir``; their
    paths."""
    result_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_atomically(result_dir / JUNIT_FILE, junit_xml(result)),
        write_atomically(result_dir / SUMMARY_FILE, summary_markdown(result)),
        write_atomically(result_dir / REPORT_FILE, report_html(result)),
        write_atomically(result_dir / METRICS_FILE, openmetrics_text(result)),
    ]
