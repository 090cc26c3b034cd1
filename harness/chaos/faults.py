"""One function per fault kind, and the schedule step that fires, confirms and undoes it."""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from harness.config import (
    BadDeployment,
    CallTool,
    Fault,
    KillPrimary,
    KillServer,
    Partition,
    ProxyDown,
    Scenario,
    ToxicFault,
)
from harness.load.async_client import call_tool_once
from harness.stack import Stack, StackError

Say = Callable[[str], None]


class PartitionCut(Protocol):
    """What a stack returns for a container cut off its network."""

    @property
    def container(self) -> str: ...
    @property
    def confirmed(self) -> bool: ...
    @property
    def t_confirmed(self) -> float: ...


@runtime_checkable
class Partitionable(Protocol):
    """A stack whose parts sit on a network it can cut (the docker backend)."""

    async def partition(self, target: str) -> Any: ...

    async def heal_partition(self, result: Any) -> bool: ...


@dataclass
class FaultRecord:
    """What a fault did: when it was confirmed (seconds from the start of the load)."""

    kind: str
    target: str
    at_s: float
    t_fault_s: float | None = None
    t_started_s: float | None = None
    """When the injector began the fault (its confirmation comes later): clients may break
    from this moment on, and those breaks belong to the fault."""
    confirmed: bool = False
    t_end_s: float | None = None
    detail: str = ""
    killed_port: int | None = None
    damage: dict[str, list[str]] | None = None
    """What a damaging tool call says it did (id lists by kind): the ground truth the
    integrity checker's findings are compared with."""

    @classmethod
    def planned(cls, fault: Fault) -> FaultRecord:
        return cls(fault.kind, _target(fault), fault.at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "at_s": self.at_s,
            "t_fault_s": self.t_fault_s,
            "t_started_s": self.t_started_s,
            "confirmed": self.confirmed,
            "t_end_s": self.t_end_s,
            "detail": self.detail,
            **(
                {"damage": {kind: len(ids) for kind, ids in self.damage.items()}}
                if self.damage is not None
                else {}
            ),
        }


def _target(fault: Fault) -> str:
    if isinstance(fault, KillPrimary):
        return "primary"
    if isinstance(fault, KillServer):
        return f"mcp-server[{fault.instance}]"
    if isinstance(fault, BadDeployment):
        return "mcp-server[all]"
    if isinstance(fault, CallTool):
        return f"tool {fault.tool}"
    if isinstance(fault, Partition):
        return fault.target
    return fault.proxy


