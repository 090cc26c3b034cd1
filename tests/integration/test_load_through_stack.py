"""A real Locust swarm (master + worker) of 100 MCP clients through the stack's `mcp` proxy."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from harness.load.settings import LoadSettings
from harness.load.swarm import Swarm, SwarmShape
from harness.stack.local import LocalStack

USERS = 100


def test_hundred_clients_list_tools_through_the_mcp_proxy(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    mcp = urlsplit(local_stack.endpoints.mcp_url)
    assert mcp.port == local_stack.toxiproxy.proxy("mcp").listen_port
    settings = LoadSettings(
        records_path=str(tmp_path / "records.jsonl"),
        think_time_s=(0.5, 1.0),
        tool_mix={"tools/list": 3.0, "create_note": 1.0, "get_note": 1.0},
        id_prefix="swarm-test",
    )
    swarm = Swarm(
        local_stack.registry,
        settings,
        SwarmShape(base_url=f"http://{mcp.netloc}", users=USERS, spawn_rate=50, run_time_s=12),
    )
    swarm.start()
    try:
        assert swarm.wait(60) is not None, "the swarm did not stop by itself"
    finally:
        swarm.stop()
    records = swarm.tail().read_new()
    requests = [r for r in records if r["k"] == "req"]
    ok = Counter(r["m"] for r in requests if r["ok"])
    users_initialized = {r["u"] for r in requests if r["m"] == "initialize" and r["ok"]}
    assert len(users_initialized) == USERS
    assert ok["tools/list"] > USERS  # the first listing of each user plus the mix
    assert ok["tools/call:create_note"] > 0
    assert sum(1 for r in requests if not r["ok"]) / len(requests) < 0.01
    assert records[-1]["k"] == "stop"
    acked = [r for r in records if r["k"] == "write"]
    assert acked and all(len(r["sum"]) == 64 for r in acked)
