"""Every output of a run stays what it is whatever the run carries: the server under test
and the scenario file can put ANSI and OSC escapes, NUL, Rich markup, HTML, a CDATA end
and a DSN with its password into names, notes, tool errors, fault details and error
kinds. junit.xml must still parse, summary.md and report.html must not turn any of it into
markup, the console and the live display must neither crash nor send an escape to the
terminal, and no output may show the password."""

from __future__ import annotations

import copy
import io
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from harness.report.console import render
from harness.report.drill import drill_html, drill_markdown, write_drill
from harness.report.html import report_html
from harness.report.junit import junit_xml
from harness.report.live import LiveProgress
from harness.report.outputs import write_outputs
from harness.report.series import render_series, series_markdown, write_series
from harness.report.summary import summary_markdown

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "result_sample.json"

PASSWORD = "Hunter2-Sup3rSecret"
DSN = f"postgresql://app:{PASSWORD}@db.internal:5432/notes"
ESC_SGR = "\x1b[31m"
ESC_OSC = "\x1b]8;;http://x\x07"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
HOSTILE = (
    f"{ESC_SGR}red{ESC_SGR[:-3]}[0m {ESC_OSC}link{ESC_OSC[:4]}\x07 nul\x00 [/bold] [bold]x "
    f"{SCRIPT} {IMG} ]]> {DSN} host=db password={PASSWORD} user=app "
    f"Authorization: Bearer {PASSWORD} *em* _em_ `tick` [a](javascript:alert(1)) | & &lt;"
)
"""Every hostile thing at once, as a server string would carry it."""


def hostile_result() -> dict[str, Any]:
    """The sample run (a restore, reconnects, a missed objective) with hostile strings in
    everything that comes from the run or the scenario."""
    result: dict[str, Any] = json.loads(SAMPLE.read_text())
    result["scenario"]["name"] = f"bad{HOSTILE}"
    result["scenario"]["description"] = f"description {HOSTILE}"
    result["notes"] = [f"note {HOSTILE}", f"the server log tail:\n{HOSTILE}\n{HOSTILE}"]
    result["doubts"] = [f"doubt {HOSTILE}"]
    result["notes"].append(result["doubts"][0])
    result["faults"][0]["detail"] = f"tool error: {HOSTILE}"
    result["faults"][0]["target"] = f"mcp-server {HOSTILE}"
    result["faults"].append({**result["faults"][0], "confirmed": False, "kind": f"k{HOSTILE}"})
    requests = result["metrics"]["requests"]
    requests["errors_by_kind"][f"tool_error {HOSTILE}"] = 7
    result["metrics"]["restore"]["error"] = f"restore tool error: {HOSTILE}"
    result["metrics"]["integrity"]["after"]["checks"]["checksum"]["error"] = f"check {HOSTILE}"
    for row in result["timeline"][10:14]:
        row["errors_per_s"] = {f"tool_error {HOSTILE}": 3, **(row.get("errors_per_s") or {})}
        row["events"] = [f"server event {HOSTILE}"]
    not_measured = {**result["objectives"][0], "verdict": "not_measured", "measured": None}
    not_measured["reason"] = f"the probe failed: {HOSTILE}"
    result["objectives"].append(not_measured)
    result["verdict"] = "fail"
    return result


def no_secret_nor_control(text: str) -> None:
    assert PASSWORD not in text
    for forbidden in ("\x1b", "\x00", "\x07"):
        assert forbidden not in text, repr(forbidden)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs |= {name for name, _ in attrs}
        self.links += [value or "" for name, value in attrs if name in ("href", "src")]


def tags_of(page: str) -> Tags:
    parser = Tags()
    parser.feed(page)
    parser.close()
    return parser


# --- junit.xml


