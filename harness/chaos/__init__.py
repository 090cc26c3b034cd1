"""Fault injectors: each fault kind is one small injector, confirmed before it counts.

``run_fault`` is the entry point: at the fault's time it looks the kind up in the
registry (``injector_for``), fires and confirms it (``t_fault`` is the moment of
confirmation), and ends it when its window is over. A fault that cannot be confirmed
is recorded as such, which makes the run inconclusive. A new fault kind is one model
in ``harness.config`` and one module here that registers its ``Injector``.
"""

from harness.chaos import bad_deployment, call_tool, kills, partition, switchover, toxiproxy
from harness.chaos.base import FaultContext, FaultRecord, Injector, injector_for
from harness.chaos.schedule import run_fault

INJECTOR_MODULES = (kills, toxiproxy, bad_deployment, call_tool, partition, switchover)
"""Imported for their registrations."""

__all__ = ["FaultContext", "FaultRecord", "Injector", "injector_for", "run_fault"]
