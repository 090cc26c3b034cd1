"""What the pooler did to its server connections, read from PgBouncer's own log after
the run: when it lost them and when it connected again (timeline events, not figures:
its stamps are wall-clock, mapped onto the run's axis with the run's one offset)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

SERVER_LINE = re.compile(
    r"^(?P<wall>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[\d+\] LOG S-0x[0-9a-f]+: \S+ "
    r"(?:(?P<opened>new connection to server).*|closing because: (?P<reason>.*?)(?: \(age=.*)?)$"
)
"""A server-side line of PgBouncer's log (``log_connections``/``log_disconnections``)."""


@dataclass(frozen=True)
class ServerConnectionChange:
    wall: dt.datetime
    opened: bool
    reason: str | None = None
    """Why PgBouncer closed it (its words), for a close."""


def server_connection_changes(lines: Iterable[str]) -> list[ServerConnectionChange]:
    """PgBouncer's server connections opened and closed, in log order."""
    changes = []
    for line in lines:
        match = SERVER_LINE.match(line.rstrip("\n"))
        if match is None:
            continue
        wall = dt.datetime.strptime(match["wall"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=dt.UTC)
        changes.append(ServerConnectionChange(wall, bool(match["opened"]), match["reason"]))
    return changes


def pooler_events(
    changes: Sequence[ServerConnectionChange],
    t_of: Callable[[dt.datetime], float],
    t_fault_s: float,
    moves_s: Sequence[float] = (),
) -> list[tuple[float, str]]:
    """Timeline events after the fault: the first server connection PgBouncer closed,
    the first it opened after that (connected again, wherever the endpoint pointed), and
    the first it opened after each move of the writer endpoint."""
    timed = [(t_of(c.wall), c) for c in changes]
    events: list[tuple[float, str]] = []
    closed = next(((t, c) for t, c in timed if t >= t_fault_s and not c.opened), None)
    if closed is not None:
        t_closed, change = closed
        events.append((t_closed, f"pgbouncer: lost a server connection ({change.reason})"))
        again = next((t for t, c in timed if t >= t_closed and c.opened), None)
        if again is not None:
            events.append((again, "pgbouncer: connected to the database again"))
    for moved in sorted(m for m in moves_s if m >= t_fault_s):
        first = next((t for t, c in timed if t >= moved and c.opened), None)
        if first is not None:
            events.append((first, "pgbouncer: connected through the moved endpoint"))
    return sorted(events)