async def run_fault(
    fault: Fault,
    index: int,
    record: FaultRecord,
    stack: Stack,
    t0: float,
    scenario: Scenario,
    events: list[tuple[float, str]],
    say: Say,
    before: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait for the fault's time, fire it, confirm it, and undo it when its window ends.
    ``before`` runs just before the fault fires (the restore point of a PITR drill)."""

    def now_s() -> float:
        return time.monotonic() - t0

    def event(label: str) -> None:
        events.append((now_s(), label))
        say(f"t={now_s():.2f}s {label}")

    await asyncio.sleep(max(0.0, t0 + fault.at - time.monotonic()))
    if before is not None:
        await before()
    record.t_started_s = now_s()
    if isinstance(fault, BadDeployment):
        await _bad_deployment(fault, record, stack, t0, event)
        return
    if isinstance(fault, CallTool):
        await _call_tool(fault, record, stack, scenario, now_s, event)
        return
    if isinstance(fault, Partition):
        await _partition(fault, record, stack, t0, event)
        return
    if isinstance(fault, KillPrimary):
        record.killed_port = stack.current_primary_port
        killed = await stack.kill_primary()
        record.t_fault_s, record.confirmed = killed.t_confirmed - t0, killed.confirmed
        record.detail = (
            f"SIGKILL to {len(killed.pids)} processes of the cluster on port {record.killed_port}"
        )
        event(f"kill_primary ({record.detail}; confirmed={killed.confirmed})")
        if scenario.recovery.promote_after is not None:
            await asyncio.sleep(scenario.recovery.promote_after)
            started = now_s()
            await stack.promote_replica()
            event(f"replica promoted (took {now_s() - started:.2f} s)")
        return
    if isinstance(fault, KillServer):
        instances = (
            list(range(scenario.server.instances)) if fault.instance == "all" else [fault.instance]
        )
        kills = [await stack.kill_server(i) for i in instances]
        record.t_fault_s = max(k.t_confirmed for k in kills) - t0
        record.confirmed = all(k.confirmed for k in kills)
        record.detail = (
            f"SIGKILL to MCP server instance(s) {instances} (pids {[k.pids[0] for k in kills]})"
        )
        event(f"kill_server {instances} (confirmed={record.confirmed})")
        if fault.restart_after is not None:
            await asyncio.sleep(fault.restart_after)
            started = now_s()
            await asyncio.gather(*(stack.restart_server(i) for i in instances))
            record.t_end_s = now_s()
            event(f"server {instances} restarted and ready (took {record.t_end_s - started:.2f} s)")
        return
    toxiproxy = stack.toxiproxy
    if isinstance(fault, ToxicFault):
        name = f"{fault.type}-{fault.stream}-{index}"
        await asyncio.to_thread(
            toxiproxy.add_toxic,
            fault.proxy,
            fault.type,
            name=name,
            stream=fault.stream,
            toxicity=fault.toxicity,
            attributes=dict(fault.attributes),
        )
        listed = await asyncio.to_thread(toxiproxy.toxics, fault.proxy)
        record.confirmed = any(t.name == name for t in listed)
        record.t_fault_s = now_s()
        record.detail = (
            f"{fault.type} {fault.stream} {dict(fault.attributes)} toxicity {fault.toxicity:g}"
        )
        event(f"toxic {name} on {fault.proxy} (confirmed={record.confirmed})")
        if fault.duration is not None:
            await asyncio.sleep(max(0.0, t0 + fault.at + fault.duration - time.monotonic()))
            await asyncio.to_thread(toxiproxy.remove_toxic, fault.proxy, name)
            record.t_end_s = now_s()
            event(f"toxic {name} removed from {fault.proxy}")
        return
    if isinstance(fault, ProxyDown):
        await asyncio.to_thread(toxiproxy.update_proxy, fault.proxy, enabled=False)
        state = await asyncio.to_thread(toxiproxy.proxy, fault.proxy)
        record.confirmed = not state.enabled
        record.t_fault_s = now_s()
        record.detail = "proxy disabled: connections dropped, new ones refused"
        event(f"proxy {fault.proxy} down (confirmed={record.confirmed})")
        if fault.duration is not None:
            await asyncio.sleep(max(0.0, t0 + fault.at + fault.duration - time.monotonic()))
            await asyncio.to_thread(toxiproxy.update_proxy, fault.proxy, enabled=True)
            record.t_end_s = now_s()
            event(f"proxy {fault.proxy} up")


async def _bad_deployment(
    fault: BadDeployment, record: FaultRecord, stack: Stack, t0: float, event: Say
) -> None:
    """Roll every instance to the faulty release; confirmed when all of them serve it.
    ``t_fault`` is when its first process started: it can damage data from then on, and
    an incident time any later would count its first bad writes as before the incident.
    ``duration`` later (from t_fault: a slow rollout does not shorten the faulty window)
    the good release is rolled back in."""
    release = shlex.join(fault.command) if fault.command else f"--fault-mode {fault.fault_mode}"
    rollout = await stack.deploy_release(
        command=fault.command, fault_mode=None if fault.command else fault.fault_mode
    )
    record.t_fault_s, record.confirmed = rollout.first_started - t0, True
    record.detail = (
        f"faulty release ({release}) started at t={record.t_fault_s:.2f}s, serving on every "
        f"instance {rollout.duration_s:.2f} s later"
    )
    event(f"bad_deployment: {record.detail}")
    if fault.duration is not None:
        await asyncio.sleep(max(0.0, rollout.first_started + fault.duration - time.monotonic()))
        rollout = await stack.deploy_release()
        record.t_end_s = time.monotonic() - t0
        event(f"good release back on every instance (rollout {rollout.duration_s:.2f} s)")


async def _call_tool(
    fault: CallTool,
    record: FaultRecord,
    stack: Stack,
    scenario: Scenario,
    now_s: Callable[[], float],
    event: Say,
) -> None:
    """One tools/call through the ``mcp`` proxy; confirmed when it succeeds. ``t_fault`` is
    when the call was sent: its damage may commit any time before the reply, and an
    incident dated at the reply would let a check that ran meanwhile count the damage as
    baseline. A result with id lists (the reference server's compact_notes) is kept as
    the damage done."""
    sent_s = now_s()
    outcome = await call_tool_once(
        stack.endpoints.mcp_url,
        fault.tool,
        dict(fault.arguments),
        protocol=scenario.load.protocol,
        headers=scenario.server.resolved_headers(),
    )
    record.t_fault_s, record.confirmed = sent_s, outcome.ok
    structured = outcome.result.get("structuredContent")
    if isinstance(structured, dict):
        record.damage = {
            kind: [str(i) for i in ids] for kind, ids in structured.items() if isinstance(ids, list)
        } or None
    if outcome.ok:
        done = ", ".join(f"{k} {len(v)}" for k, v in (record.damage or {}).items())
        record.detail = f"{fault.tool} returned" + (f": {done}" if done else "")
    else:
        record.detail = f"{fault.tool} failed: {outcome.error_kind} {outcome.detail}"
    event(f"call_tool {record.detail} (confirmed={record.confirmed})")


async def _partition(
    fault: Partition, record: FaultRecord, stack: Stack, t0: float, event: Say
) -> None:
    """Cut the target's container off the run's network; confirmed when the engine no
    longer lists the network for it. ``duration`` later it is connected again."""
    if not isinstance(stack, Partitionable):
        raise StackError(
            "partition needs --backend docker: this backend's parts share one loopback "
            "interface (cut a hop with proxy_down instead)"
        )
    cut: PartitionCut = await stack.partition(fault.target)
    record.t_fault_s, record.confirmed = cut.t_confirmed - t0, cut.confirmed
    record.detail = f"container {cut.container} disconnected from the run's network"
    event(f"partition {fault.target} ({record.detail}; confirmed={cut.confirmed})")
    if fault.duration is not None:
        await asyncio.sleep(max(0.0, cut.t_confirmed + fault.duration - time.monotonic()))
        healed = await stack.heal_partition(cut)
        record.t_end_s = time.monotonic() - t0
        event(f"partition {fault.target} healed (reconnected={healed})")