def test_junit_is_well_formed_whatever_the_run_carries() -> None:
    text = junit_xml(hostile_result())
    root = ET.fromstring(text)  # the old code: "not well-formed (invalid token)"
    no_secret_nor_control(text)
    suite = root.find("testsuite")
    assert suite is not None
    assert "<script>alert(1)</script>" in (suite.get("name") or "")  # text, not markup
    assert "\\x1b[31m" in (suite.get("name") or "")  # the escape shown, not sent
    errors = [e for e in root.iter("error") if "not confirmed" in (e.get("message") or "")]
    assert errors and "tool error:" in (errors[0].text or "")
    assert "]]>" in (errors[0].text or "")
    system_out = suite.find("system-out")
    assert system_out is not None and "password=***" in (system_out.text or "")


def test_junit_of_a_hostile_series_is_well_formed(tmp_path: Path) -> None:
    series = {
        "run_id": f"series{HOSTILE}",
        "series": True,
        "repeat": 2,
        "scenario": {"name": HOSTILE},
        "verdict": "inconclusive",
        "runs": [{"run_id": HOSTILE, "dir": HOSTILE, "verdict": "pass"}],
        "objectives": [],
        "faults": [],
        "metrics": {},
        "notes": [HOSTILE],
        "doubts": [HOSTILE],
    }
    paths = write_series(tmp_path, series)
    for path in paths:
        no_secret_nor_control(path.read_text())
    ET.parse(tmp_path / "junit.xml")
    assert "<script" not in series_markdown(series) and "<img" not in series_markdown(series)


# --- summary.md


def test_summary_renders_run_strings_as_text_not_markup() -> None:
    text = summary_markdown(hostile_result())
    no_secret_nor_control(text)
    assert "<script" not in text and "<img" not in text
    # the harness's own formatting is kept
    assert text.startswith("## mcp-harness: bad")
    assert "**FAIL**" in text and "| objective | target | measured | verdict |" in text
    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)
    page = tags_of(rendered)
    assert page.tags <= {"h2", "p", "strong", "table", "thead", "tbody", "tr", "th", "td"} | {
        "ul",
        "li",
        "code",
    }
    assert not page.attrs - {"style"}  # no href, no src, no onerror from the data
    assert "<script>alert(1)</script>" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered  # shown, as text
    notes = text.split("**Notes**")[1].strip().splitlines()
    assert len(notes) == 2 and all(
        line.startswith("- note ") or "log tail" in line for line in notes
    )


def test_summary_code_spans_and_cells_hold() -> None:
    result = hostile_result()
    result["run_id"] = f"run`{SCRIPT}"
    result["objectives"][0]["metric"] = f"a|b{SCRIPT}"
    text = summary_markdown(result)
    assert "<script" not in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    rendered = MarkdownIt("commonmark").enable("table").render("\n".join(table))
    header_cells = 4
    assert all(row.count("<td") == header_cells for row in rendered.split("<tr>")[2:])


# --- report.html


def test_html_escapes_everything_from_the_run() -> None:
    page = report_html(hostile_result())
    no_secret_nor_control(page)
    assert SCRIPT not in page and "<img" not in page
    tags = tags_of(page)
    assert not tags.tags & {"script", "img", "iframe", "a", "object", "embed"}
    assert not {a for a in tags.attrs if a.startswith("on")}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "password=***" in page


# --- console and live display


@pytest.mark.parametrize("terminal", [False, True])
def test_console_render_neither_crashes_nor_sends_escapes(terminal: bool) -> None:
    out = io.StringIO()
    console = (
        Console(file=out, width=160, force_terminal=True, color_system="standard")
        if terminal
        else Console(file=out, width=160)
    )
    render(hostile_result(), console)  # the old code: MarkupError on "[/bold]"
    text = out.getvalue()
    assert PASSWORD not in text and "\x00" not in text and "\x07" not in text
    assert "\x1b]" not in text  # no OSC (hyperlinks, titles) from the data
    if terminal:
        assert "\x1b[31mred" not in text  # the data's own SGR is not sent
    else:
        assert "\x1b" not in text
    assert "[/bold]" in text and "<script>alert(1)</script>" in text  # shown as text


