"""The pytest plugin: a team's own resilience tests against the harness's stack.

Installed with the package (entry point ``pytest11: mcp_harness``), it gives tests a
running stack (``mcp_stack``), Locust MCP clients on it (``mcp_swarm``), faults
(``chaos``) and a write ledger (``mcp_ledger``)::

    def test_survives_primary_loss(mcp_stack, mcp_swarm, chaos):
        with mcp_swarm(users=500) as swarm:
            chaos.kill_primary()
            assert swarm.wait_recovered(timeout=30).reconnect_success_rate > 0.99

``plugin`` is the pytest side (options, marker, fixtures) and imports nothing heavy:
a test run that asks for none of these fixtures starts nothing and pays nothing.
The modules it loads on demand are one per concept: ``stack`` (the session's stack
and the event loop it runs on), ``swarm`` (the clients and what they measured),
``chaos`` (faults), ``ledger`` (lost writes) and ``case`` (what one test's fixtures
share).
"""
