"""A network partition: a container cut off the run's network (docker backend)."""

from __future__ import annotations

import time

from harness.chaos.base import Injector, register
from harness.config import Partition
from harness.stack import PartitionCut


@register
class PartitionInjector(Injector[Partition]):
    """Cut the target's container off the run's network; confirmed when the engine no
    longer lists the network for it. ``duration`` later it is connected again."""

    kind = "partition"
    cut: PartitionCut | None = None

    @staticmethod
    def target(fault: Partition) -> str:
        return fault.target

    async def inject(self) -> float | None:
        record = self.record
        cut = self.cut = await self.ctx.stack.partition(self.fault.target)
        record.t_fault_s, record.confirmed = cut.t_confirmed - self.ctx.t0, cut.confirmed
        record.detail = f"container {cut.container} disconnected from the run's network"
        self.ctx.event(
            f"partition {self.fault.target} ({record.detail}; confirmed={cut.confirmed})"
        )
        duration = self.fault.duration
        return None if duration is None else cut.t_confirmed + duration

    async def end(self) -> None:
        assert self.cut is not None
        healed = await self.ctx.stack.heal_partition(self.cut)
        self.record.t_end_s = time.monotonic() - self.ctx.t0
        self.ctx.event(f"partition {self.fault.target} healed (reconnected={healed})")
