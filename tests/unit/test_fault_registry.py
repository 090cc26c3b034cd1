"""The fault registry: every kind a scenario can name has exactly one injector, and a
backend is asked what it can inject through the stack's own interface."""

from __future__ import annotations

import asyncio
import time
import typing
from typing import Any

import pytest

from harness.chaos import FaultContext, FaultRecord, run_fault
from harness.chaos.base import INJECTORS
from harness.config import BACKEND_FAULTS, FAULT_KINDS, Fault, Scenario, ToxicFault
from harness.stack import StackError


def test_every_fault_kind_has_one_injector_and_every_injector_a_kind() -> None:
    assert set(INJECTORS) == set(FAULT_KINDS)
    models = typing.get_args(typing.get_args(Fault)[0])
    assert {typing.get_args(m.model_fields["kind"].annotation)[0] for m in models} == set(
        FAULT_KINDS
    )
    assert {kind for kinds in BACKEND_FAULTS.values() for kind in kinds} == set(FAULT_KINDS)


class ToxicOnlyStack:
    """The injector's view of a stack that only runs Toxiproxy faults; records calls."""

    backend = "local"
    fault_kinds = ("toxic",)

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.toxiproxy = self

    def add_toxic(self, proxy: str, kind: str, **options: Any) -> None:
        self.calls.append(f"add {options['name']} on {proxy}")

    def toxics(self, proxy: str) -> list[Any]:
        return [type("Toxic", (), {"name": c.split()[1]}) for c in self.calls if "add" in c]

    def remove_toxic(self, proxy: str, name: str) -> None:
        self.calls.append(f"remove {name} from {proxy}")


def fire(fault: Any, stack: Any, index: int = 3) -> tuple[FaultRecord, list[str]]:
    record = FaultRecord.planned(fault)
    events: list[tuple[float, str]] = []
    context = FaultContext(stack, Scenario(name="s"), time.monotonic(), index, events, print)
    asyncio.run(run_fault(fault, record, context))
    return record, [label for _, label in events]


def test_a_toxic_is_confirmed_from_the_proxy_listing_and_removed_after_its_duration() -> None:
    stack = ToxicOnlyStack()
    fault = ToxicFault(kind="toxic", at=0, duration=0.05, proxy="pg-primary", type="latency")
    record, events = fire(fault, stack)
    name = "latency-downstream-3"
    assert stack.calls == [f"add {name} on pg-primary", f"remove {name} from pg-primary"]
    assert record.confirmed and record.target == "pg-primary"
    assert record.t_fault_s is not None and record.t_end_s is not None
    assert record.t_end_s >= 0.05  # its duration counts from its scheduled time
    assert events == [
        f"toxic {name} on pg-primary (confirmed=True)",
        f"toxic {name} removed from pg-primary",
    ]


def test_a_kind_the_backend_cannot_inject_is_refused_before_anything_fires() -> None:
    stack = ToxicOnlyStack()
    fault = Scenario.model_validate(
        {"name": "s", "faults": [{"kind": "proxy_down", "at": 0, "proxy": "mcp"}]}
    ).faults[0]
    with pytest.raises(StackError, match="the local backend cannot inject it"):
        fire(fault, stack)
    assert stack.calls == []
