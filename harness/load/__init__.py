"""The load: simulated MCP clients run by Locust, and the harness's handle on them.

``policy`` and ``settings`` are plain Python; ``user`` and ``locustfile`` run inside the
Locust processes (gevent); ``swarm`` starts those processes from the asyncio harness.
The MCP framing they use is ``harness.mcp_client``. Importing this package imports
neither Locust nor gevent.
"""
