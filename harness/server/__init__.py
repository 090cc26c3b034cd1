"""The reference MCP server under test: a small notes service on PostgreSQL.

It is the system under test, not part of the harness: it imports nothing from
the rest of `harness`, runs as its own process (`python -m harness.server`)
and is reached only over HTTP, exactly like a user's own server.
"""
