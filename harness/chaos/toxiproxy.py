"""Faults on a Toxiproxy proxy: a toxic (latency, reset, bandwidth, ...) or the proxy
disabled; each confirmed by reading Toxiproxy's state back."""

from __future__ import annotations

import asyncio

from harness.chaos.base import Injector, register
from harness.config import ProxyDown, ToxicFault


def toxic_name(fault: ToxicFault, index: int) -> str:
    """The toxic's name in Toxiproxy: unique per fault of a run."""
    return f"{fault.type}-{fault.stream}-{index}"


@register
class ToxicInjector(Injector[ToxicFault]):
    """Add the toxic; confirmed when the proxy lists it. Removed after ``duration``."""

    kind = "toxic"

    @staticmethod
    def target(fault: ToxicFault) -> str:
        return fault.proxy

    @property
    def name(self) -> str:
        return toxic_name(self.fault, self.ctx.index)

    async def inject(self) -> float | None:
        fault, record, toxiproxy = self.fault, self.record, self.ctx.stack.toxiproxy
        await asyncio.to_thread(
            toxiproxy.add_toxic,
            fault.proxy,
            fault.type,
            name=self.name,
            stream=fault.stream,
            toxicity=fault.toxicity,
            attributes=dict(fault.attributes),
        )
        listed = await asyncio.to_thread(toxiproxy.toxics, fault.proxy)
        record.confirmed = any(t.name == self.name for t in listed)
        record.t_fault_s = self.ctx.now_s()
        record.detail = (
            f"{fault.type} {fault.stream} {dict(fault.attributes)} toxicity {fault.toxicity:g}"
        )
        self.ctx.event(f"toxic {self.name} on {fault.proxy} (confirmed={record.confirmed})")
        return self.scheduled_end()

    async def end(self) -> None:
        toxiproxy = self.ctx.stack.toxiproxy
        await asyncio.to_thread(toxiproxy.remove_toxic, self.fault.proxy, self.name)
        self.record.t_end_s = self.ctx.now_s()
        self.ctx.event(f"toxic {self.name} removed from {self.fault.proxy}")


@register
class ProxyDownInjector(Injector[ProxyDown]):
    """Disable the proxy (connections dropped, new ones refused); confirmed when Toxiproxy
    reports it disabled. Enabled again after ``duration``."""

    kind = "proxy_down"

    @staticmethod
    def target(fault: ProxyDown) -> str:
        return fault.proxy

    async def inject(self) -> float | None:
        proxy, record, toxiproxy = self.fault.proxy, self.record, self.ctx.stack.toxiproxy
        await asyncio.to_thread(toxiproxy.update_proxy, proxy, enabled=False)
        state = await asyncio.to_thread(toxiproxy.proxy, proxy)
        record.confirmed = not state.enabled
        record.t_fault_s = self.ctx.now_s()
        record.detail = "proxy disabled: connections dropped, new ones refused"
        self.ctx.event(f"proxy {proxy} down (confirmed={record.confirmed})")
        return self.scheduled_end()

    async def end(self) -> None:
        toxiproxy = self.ctx.stack.toxiproxy
        await asyncio.to_thread(toxiproxy.update_proxy, self.fault.proxy, enabled=True)
        self.record.t_end_s = self.ctx.now_s()
        self.ctx.event(f"proxy {self.fault.proxy} up")
