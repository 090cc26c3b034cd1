"""Resilience tests written with the mcp-harness pytest plugin.

Installing mcp-harness installs the plugin; these tests run as they are:

    pytest examples/test_my_server.py                          # the reference server
    pytest examples/test_my_server.py --mcp-scenario my.yaml   # your server (its server: section)
    pytest examples/test_my_server.py --mcp-backend docker     # on a runner with Docker

One stack serves the three tests. The primary kill comes last: it leaves the stack
without a standby, so a test after it would get a fresh stack (a few seconds more).
"""

import pytest

pytestmark = pytest.mark.resilience


def test_tools_list_survives_a_slow_database(mcp_stack, mcp_swarm, chaos):
    """Half a second on every database round trip: tools/list does not touch the
    database, so it must keep working while the database tools slow down."""
    with mcp_swarm(users=300) as swarm:
        with chaos.toxic("pg-primary", "latency", latency=500):
            slow = swarm.observe(seconds=5)
    assert slow.count("tools/list") > 0, slow
    assert slow.errors("tools/list") == 0, slow
    # tools/list does not wait for the database; a write waits at least one round trip
    assert slow.percentile_ms("tools/list", 50) < 500, slow
    assert slow.percentile_ms("tools/call:create_note", 50) >= 500, slow


def test_server_restart_loses_no_acknowledged_write(mcp_stack, mcp_swarm, chaos, mcp_ledger):
    """Every session dies with the server; the clients start new ones, and every write
    the server acknowledged before it died is still in the database."""
    with mcp_swarm(users=300) as swarm:
        chaos.kill_server(restart_after=1.0)
        recovery = swarm.wait_recovered(timeout=30)
    assert recovery.recovered, recovery
    assert recovery.clients_broken > 0, recovery
    assert recovery.reconnect_success_rate == 1.0, recovery
    writes = mcp_ledger.check()
    assert writes.acknowledged > 0 and writes.lost == 0 and writes.altered == 0, writes


def test_survives_primary_loss(mcp_stack, mcp_swarm, chaos, mcp_ledger):
    """The database primary dies and the replica is promoted: writes through MCP work
    again within 10 s, and no write the server acknowledged is lost. (A reconnect rate
    would not do: a primary loss breaks no MCP session, so it is 1.0 whatever happens.)"""
    with mcp_swarm(users=500) as swarm:
        chaos.kill_primary()
        recovery = swarm.wait_recovered(timeout=30)
    assert recovery.recovered and recovery.failover_s < 10, recovery  # writes work again
    writes = mcp_ledger.check()
    assert writes.acknowledged > 0 and writes.lost == 0, writes  # none acknowledged lost
