"""Process kills: the primary's whole cluster (a dead machine), or MCP server instances."""

from __future__ import annotations

import asyncio
import time

from harness.chaos.base import Injector, register
from harness.config import KillPrimary, KillServer


@register
class KillPrimaryInjector(Injector[KillPrimary]):
    """SIGKILL every process of the primary's cluster; confirmed when none remains. Its
    end is the promotion ``recovery.promote_after`` later (the stand-in for failure
    detection), if the scenario asks for one; under Patroni, the machine booting again
    ``restart_after`` later."""

    kind = "kill_primary"

    @staticmethod
    def target(fault: KillPrimary) -> str:
        return "primary"

    async def inject(self) -> float | None:
        record, stack, t0 = self.record, self.ctx.stack, self.ctx.t0
        record.killed_port = stack.current_primary_port
        killed = await stack.kill_primary()
        record.t_fault_s, record.confirmed = killed.t_confirmed - t0, killed.confirmed
        record.detail = (
            f"SIGKILL to {len(killed.pids)} processes of the cluster on port {record.killed_port}"
        )
        self.ctx.event(f"kill_primary ({record.detail}; confirmed={killed.confirmed})")
        after = self.fault.restart_after or self.ctx.scenario.recovery.promote_after
        return None if after is None else time.monotonic() + after

    async def end(self) -> None:
        started = self.ctx.now_s()
        if self.fault.restart_after is not None:
            await self.ctx.stack.restart_killed_primary()
            self.record.t_end_s = self.ctx.now_s()
            self.ctx.event("the killed primary's machine booted again (its Patroni rejoins it)")
            return
        await self.ctx.stack.promote_replica()
        self.ctx.event(f"replica promoted (took {self.ctx.now_s() - started:.2f} s)")


@register
class KillServerInjector(Injector[KillServer]):
    """SIGKILL one MCP server instance (or all); confirmed when they are gone. Ended by
    starting them again ``restart_after`` later, if set."""

    kind = "kill_server"

    @staticmethod
    def target(fault: KillServer) -> str:
        return f"mcp-server[{fault.instance}]"

    @property
    def instances(self) -> list[int]:
        if self.fault.instance == "all":
            return list(range(self.ctx.scenario.server.instances))
        return [self.fault.instance]

    async def inject(self) -> float | None:
        record, instances = self.record, self.instances
        kills = [await self.ctx.stack.kill_server(i) for i in instances]
        record.t_fault_s = max(k.t_confirmed for k in kills) - self.ctx.t0
        record.confirmed = all(k.confirmed for k in kills)
        record.detail = (
            f"SIGKILL to MCP server instance(s) {instances} (pids {[k.pids[0] for k in kills]})"
        )
        self.ctx.event(f"kill_server {instances} (confirmed={record.confirmed})")
        restart_after = self.fault.restart_after
        return None if restart_after is None else time.monotonic() + restart_after

    async def end(self) -> None:
        started, instances = self.ctx.now_s(), self.instances
        await asyncio.gather(*(self.ctx.stack.restart_server(i) for i in instances))
        self.record.t_end_s = self.ctx.now_s()
        self.ctx.event(
            f"server {instances} restarted and ready (took {self.record.t_end_s - started:.2f} s)"
        )
