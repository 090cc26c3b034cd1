"""junit.xml, summary.md and report.html rendered from result.json alone.

Minimal result dicts cover each verdict; tests/data/result_sample.json is a real run
(bad_deployment: a missed objective, a restore, reconnects, seconds without tools/list).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from harness.report.html import report_html
from harness.report.junit import junit_xml
from harness.report.outputs import write_outputs
from harness.report.summary import objective_message, summary_markdown, unit_of, with_unit
from tests.helpers import series_in_dom

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "result_sample.json"
TIME_SERIES = (
    "requests_per_s",
    "errors_per_s",
    "tools_list_p50_ms",
    "tools_list_p99_ms",
    "sessions_open",
    "initialize_per_s",
)


def objective(metric: str, bound: str, target: float, measured: float | None, verdict: str) -> dict:
    return {
        "metric": metric,
        "bound": bound,
        "target": target,
        "measured": measured,
        "measured_at_least": None,
        "verdict": verdict,
    }


def result(verdict: str, objectives: list[dict], **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema_version": 1,
        "run_id": "20260101T000000Z-primary_kill-abcd",
        "scenario": {"name": "primary_kill", "load": {"users": 50}},
        "backend": "local",
        "seed": 7,
        "started_at": "2026-01-01T00:00:00+00:00",
        "duration_s": 40.5,
        "complete": True,
        "interrupted": False,
        "verdict": verdict,
        "faults": [
            {
                "kind": "kill_primary",
                "target": "primary",
                "at_s": 10.0,
                "t_fault_s": 10.02,
                "confirmed": True,
                "t_end_s": None,
                "detail": "SIGKILL",
            }
        ],
        "phases": [
            {"name": "baseline", "start_s": 0.0, "end_s": 10.02},
            {"name": "disruption", "start_s": 10.02, "end_s": 12.5},
            {"name": "storm", "start_s": 12.5, "end_s": 12.5},
            {"name": "recovered", "start_s": 12.5, "end_s": 40.0},
        ],
        "metrics": {
            "failover_s": 2.48,
            "rto_s": 2.48,
            "reconnect": {"clients_broken": 0, "clients_reconnected": 0, "success_rate": None},
            "tools_list_latency_ms": {"recovered": {"p50": 3.1, "p99": 180.2, "count": 900}},
            "writes": {"acknowledged": 100, "lost": 0, "altered": 0, "rpo_rows": 0, "rpo_s": 0.0},
        },
        "timeline": [
            {
                "t_s": t,
                "requests_per_s": 100 + t,
                "errors_per_s": {"connect_reset": 3} if t == 2 else {},
                "tools_list_p50_ms": None if t == 1 else 2.5,
                "tools_list_p99_ms": None if t in (1, 3) else 150.0 + t,
                "sessions_open": 50,
                "events": [],
            }
            for t in range(5)
        ],
        "objectives": objectives,
        "environment": {"postgres": "18.6", "machine": {"cpus": 2}},
        "notes": [],
        "doubts": [],
    }
    return base | extra


PASSING = result(
    "pass",
    [
        objective("failover_s", "max", 10.0, 2.48, "met"),
        objective("tools_list_latency_ms.recovered.p99", "max", 500.0, 180.2, "met"),
    ],
)
FAILING = result(
    "fail",
    [
        objective("failover_s", "max", 10.0, 12.3, "missed"),
        objective("reconnect.success_rate", "min", 0.995, 0.97, "missed"),
        objective("writes.rpo_rows", "max", 0.0, 0.0, "met"),
    ],
)
INCONCLUSIVE = result(
    "inconclusive",
    [
        objective("failover_s", "max", 10.0, None, "not_measured"),
        objective("writes.rpo_rows", "max", 0.0, 0.0, "met"),
    ],
    faults=[
        {
            "kind": "kill_primary",
            "target": "primary",
            "at_s": 10.0,
            "t_fault_s": None,
            "confirmed": False,
            "t_end_s": None,
            "detail": "",
        }
    ],
)


def sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE.read_text())
    return data


def suite_of(xml_text: str) -> tuple[ET.Element, ET.Element]:
    root = ET.fromstring(xml_text)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return root, suites[0]


def counts(element: ET.Element) -> tuple[int, int, int, int]:
    return tuple(int(element.get(k, "-1")) for k in ("tests", "failures", "errors", "skipped"))  # type: ignore[return-value]


def cases(suite: ET.Element) -> dict[str, ET.Element]:
    return {c.get("name", ""): c for c in suite.findall("testcase")}


# --- units and messages


@pytest.mark.parametrize(
    ("metric", "unit"),
    [
        ("failover_s", "s"),
        ("tools_list_latency_ms.recovered.p99", "ms"),
        ("reconnect.time_to_reconnect_s.p99", "s"),
        ("reconnect.success_rate", "%"),
        ("requests.error_rate", "%"),
        ("writes.rpo_rows", ""),
        ("integrity.after.violations", ""),
    ],
)
def test_unit_comes_from_the_metric_name(metric: str, unit: str) -> None:
    assert unit_of(metric) == unit


def test_values_are_shown_with_their_unit() -> None:
    assert with_unit(0.995, "%") == "99.5%"
    assert with_unit(2.318810256, "s") == "2.32 s"
    assert with_unit(1995.775, "ms") == "1,996 ms"
    assert with_unit(5.0, "s") == "5 s"
    assert with_unit(None, "s") == "—"


def test_a_missed_objective_says_measured_against_target() -> None:
    assert objective_message(FAILING["objectives"][0]) == "measured 12.3 > target 10 (seconds)"
    assert objective_message(FAILING["objectives"][1]) == "measured 97 < target 99.5 (%)"
    never = objective("failover_s", "max", 10.0, None, "missed") | {"measured_at_least": 31.0}
    assert "31" in objective_message(never) and "target 10" in objective_message(never)


# --- junit.xml


def test_junit_of_a_passing_run_has_no_failure_nor_error() -> None:
    root, suite = suite_of(junit_xml(PASSING))
    assert suite.get("name") == "mcp-harness.primary_kill"
    assert counts(suite) == counts(root) == (3, 0, 0, 0)  # two objectives, one fault
    assert suite.get("time") == "40.500"
    assert suite.get("timestamp") == PASSING["started_at"]
    suite_properties = suite.find("properties")
    assert suite_properties is not None
    props = {p.get("name"): p.get("value") for p in suite_properties.iter("property")}
    assert props["run_id"] == PASSING["run_id"]
    assert props["verdict"] == "pass"
    assert props["backend"] == "local" and props["seed"] == "7"
    names = cases(suite)
    assert set(names) == {
        "failover_s",
        "tools_list_latency_ms.recovered.p99",
        "fault kill_primary confirmed",
    }
    assert names["failover_s"].get("classname") == "objectives.primary_kill"
    assert "run conclusive" not in names
    # a met objective shows its figure too, not only green
    met = {p.get("name"): p.get("value") for p in names["failover_s"].iter("property")}
    assert met["verdict"] == "met" and met["measured"].endswith(" s") and met["target"]
    assert "measured" in (names["failover_s"].findtext("system-out") or "")


def test_junit_of_a_failing_run_carries_measured_and_target() -> None:
    root, suite = suite_of(junit_xml(FAILING))
    assert counts(suite) == counts(root) == (4, 2, 0, 0)
    failure = cases(suite)["failover_s"].find("failure")
    assert failure is not None
    assert failure.get("message") == "measured 12.3 > target 10 (seconds)"
    assert "12.3 s" in (failure.text or "") and "≤ 10 s" in (failure.text or "")
    rate = cases(suite)["reconnect.success_rate"].find("failure")
    assert rate is not None and rate.get("message") == "measured 97 < target 99.5 (%)"
    assert cases(suite)["writes.rpo_rows"].find("failure") is None


def test_junit_of_an_inconclusive_run_is_never_green() -> None:
    root, suite = suite_of(junit_xml(INCONCLUSIVE))
    # not measured -> error, unconfirmed fault -> error; both show the cause already
    assert counts(suite) == counts(root) == (3, 0, 2, 0)
    error = cases(suite)["failover_s"].find("error")
    assert error is not None and error.get("message", "").startswith("not measured")
    fault = cases(suite)["fault kill_primary confirmed"].find("error")
    assert fault is not None and "not confirmed" in fault.get("message", "")


def test_junit_inconclusive_without_an_objective_to_blame_adds_run_conclusive() -> None:
    doubt = "the load generator was saturated <74% of seconds> & more"
    doubted = result(
        "inconclusive",
        PASSING["objectives"],
        doubts=[doubt],
        notes=["a note", doubt],
    )
    root, suite = suite_of(junit_xml(doubted))
    assert counts(suite) == counts(root) == (4, 0, 1, 0)
    error = cases(suite)["run conclusive"].find("error")
    assert error is not None
    assert doubt in error.get("message", "")
    assert "note: a note" in (error.text or "")
    interrupted = result(
        "inconclusive", PASSING["objectives"], complete=False, interrupted=True, notes=["stopped"]
    )
    _, suite = suite_of(junit_xml(interrupted))
    error = cases(suite)["run conclusive"].find("error")
    assert error is not None and "did not finish" in error.get("message", "")


def test_junit_of_the_sample_run() -> None:
    data = sample()
    root, suite = suite_of(junit_xml(data))
    missed = [o for o in data["objectives"] if o["verdict"] == "missed"]
    assert counts(suite) == (len(data["objectives"]) + len(data["faults"]), len(missed), 0, 0)
    failure = cases(suite)["writes.rpo_rows"].find("failure")
    assert failure is not None and failure.get("message") == "measured 1 > target 0 (count)"


# --- summary.md


def test_summary_has_verdict_faults_objectives_table_and_figures() -> None:
    text = summary_markdown(FAILING)
    assert text.startswith("## mcp-harness: primary_kill — **FAIL**")
    assert "**Faults:** kill_primary on primary took effect at t=10.0 s" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[:2] == ["| objective | target | measured | verdict |", "| --- | --- | --- | --- |"]
    assert rows[2] == "| failover_s | ≤ 10 s | 12.3 s | **missed** |"
    assert rows[3] == "| reconnect.success_rate | ≥ 99.5% | 97% | **missed** |"
    assert rows[4] == "| writes.rpo_rows | ≤ 0 | 0 | met |"
    assert len(rows) == 2 + len(FAILING["objectives"])
    assert "- failover_s: 12.3 s" not in text  # key figures show metrics, not objectives
    assert "- failover_s: 2.48 s" in text
    assert "- tools/list p99, recovered: 180 ms (n=900)" in text


def test_summary_escapes_pipes_in_cells_and_lists_doubts() -> None:
    odd = result(
        "inconclusive",
        [objective("a|b_s", "max", 1.0, None, "not_measured")],
        doubts=["probe | failed"],
        notes=["probe | failed", "other note"],
    )
    text = summary_markdown(odd)
    assert "| a\\|b_s | ≤ 1 | — | **not measured** |" in text
    assert "**INCONCLUSIVE**" in text
    doubts = text.split("**Doubts**")[1].split("**Notes**")
    assert "- probe | failed" in doubts[0]
    assert "- other note" in doubts[1] and "probe" not in doubts[1]


def test_summary_of_the_sample_shows_restore_and_rpo() -> None:
    text = summary_markdown(sample())
    assert "- restore total_s: 2.06 s" in text
    assert "- RPO (rpo_rows / rpo_s): 1 row / 0.0542 s" in text
    assert "- reconnect (back / broken): 120 / 120 (100%)" in text


# --- report.html


class _Refs(HTMLParser):
    """Every attribute value and every tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.values: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.values += [v or "" for _, v in attrs]


