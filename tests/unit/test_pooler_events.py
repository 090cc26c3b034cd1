"""PgBouncer's log read back into timeline events (``harness.measure.pooler``)."""

from __future__ import annotations

import datetime as dt

from harness.measure.pooler import pooler_events, server_connection_changes

T0 = dt.datetime(2026, 12, 2, 14, 26, 20, tzinfo=dt.UTC)
LOG = """\
2026-12-02 14:26:20.566 UTC [11866] LOG C-0x55c7339ad660: mcp/mcp_app@127.0.0.1:35716 login attempt: db=mcp user=mcp_app tls=no
2026-12-02 14:26:20.583 UTC [11866] LOG S-0x55c7339b4d40: mcp/mcp_app@127.0.0.1:36581 new connection to server (from 127.0.0.1:57746)
2026-12-02 14:26:29.033 UTC [11866] LOG S-0x55c7339b4fa0: mcp/mcp_app@127.0.0.1:36581 closing because: server conn crashed? (age=6s)
2026-12-02 14:26:29.033 UTC [11866] LOG C-0x55c7339ad8c0: mcp/mcp_app@127.0.0.1:35722 closing because: server conn crashed? (age=6s)
2026-12-02 14:26:30.100 UTC [11866] WARNING S-0x55c7339b4fa0: mcp/mcp_app@127.0.0.1:36581 pooler error: server login has been failing
2026-12-02 14:26:33.250 UTC [11866] LOG S-0x55c7339b5200: mcp/mcp_app@127.0.0.1:36581 new connection to server (from 127.0.0.1:57772)
2026-12-02 14:26:37.500 UTC [11866] LOG S-0x55c7339b5460: mcp/mcp_app@127.0.0.1:36581 new connection to server (from 127.0.0.1:57782)
"""


def t_of(wall: dt.datetime) -> float:
    return (wall - T0).total_seconds()


def test_server_lines_only_with_their_reason() -> None:
    changes = server_connection_changes(LOG.splitlines())
    assert [(c.opened, c.reason) for c in changes] == [
        (True, None),
        (False, "server conn crashed?"),
        (True, None),
        (True, None),
    ]
    assert changes[1].wall == T0 + dt.timedelta(seconds=9.033)


def test_lost_connected_again_and_through_the_moved_endpoint() -> None:
    changes = server_connection_changes(LOG.splitlines())
    events = pooler_events(changes, t_of, t_fault_s=8.0, moves_s=[2.0, 15.0])
    assert events == [
        (9.033, "pgbouncer: lost a server connection (server conn crashed?)"),
        (13.25, "pgbouncer: connected to the database again"),
        (17.5, "pgbouncer: connected through the moved endpoint"),
    ]


def test_nothing_before_the_fault_counts() -> None:
    changes = server_connection_changes(LOG.splitlines())
    assert pooler_events(changes, t_of, t_fault_s=20.0) == []
