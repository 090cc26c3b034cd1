"""mcp-harness: chaos and load testing of MCP servers backed by PostgreSQL."""

__version__ = "0.1.0"
