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