def test_live_progress_shows_hostile_events_as_text() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160)
    status = {
        "t_s": 12.0,
        "phase": f"disruption{HOSTILE}",
        "users": 10,
        "users_target": 20,
        "requests_per_s": 40,
        "errors_per_s": {f"tool_error {HOSTILE}": 3},
        "events": [f"server event {HOSTILE}"],
    }
    with LiveProgress(console, total_s=60) as live:
        live.event(f"t=1.00s stack event {HOSTILE}")
        live.tick(status)
    text = out.getvalue()
    no_secret_nor_control(text)
    assert "[/bold]" in text and "stack event" in text


def test_live_panel_on_a_terminal_does_not_crash_on_markup() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=True, color_system="standard")
    status = {
        "t_s": 12.0,
        "phase": "disruption",
        "users": 10,
        "users_target": 20,
        "requests_per_s": 40,
        "errors_per_s": {f"tool_error {HOSTILE}": 3},
        "events": [f"server event {HOSTILE}"],
    }
    with LiveProgress(console, total_s=60) as live:
        live.tick(status)  # the old code: MarkupError when the panel is drawn
    text = out.getvalue()
    assert PASSWORD not in text and "\x1b]" not in text and "\x07" not in text


def test_series_and_comparison_tables_do_not_crash_on_markup() -> None:
    from harness.report.compare import render as compare

    series = {
        "repeat": 2,
        "verdict": f"fail{HOSTILE}",
        "objectives": [
            {
                "metric": f"rto_s{HOSTILE}",
                "bound": "max",
                "target": 1.0,
                "values": [1.0, 2.0],
                "min": 1.0,
                "median": 1.5,
                "max": 2.0,
                "verdict": f"missed{HOSTILE}",
                "flaky": True,
                "met_in": "1 of 2",
            }
        ],
    }
    out = io.StringIO()
    render_series(series, Console(file=out, width=200))
    result = hostile_result()
    compare([result, copy.deepcopy(result)], [f"a{HOSTILE}", "b"], Console(file=out, width=400))
    no_secret_nor_control(out.getvalue())
    assert "[/bold]" in out.getvalue()


# --- every file, and the drill's


def test_no_file_written_for_a_run_shows_the_password(tmp_path: Path) -> None:
    paths = write_outputs(tmp_path, hostile_result())
    for path in paths:
        no_secret_nor_control(path.read_text())
    ET.parse(tmp_path / "junit.xml")


def hostile_drill() -> dict[str, Any]:
    return {
        "drill_id": f"d1{HOSTILE}",
        "verdict": "fail",
        "started_at": HOSTILE,
        "duration_s": 10.0,
        "exit_code": 1,
        "targets": {"rto_s": 30, "rpo_s": 1, "rpo_rows": 0},
        "scenarios": [
            {
                "name": f"s{HOSTILE}",
                "dir": "javascript:alert(1)//",
                "verdict": "fail",
                "rto": {"target_s": 30, "measured_s": 45},
                "rpo": {"target_s": 1, "target_rows": 0, "measured_s": 0, "measured_rows": 0},
                "runbook_steps": [
                    {
                        "execution": 1,
                        "name": f"step{HOSTILE}",
                        "outcome": "failed",
                        "start_s": 1.0,
                        "duration_s": 2.0,
                        "detail": f"detail {HOSTILE}",
                    }
                ],
                "restore_steps": [{"name": f"restore{HOSTILE}", "duration_s": 1.0}],
                "restore_total_s": 1.0,
            }
        ],
        "gaps": [{"scenario": HOSTILE, "kind": "x", "what": HOSTILE, "detail": HOSTILE}],
    }


def test_drill_outputs_escape_and_redact(tmp_path: Path) -> None:
    drill = hostile_drill()
    md = drill_markdown(drill)
    no_secret_nor_control(md)
    assert "<script" not in md and "<img" not in md
    rendered = tags_of(MarkdownIt("commonmark").enable("table").render(md))
    assert not rendered.tags & {"script", "img"}
    assert rendered.links == ["javascript%3Aalert%281%29///report.html"]  # relative, inert
    page = drill_html(drill)
    no_secret_nor_control(page)
    assert "<script>" not in page and "<img" not in page
    assert 'href="javascript:' not in page and 'href="javascript%3A' in page
    for path in write_drill(tmp_path, drill):
        assert PASSWORD not in path.read_text()
