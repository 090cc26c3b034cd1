"""What every built-in step acts on (``RunbookContext``), and the words their records
share."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from harness import Say
from harness.config import IntegrityCheck, Scenario
from harness.runbook.engine import (
    MONOTONIC_CLOCK,
    Clock,
)
from harness.stack import Stack

log = logging.getLogger(__name__)


NO_ADMIN = (
    "the server has no admin endpoint the harness knows (a user's server; the reference "
    "server has one)"
)
NOT_MEASURED = "not measured"
"""How a check's detail begins when it could not look (no metrics, no checks)."""
DEFAULT_RESTORE_TIMEOUT_S = 300.0


def _log_say(text: str) -> None:
    log.info("%s", text)


@dataclass
class RunbookContext:
    """What every built-in step acts on; the caller builds it (``for_scenario`` from a
    scenario). ``say`` prints progress lines (a console, a log); ``clock`` is what the
    rate checks sleep on between two samples."""

    stack: Stack
    say: Say = _log_say
    integrity_checks: Sequence[IntegrityCheck] = ()
    """The invariants ``IntegrityViolations`` runs when it is given none of its own."""
    restore_timeout_s: float = DEFAULT_RESTORE_TIMEOUT_S
    """Bound of a restore of ``IntegrityViolations`` that sets none of its own."""
    http_timeout_s: float = 2.0
    """Bound of each request to a server's /metrics or admin endpoint."""
    clock: Clock = MONOTONIC_CLOCK

    @classmethod
    def for_scenario(cls, stack: Stack, scenario: Scenario, say: Say = _log_say) -> RunbookContext:
        """The scenario's integrity checks (the reference server's when it names none) and
        restore timeout."""
        restore = scenario.recovery.restore
        return cls(
            stack,
            say,
            integrity_checks=scenario.integrity_checks,
            restore_timeout_s=restore.timeout if restore is not None else DEFAULT_RESTORE_TIMEOUT_S,
        )
