"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from harness.shipped import SCENARIOS_DIR


def harness_process_pids() -> set[int]:
    """Processes of the kinds the harness starts (postmasters, toxiproxy, MCP server, Locust)."""
    markers = (b"pginstall/bin/postgres", b"toxiproxy-server", b"harness.server", b"locustfile.py")
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(m in cmdline for m in markers):
            pids.add(int(entry.name))
    return pids


def processes_naming(path: Path) -> list[dict]:
    """Live processes whose command line names ``path`` (a run's directory)."""
    import psutil

    return [
        p.info
        for p in psutil.process_iter(["pid", "cmdline", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE
        and str(path) in " ".join(p.info["cmdline"] or [])
    ]


def run_scenario(
    tmp_path: Path, scenario_yaml: str, *flags: str, timeout_s: float = 240
) -> tuple[int, dict, str]:
    """Run ``mcp-harness run`` on a scenario text as a user would; (exit code, result.json, output)."""
    import json
    import subprocess
    import sys

    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(scenario_yaml)
    out = tmp_path / "results"
    cli = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=Path(__file__).resolve().parents[1],
    )
    (run_dir,) = out.iterdir()
    return (
        cli.returncode,
        json.loads((run_dir / "result.json").read_text()),
        cli.stdout + cli.stderr,
    )


def shipped_scenario(name: str, *, fault_at_s: float, windows: dict[str, str]) -> dict:
    """``scenarios/<name>.yaml`` as data, its one fault moved to ``fault_at_s`` and its
    windows replaced: the shipped topology at a size a test sets on top."""
    import yaml

    data = yaml.safe_load((SCENARIOS_DIR / f"{name}.yaml").read_text())
    (fault,) = data["faults"]
    fault["at"] = f"{fault_at_s:g}s"
    data["windows"] = windows
    return data


def assert_run_left_no_process(run_dir: Path, names: set[str]) -> None:
    """The run started ``names`` (and more), and none of its processes is still alive."""
    import json

    from harness.stack.processes import is_alive

    inventory = json.loads((run_dir / "logs" / "processes.json").read_text())
    assert names <= {p["name"] for p in inventory}, inventory
    assert not [p for p in inventory if is_alive(p["pid"], p["start_ticks"])], inventory


def assert_tool_corruption_found_exactly(result: dict) -> None:
    """tool_corrupts_state: the checks found exactly the damage the tool reported, and the
    ledger's altered and lost sets equal the damaged acknowledged ids; nothing restored."""
    metrics = result["metrics"]
    (fault,) = result["faults"]
    assert fault["confirmed"], fault
    integrity = metrics["integrity"]
    assert integrity["injected"]["updated"] > 0 and integrity["injected"]["deleted"] > 0
    assert integrity["missed"] == 0, integrity
    assert integrity["detected"] == {
        k: v for k, v in integrity["injected"].items() if k in integrity["detected"]
    }
    assert integrity["ledger_agrees"]["exact"] is True, integrity["ledger_agrees"]
    assert integrity["baseline"]["violations"] == 0
    assert metrics["time_to_detect_s"] is not None and metrics["time_to_detect_s"] < 3
    assert metrics["restore"] is None
    assert metrics["writes"]["rpo_rows"] > 0


def junit_cases(path: Path) -> dict[str, str]:
    """testcase name -> outcome (passed, failure, error), after checking the counts."""
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    cases = {}
    for case in suite.iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error")), "passed")
        cases[case.get("name", "")] = outcome
    assert int(suite.get("tests", -1)) == len(cases)
    assert int(suite.get("failures", -1)) == sum(v == "failure" for v in cases.values())
    assert int(suite.get("errors", -1)) == sum(v == "error" for v in cases.values())
    return cases


@dataclass
class FakeClock:
    """The runbook's clock (``now()``, ``async sleep()``) for unit tests: time moves only
    when something sleeps, and every sleep is noted. A sleep still yields to the event
    loop, so a step that never answers can be timed out."""

    t: float = 100.0
    slept: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


def uncatalogued(result: dict) -> list[str]:
    """Paths of the numeric figures of ``result``'s metrics that harness/catalog.py does not
    list: a figure added without its catalog entry."""
    from harness.catalog import metric
    from harness.objectives import lookup, metric_paths

    metrics = result.get("metrics") or {}
    return [
        path
        for path in metric_paths(metrics)
        if lookup(metrics, path) is not None and metric(path) is None
    ]


class _SeriesReader(HTMLParser):
    """Reads a rendered page (or a browser's DOM of it): each series' declared and drawn points."""

    def __init__(self) -> None:
        super().__init__()
        self.series: dict[str, tuple[int, int]] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        name = found.get("data-series")
        if "pt" in (found.get("class") or "").split():
            owner = next((n for _, n in reversed(self._open) if n is not None), None)
            if owner is not None:
                declared, drawn = self.series[owner]
                self.series[owner] = (declared, drawn + 1)
        self._open.append((tag, name))
        if name is not None:
            self.series[name] = (int(found.get("data-points") or -1), 0)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                return


def series_in_dom(document: str) -> dict[str, tuple[int, int]]:
    """{series: (data-points, points drawn inside its group)} of a report page: the two must
    agree, and match the values result.json holds for that series."""
    reader = _SeriesReader()
    reader.feed(document)
    reader.close()
    return reader.series
