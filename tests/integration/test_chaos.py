"""Fault injectors against the real Toxiproxy of the shared stack: confirmed, then undone."""

from __future__ import annotations

import asyncio
import time

from harness.chaos import FaultContext, FaultRecord, run_fault
from harness.config import ProxyDown, Scenario, ToxicFault
from harness.stack.local import LocalStack


def fire(
    stack: LocalStack, fault: ToxicFault | ProxyDown, during: object
) -> tuple[FaultRecord, list[tuple[float, str]], object]:
    record = FaultRecord.planned(fault)
    events: list[tuple[float, str]] = []
    seen: dict[str, object] = {}

    async def go() -> None:
        t0 = time.monotonic()
        task = asyncio.create_task(
            run_fault(
                fault,
                record,
                FaultContext(stack, Scenario(name="chaos"), t0, 0, events, lambda _: None),
            )
        )
        await asyncio.sleep(fault.at + 0.3)
        seen["during"] = await asyncio.to_thread(during)  # type: ignore[arg-type]
        await task

    asyncio.run(go())
    return record, events, seen["during"]


def test_a_toxic_is_confirmed_listed_and_removed_after_its_window(local_stack: LocalStack) -> None:
    fault = ToxicFault(
        kind="toxic",
        at=0.1,
        duration=1.0,
        proxy="pg-replica",
        type="latency",
        attributes={"latency": 50, "jitter": 10},
    )
    record, events, during = fire(
        local_stack, fault, lambda: local_stack.toxiproxy.toxics("pg-replica")
    )
    assert record.confirmed and record.t_fault_s is not None and record.t_end_s is not None
    assert 0.9 <= record.t_end_s - record.t_fault_s <= 1.5
    (toxic,) = during  # type: ignore[misc]
    assert (
        toxic.type == "latency"
        and toxic.attributes["latency"] == 50
        and toxic.attributes["jitter"] == 10
    )
    assert local_stack.toxiproxy.toxics("pg-replica") == []
    assert [label.split()[0] for _, label in events] == ["toxic", "toxic"]


def test_proxy_down_refuses_connections_for_its_window(local_stack: LocalStack) -> None:
    import socket

    port = local_stack.toxiproxy.proxy("pg-replica").listen_port

    def connect_refused() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return False
        except OSError:
            return True

    fault = ProxyDown(kind="proxy_down", at=0.1, duration=0.8, proxy="pg-replica")
    record, _, refused = fire(local_stack, fault, connect_refused)
    assert record.confirmed and refused is True
    assert local_stack.toxiproxy.proxy("pg-replica").enabled
    assert not connect_refused()
