"""The MCP client: streamable-HTTP framing and judging (``wire``), what makes a write
tool's result an acknowledgement (``acks``), the ledger's writes (``writes``), and the
asyncio transport (``async_client``).

One client for every part that speaks MCP: the Locust users (under gevent, with their
own transport over ``wire``), the probes, the fault that calls a damaging tool, the
pytest plugin and the benches. ``wire``, ``acks`` and ``writes`` are plain Python and
import neither Locust nor gevent nor an HTTP library.
"""
