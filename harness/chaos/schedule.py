"""The schedule step: wait for the fault's time, fire and confirm it, end it later."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from harness.chaos.base import FaultContext, FaultRecord, injector_for
from harness.config import Fault, backend_refusal
from harness.stack import StackError


async def run_fault(
    fault: Fault,
    record: FaultRecord,
    ctx: FaultContext,
    before: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait for the fault's time, fire it, confirm it, and end it when its window ends.
    ``before`` runs just before the fault fires (the restore point of a PITR drill). A
    kind the stack's backend cannot inject is refused (``Stack.fault_kinds``)."""
    refusal = backend_refusal(fault.kind, ctx.stack.backend, ctx.stack.fault_kinds)
    if refusal:
        raise StackError(refusal)
    injector = injector_for(fault, ctx, record)
    await asyncio.sleep(max(0.0, ctx.t0 + fault.at - time.monotonic()))
    if before is not None:
        await before()
    record.t_started_s = ctx.now_s()
    ends_at = await injector.inject()
    if ends_at is not None:
        await asyncio.sleep(max(0.0, ends_at - time.monotonic()))
        await injector.end()