def assert_self_contained(page: str) -> None:
    refs = _Refs()
    refs.feed(page)
    remote = [v for v in refs.values if v.strip().lower().startswith(("http:", "https:", "//"))]
    assert remote == []
    assert not refs.tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert "url(" not in page and "@import" not in page


def expected_points(timeline: list[dict[str, Any]]) -> dict[str, int]:
    """The count rule of the charts: one point per timeline row with a value (not null)."""
    return {name: sum(1 for row in timeline if row.get(name) is not None) for name in TIME_SERIES}


def test_html_is_self_contained_even_when_notes_hold_urls_and_markup() -> None:
    noted = result(
        "pass",
        PASSING["objectives"],
        notes=["see https://example.invalid/x <script>alert(1)</script>"],
    )
    page = report_html(noted)
    assert_self_contained(page)
    assert "&lt;script&gt;" in page


@pytest.mark.parametrize("name", ["passing", "failing", "inconclusive", "sample"])
def test_html_series_have_one_point_per_value(name: str) -> None:
    data = {"passing": PASSING, "failing": FAILING, "inconclusive": INCONCLUSIVE}.get(
        name
    ) or sample()
    page = report_html(data)
    assert_self_contained(page)
    drawn = series_in_dom(page)
    for series, count in expected_points(data["timeline"]).items():
        assert drawn[series] == (count, count), series


