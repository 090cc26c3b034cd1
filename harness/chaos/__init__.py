"""Fault injectors: process kills and Toxiproxy toxics, each confirmed before it counts.

``run_fault`` is the entry point: it fires one scheduled fault on the stack, confirms
that it took effect (``t_fault`` is the moment of confirmation), and undoes it after
its window. A fault that cannot be confirmed is recorded as such, which makes the run
inconclusive.
"""

from harness.chaos.faults import FaultRecord, run_fault

__all__ = ["FaultRecord", "run_fault"]
