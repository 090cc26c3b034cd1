"""Connects only to the first host of a multi-host DSN: no failover to a promoted replica.

The server was configured the way many are, with one host and port: it takes the first
host of ``$DATABASE_URL`` and drops the rest, with ``target_session_attrs``. Failures are
reported properly (tool errors), but when that host's primary dies every write fails until
the process is reconfigured: the promoted replica, the second host, is never tried.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if not __package__:  # run as a script (server.command): import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.gallery.common import Notes, build, database_url, serve  # noqa: E402


def first_host_only(dsn: str) -> str:
    """``dsn`` with its first host alone and without ``target_session_attrs``."""
    parts = urlsplit(dsn)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "target_session_attrs"]
    netloc = f"{userinfo}{at}{hosts.split(',')[0]}"
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


if __name__ == "__main__":
    notes = Notes(first_host_only(database_url()))
    serve(build(notes, "single-host-pool"), notes)