def test_html_skips_null_points_and_counts_only_values() -> None:
    drawn = series_in_dom(report_html(PASSING))
    assert drawn["requests_per_s"] == (5, 5)
    assert drawn["tools_list_p50_ms"] == (4, 4)  # t=1 has no tools/list
    assert drawn["tools_list_p99_ms"] == (3, 3)  # nor t=3
    data = sample()
    nulls = sum(1 for row in data["timeline"] if row["tools_list_p99_ms"] is None)
    assert nulls > 0
    assert series_in_dom(report_html(data))["tools_list_p99_ms"][1] == len(data["timeline"]) - nulls


def test_html_reads_in_order_with_verdict_objectives_and_sections() -> None:
    page = report_html(sample())
    order = [
        'class="verdict">FAIL<',
        'id="what-happened"',
        'id="objectives"',
        'id="load"',
        'id="latency"',
        'id="reconnect"',
        'id="restore"',
        'id="figures"',
        'id="environment"',
        'id="notes"',
    ]
    positions = [page.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert '<tr class="missed"><td><code>writes.rpo_rows</code>' in page
    assert page.count('<tr class="met">') == 5
    assert page.count('class="marker"') >= 2 * 5  # five markers on each time chart
    assert 'data-phase="disruption"' in page
    drawn = series_in_dom(page)
    assert drawn["reconnect_time_s"] == (4, 4)
    assert drawn["restore_steps"] == (7, 7)


def test_html_says_when_no_client_broke_and_uses_a_histogram_when_present() -> None:
    page = report_html(PASSING)
    assert "No client&#x27;s session broke" in page
    assert "reconnect_time_s" not in series_in_dom(page)
    data = sample()
    data["metrics"]["reconnect"]["histogram"] = [[0.5, 40], [1.0, 50], [5.0, 25], [10.0, 5]]
    assert series_in_dom(report_html(data))["reconnect_histogram"] == (4, 4)


def test_html_survives_an_empty_result() -> None:
    page = report_html({"verdict": "inconclusive"})
    assert "INCONCLUSIVE" in page
    assert series_in_dom(page) == {}


# --- outputs


def test_write_outputs_writes_its_files_next_to_result_json(tmp_path: Path) -> None:
    paths = write_outputs(tmp_path, sample())
    assert [p.name for p in paths] == ["junit.xml", "summary.md", "report.html", "metrics.prom"]
    assert all(p.parent == tmp_path and p.stat().st_size > 0 for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    ET.parse(paths[0])
    assert paths[1].read_text().startswith("## mcp-harness: bad_deployment")
    assert paths[2].read_text().startswith("<!DOCTYPE html>")


def test_every_request_type_is_in_the_report_and_the_summary() -> None:
    """Locust's table in report.html and summary.md: each MCP method and each tool with
    its count, failures and percentiles; failed requests by kind in plain sight."""
    from harness.report.html import report_html
    from harness.report.summary import summary_markdown

    sample = Path(__file__).resolve().parents[1] / "data" / "result_v2_switchover_patroni.json"
    result = json.loads(sample.read_text())
    by_type = result["metrics"]["requests"]["by_type"]
    assert {"tools/list", "initialize", "tools/call:create_note"} <= set(by_type)
    html, summary = report_html(result), summary_markdown(result)
    section = html[html.index('<section id="requests">') :]
    section = section[: section.index("</section>")]
    create = by_type["tools/call:create_note"]
    for name in by_type:
        assert f"<td>{name}</td>" in section, name
    assert f"{create['count']}</td>" in section and "Failed requests by kind" in section
    for kind in result["metrics"]["requests"]["errors_by_kind"]:
        assert kind in section, kind
    assert "**Requests by type**" in summary
    row = next(line for line in summary.splitlines() if "| tools/call:create" in line)
    assert f"| {create['count']} | {create['failures']} (" in row, row


def test_a_fault_with_a_window_takes_its_time_in_junit() -> None:
    windowed = {
        **PASSING,
        "faults": [
            {
                "kind": "proxy_down",
                "target": "mcp",
                "at_s": 5.0,
                "t_fault_s": 5.0,
                "t_end_s": 7.5,
                "confirmed": True,
            }
        ],
    }
    _, suite = suite_of(junit_xml(windowed))
    assert cases(suite)["fault proxy_down confirmed"].get("time") == "2.500"
    assert cases(suite)["failover_s"].get("time") == "0"  # an objective takes no time


def test_html_shows_sessions_runbook_steps_fault_ends_and_why_a_phase_is_empty() -> None:
    from harness.report.html import TimeChart, markers_of

    timeline = [
        {**row, "initialize_per_s": 40 if row["t_s"] == 3 else 0, "sessions_open": 10 * row["t_s"]}
        for row in PASSING["timeline"]
    ]
    restart = {
        "kind": "kill_server",
        "target": "server",
        "at_s": 0.0,
        "t_fault_s": 0.0,
        "confirmed": True,
        "t_end_s": 3.0,
        "detail": "SIGKILL, restarted after 3 s",
    }
    runbook = {
        "executions": [
            {
                "t_s": 2.0,
                "trigger": [{"step": "primary_connectivity", "detail": "no primary"}],
                "gaps": ["replica_lag"],
                "steps": [
                    {
                        "name": "primary_connectivity",
                        "outcome": "fixed",
                        "start_s": 2.0,
                        "duration_s": 1.2,
                    },
                    {"name": "replica_lag", "outcome": "alert", "start_s": 3.2, "duration_s": 0.1},
                ],
            }
        ]
    }
    data = result(
        "pass",
        PASSING["objectives"],
        timeline=timeline,
        faults=[restart],
        metrics={**PASSING["metrics"], "runbook": runbook},
    )
    page = report_html(data)
    drawn = series_in_dom(page)
    assert drawn["sessions_open"] == (5, 5) and drawn["initialize_per_s"] == (5, 5)
    assert drawn["runbook_steps"] == (2, 2)
    assert 'id="sessions"' in page and 'id="runbook"' in page
    assert "#1 primary_connectivity" in page and "fixed, 1.2 s" in page and "alert" in page
    assert "triggered by primary_connectivity (no primary); gaps: replica_lag" in page
    labels = [m.label for m in markers_of(data)]
    assert labels == ["kill_server", "server restarted", "runbook #1"]
    assert "kill_server lifted" not in page
    assert "storm: none (new sessions were under twice the baseline" in page
    chart = TimeChart(3.0, markers_of(data), data["phases"])  # the restart at the right edge
    anchors = {m.label: chart.label_anchor(m)[0] for m in chart.markers}
    assert anchors == {"kill_server": "middle", "runbook #1": "middle", "server restarted": "end"}
