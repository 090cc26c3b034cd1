"""The one protocol every fault kind follows (in the spirit of Jepsen's nemesis):
``inject`` fires the fault and confirms it took effect; ``end`` undoes it (removes a
toxic, enables a proxy, restarts a server, promotes the replica) when ``ends_at``
comes. Injectors register by kind; ``injector_for`` finds one."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from harness import Say
from harness.config import Fault, Scenario
from harness.stack import Stack


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
        return cls(fault.kind, INJECTORS[fault.kind].target(fault), fault.at)

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


@dataclass
class FaultContext:
    """What an injector works with: the stack, the scenario, the run's clock (``t0``,
    monotonic) and its event log."""

    stack: Stack
    scenario: Scenario
    t0: float
    index: int
    """The fault's position in the scenario (names its toxic)."""
    events: list[tuple[float, str]]
    say: Say

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def event(self, label: str) -> None:
        self.events.append((self.now_s(), label))
        self.say(f"t={self.now_s():.2f}s {label}")


F = TypeVar("F", bound=Fault)


class Injector(abc.ABC, Generic[F]):
    """One fault of one kind, fired once. ``inject`` fills the record's ``t_fault_s``,
    ``confirmed`` and ``detail`` and returns when (monotonic) the fault should end, or
    None when nothing ends it; ``end`` then runs and stamps ``t_end_s`` if it undid
    something."""

    kind: ClassVar[str]

    def __init__(self, fault: F, ctx: FaultContext, record: FaultRecord) -> None:
        self.fault, self.ctx, self.record = fault, ctx, record

    @staticmethod
    @abc.abstractmethod
    def target(fault: Any) -> str:
        """What the fault hits, as reports name it."""

    @abc.abstractmethod
    async def inject(self) -> float | None: ...

    async def end(self) -> None:  # noqa: B027  (most faults have an end, not all)
        """Undo the fault (nothing by default)."""

    def scheduled_end(self) -> float | None:
        """The end of a fault with a ``duration``, on the scenario's schedule."""
        duration = getattr(self.fault, "duration", None)
        return None if duration is None else self.ctx.t0 + self.fault.at + duration


INJECTORS: dict[str, type[Injector[Any]]] = {}


def register(cls: type[Injector[Any]]) -> type[Injector[Any]]:
    """Class decorator: the injector of its ``kind``."""
    INJECTORS[cls.kind] = cls
    return cls


def injector_for(fault: Fault, ctx: FaultContext, record: FaultRecord) -> Injector[Any]:
    try:
        return INJECTORS[fault.kind](fault, ctx, record)
    except KeyError:
        raise LookupError(f"no injector registered for fault kind {fault.kind!r}") from None
