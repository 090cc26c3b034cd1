"""mcp-harness: chaos and load testing of MCP servers backed by PostgreSQL."""

__version__ = "0.1.0"

from collections.abc import Callable

Say = Callable[[str], None]
"""A callback that shows one progress line to a person (a console, a log)."""
