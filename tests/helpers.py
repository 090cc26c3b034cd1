"""Helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path


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
