"""The disaster-recovery runbook as code: ordered steps of check / fix / timeout.

``engine`` runs a runbook and records every action (``Runbook``, ``Step``,
``FunctionStep``, ``load_runbook``); ``watch`` runs one during a scenario when a step
turns unhealthy; ``steps`` holds the built-in steps (``default_runbook``,
``runbook_for``) with what they act through: ``context``, ``admin`` (the reference
server's admin endpoint) and ``counters`` (rates from /metrics). The engine imports
nothing from the stack or the run; the steps do.
"""

from harness.runbook.engine import (
    DEFAULT_CHECK_TIMEOUT_S,
    DEFAULT_FIX_TIMEOUT_S,
    MONOTONIC_CLOCK,
    OK_OUTCOMES,
    Action,
    ActionOutcome,
    ActionRecord,
    Clock,
    FixFailed,
    FunctionStep,
    Health,
    MonotonicClock,
    Runbook,
    RunbookLoadError,
    RunbookRecord,
    Step,
    StepOutcome,
    StepRecord,
    load_runbook,
)
from harness.runbook.watch import (
    WATCH_COOLDOWN_INTERVALS,
    WATCH_COOLDOWN_MIN_S,
    RunbookWatch,
    describe_execution,
    execution_due,
    first_unhealthy_s,
    fixable_alerts,
    fixed_at_s,
    watch_cooldown_s,
)

__all__ = [
    "DEFAULT_CHECK_TIMEOUT_S",
    "DEFAULT_FIX_TIMEOUT_S",
    "MONOTONIC_CLOCK",
    "OK_OUTCOMES",
    "WATCH_COOLDOWN_INTERVALS",
    "WATCH_COOLDOWN_MIN_S",
    "Action",
    "ActionOutcome",
    "ActionRecord",
    "Clock",
    "FixFailed",
    "FunctionStep",
    "Health",
    "MonotonicClock",
    "Runbook",
    "RunbookLoadError",
    "RunbookRecord",
    "RunbookWatch",
    "Step",
    "StepOutcome",
    "StepRecord",
    "describe_execution",
    "execution_due",
    "first_unhealthy_s",
    "fixable_alerts",
    "fixed_at_s",
    "load_runbook",
    "watch_cooldown_s",
]
