"""A damaging tool call (the data-corruption fault)."""

from __future__ import annotations

from harness.chaos.base import Injector, register
from harness.config import CallTool
from harness.mcp_client.async_client import call_tool_once


@register
class CallToolInjector(Injector[CallTool]):
    """One tools/call through the ``mcp`` proxy; confirmed when it succeeds. ``t_fault`` is
    when the call was sent: its damage may commit any time before the reply, and an
    incident dated at the reply would let a check that ran meanwhile count the damage as
    baseline. A result with id lists (the reference server's compact_notes) is kept as
    the damage done."""

    kind = "call_tool"

    @staticmethod
    def target(fault: CallTool) -> str:
        return f"tool {fault.tool}"

    async def inject(self) -> float | None:
        fault, record, scenario = self.fault, self.record, self.ctx.scenario
        sent_s = self.ctx.now_s()
        outcome = await call_tool_once(
            self.ctx.stack.endpoints.mcp_url,
            fault.tool,
            dict(fault.arguments),
            protocol=scenario.load.protocol,
            headers=scenario.server.resolved_headers(),
        )
        record.t_fault_s, record.confirmed = sent_s, outcome.ok
        structured = outcome.result.get("structuredContent")
        if isinstance(structured, dict):
            record.damage = {
                kind: [str(i) for i in ids]
                for kind, ids in structured.items()
                if isinstance(ids, list)
            } or None
        if outcome.ok:
            done = ", ".join(f"{k} {len(v)}" for k, v in (record.damage or {}).items())
            record.detail = f"{fault.tool} returned" + (f": {done}" if done else "")
        else:
            record.detail = f"{fault.tool} failed: {outcome.error_kind} {outcome.detail}"
        self.ctx.event(f"call_tool {record.detail} (confirmed={record.confirmed})")
        return None
