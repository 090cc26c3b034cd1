"""A bad release rolled out to every server instance, and the good one rolled back."""

from __future__ import annotations

import shlex

from harness.chaos.base import Injector, register
from harness.config import BadDeployment


@register
class BadDeploymentInjector(Injector[BadDeployment]):
    """Roll every instance to the faulty release; confirmed when all of them serve it.
    ``t_fault`` is when its first process started: it can damage data from then on, and
    an incident time any later would count its first bad writes as before the incident.
    ``duration`` later (from t_fault: a slow rollout does not shorten the faulty window)
    the good release is rolled back in."""

    kind = "bad_deployment"

    @staticmethod
    def target(fault: BadDeployment) -> str:
        return "mcp-server[all]"

    async def inject(self) -> float | None:
        fault, record = self.fault, self.record
        release = shlex.join(fault.command) if fault.command else f"--fault-mode {fault.fault_mode}"
        rollout = await self.ctx.stack.deploy_release(
            command=fault.command, fault_mode=None if fault.command else fault.fault_mode
        )
        record.t_fault_s, record.confirmed = rollout.first_started - self.ctx.t0, True
        record.detail = (
            f"faulty release ({release}) started at t={record.t_fault_s:.2f}s, serving on every "
            f"instance {rollout.duration_s:.2f} s later"
        )
        self.ctx.event(f"bad_deployment: {record.detail}")
        return None if fault.duration is None else rollout.first_started + fault.duration

    async def end(self) -> None:
        rollout = await self.ctx.stack.deploy_release()
        self.record.t_end_s = self.ctx.now_s()
        self.ctx.event(f"good release back on every instance (rollout {rollout.duration_s:.2f} s)")
