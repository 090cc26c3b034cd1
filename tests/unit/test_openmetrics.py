"""metrics.prom: a real run's figures in the OpenMetrics text format, read back by
prometheus_client's own OpenMetrics parser."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from harness.report.openmetrics import metric_name, openmetrics_text
from harness.report.outputs import METRICS_FILE, write_outputs

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "result_v2_primary_kill.json"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_names_are_in_base_units() -> None:
    assert metric_name("failover_s") == ("mcp_harness_failover_seconds", 1.0)
    assert metric_name("tools_list_latency_ms.storm.p99") == (
        "mcp_harness_tools_list_latency_storm_p99_seconds",
        0.001,
    )
    assert metric_name("reconnect.success_rate")[0] == "mcp_harness_reconnect_success_rate_ratio"
    assert metric_name("reconnect.initialize_per_s_peak")[0] == (
        "mcp_harness_reconnect_initialize_peak_per_second"
    )
    assert metric_name("writes.lost_unintended")[0] == "mcp_harness_writes_lost_unintended"


def test_a_runs_exposition_parses_and_carries_its_figures_and_verdicts(tmp_path: Path) -> None:
    result = json.loads(SAMPLE.read_text())
    text = openmetrics_text(result)
    assert text.endswith("# EOF\n")
    got = samples(text)
    scenario = ("scenario", "primary_kill")
    assert got[("mcp_harness_failover_seconds", (scenario,))] == result["metrics"]["failover_s"]
    p99_ms = result["metrics"]["tools_list_latency_ms"]["recovered"]["p99"]
    assert got[("mcp_harness_tools_list_latency_recovered_p99_seconds", (scenario,))] == (
        p99_ms / 1000
    )
    assert got[("mcp_harness_verdict", (scenario, ("verdict", "pass")))] == 1.0
    assert got[("mcp_harness_verdict", (scenario, ("verdict", "fail")))] == 0.0
    key = ("metric", "writes.lost_unintended")
    assert got[("mcp_harness_objective", (key, scenario, ("verdict", "met")))] == 1.0

    failed = copy.deepcopy(result)
    failed["verdict"] = "fail"
    failed["objectives"][0]["verdict"] = "missed"
    got = samples(openmetrics_text(failed))
    assert got[("mcp_harness_verdict", (scenario, ("verdict", "fail")))] == 1.0
    objective = ("metric", failed["objectives"][0]["metric"])
    assert got[("mcp_harness_objective", (objective, scenario, ("verdict", "missed")))] == 1.0

    written = write_outputs(tmp_path, result)
    assert (tmp_path / METRICS_FILE) in written
    assert (tmp_path / METRICS_FILE).read_text() == text
