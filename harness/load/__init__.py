"""The load: simulated MCP clients run by Locust, and the harness's handle on them.

``wire``, ``policy`` and ``settings`` are plain Python; ``user`` and ``locustfile`` run
inside the Locust processes (gevent); ``swarm`` starts those processes from the
asyncio harness. Importing this package imports neither Locust nor gevent.
"""
