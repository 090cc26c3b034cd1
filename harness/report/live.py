"""Live progress of a run: phase, users, requests/s, errors, fault events.

An observer: it only reads the status the run hands it. On a terminal it
redraws one panel; elsewhere (CI logs) it prints a line every few seconds.

What it shows comes from the run and the server under test (events, error kinds): it is
redacted, its control characters are shown as escapes (no ANSI or OSC sequence reaches
the terminal) and it goes out as ``Text``, never parsed as Rich markup.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness.report.text import output_console, plain

PLAIN_EVERY_S = 5.0


class LiveProgress:
    def __init__(self, console: Console | None = None, total_s: float | None = None) -> None:
        self.console = console or output_console(stderr=True)
        self.total_s = total_s
        self._live: Live | None = None
        self._last_plain = 0.0

    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=2, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def event(self, message: str) -> None:
        self.console.log(Text(plain(message)), markup=False, highlight=False, emoji=False)

    def tick(self, status: dict[str, Any]) -> None:
        total = f"/{self.total_s:.0f}" if self.total_s else ""
        line = (
            f"t={status['t_s']:.0f}{total} s  phase={status['phase']}  users={status['users']}/{status['users_target']}  "
            f"req/s={status['requests_per_s']}  errors/s={status['errors_per_s']}"
        )
        if self._live is not None:
            table = Table.grid(padding=(0, 2))
            table.add_row(Text("running", style="bold"), Text(plain(line)))
            if status["events"]:
                table.add_row("events", Text(plain(", ".join(map(str, status["events"])))))
            self._live.update(table)
        elif time.monotonic() - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = time.monotonic()
            self.console.print(Text(plain(line)), highlight=False)
