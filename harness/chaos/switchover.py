"""A planned switchover through the failover manager (Patroni's REST API)."""

from __future__ import annotations

from harness.chaos.base import Injector, register
from harness.config import Switchover


@register
class SwitchoverInjector(Injector[Switchover]):
    """Ask Patroni to hand the primary to the replica. The fault starts when it is asked
    (from then on the leader steps down and writes may fail); it is confirmed once the
    stack follows the new leader. Nothing ends it: the old primary comes back as a
    replica by itself."""

    kind = "switchover"

    @staticmethod
    def target(fault: Switchover) -> str:
        return "primary"

    async def inject(self) -> float | None:
        record, t0 = self.record, self.ctx.t0
        record.t_started_s = self.ctx.now_s()
        handover = await self.ctx.stack.switchover(self.fault.timeout)
        record.t_fault_s = handover.requested - t0
        record.confirmed = handover.confirmed
        record.killed_port = handover.old_port
        record.detail = (
            f"switchover from port {handover.old_port} to {handover.new_port} ({handover.detail})"
        )
        self.ctx.event(f"switchover ({record.detail}; confirmed={handover.confirmed})")
        return None
