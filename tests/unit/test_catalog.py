"""The metric catalog is the one list of figures: docs/measurements.md's table is generated from it,
every path an objective may name comes from it, and every figure of real runs (the
result files under tests/data, written by this version's runs) is in it."""

from __future__ import annotations

import json
from pathlib import Path

from harness.catalog import BY_PATH, CATALOG, METRIC_PATHS, markdown_table, unit_suffix
from harness.config import Objective
from harness.objectives import metric_paths
from harness.report.compare import COMPARED, direction
from tests.helpers import uncatalogued

REPO = Path(__file__).resolve().parents[2]


def test_the_documented_table_is_the_catalog() -> None:
    page = (REPO / "docs" / "measurements.md").read_text()
    begin, end = "<!-- metric catalog: begin -->\n", "<!-- metric catalog: end -->"
    table = page[page.index(begin) + len(begin) : page.index(end)]
    assert table == markdown_table(), (
        "docs/measurements.md's metric table differs from harness/catalog.py"
    )


def test_every_path_is_unique_and_an_objective_may_name_it() -> None:
    expanded = [path for m in CATALOG for path in m.paths()]
    assert len(expanded) == len(set(expanded)) == len(METRIC_PATHS)
    for path in METRIC_PATHS:
        bound = "0.5" if BY_PATH[path].unit == "fraction" else "1"
        assert Objective(metric=path, max=bound).path == path


def test_compare_reads_which_way_is_worse_from_the_catalog() -> None:
    assert set(COMPARED) <= set(METRIC_PATHS)
    assert direction("failover_s") == "lower"
    assert direction("reconnect.success_rate") == "higher"
    assert direction("reconnect.clients_broken") == "neutral"
    assert unit_suffix("tools_list_latency_ms.storm.p99") == " ms"
    assert unit_suffix("tools_list_latency_ms.storm.count") == ""


SAMPLES = sorted((REPO / "tests" / "data").glob("result_v2_*.json"))
"""Real results of this version's shipped scenarios at reduced size (docs/tests.md)."""


def sample_results() -> list[dict]:
    assert SAMPLES, "no result_v2_*.json under tests/data"
    return [json.loads(sample.read_text()) for sample in SAMPLES]


def test_every_figure_of_a_real_run_is_in_the_catalog() -> None:
    missing = sorted({path for result in sample_results() for path in uncatalogued(result)})
    assert not missing, f"figures missing from harness/catalog.py: {missing}"


def test_every_catalog_entry_is_produced_by_some_real_run() -> None:
    produced = {path for result in sample_results() for path in metric_paths(result["metrics"])}
    never = [m.path for m in CATALOG if not any(m.matches(path) for path in produced)]
    assert not never, f"catalogued but produced by none of {[s.name for s in SAMPLES]}: {never}"
