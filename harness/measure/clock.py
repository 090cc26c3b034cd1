"""The run's two clocks: CLOCK_MONOTONIC for every measurement, wall time for
PostgreSQL's recovery targets and commit timestamps only (docs/measurements.md).

``RunClock`` converts between them with one offset taken when the load starts,
and says how far the wall clock moved against the monotonic one since: a step
(NTP, a VM pause) makes a wall-clock restore target and ``rpo_s`` wrong, so the
run reports it as a doubt.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

WALL_DRIFT_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class RunClock:
    t0: float
    """CLOCK_MONOTONIC at the start of the load: 0 on the run's time axis."""
    wall_minus_monotonic: float = field(default_factory=lambda: time.time() - time.monotonic())

    def wall_of(self, t_s: float) -> dt.datetime:
        """The wall-clock time (UTC) of a point on the run's axis."""
        return dt.datetime.fromtimestamp(self.t0 + t_s + self.wall_minus_monotonic, dt.UTC)

    def t_of(self, wall: dt.datetime) -> float:
        """The run-axis time of a wall-clock time (a commit timestamp, a recovery target)."""
        return wall.timestamp() - self.wall_minus_monotonic - self.t0

    def drift_s(self) -> float:
        """How far the wall clock moved against the monotonic one since the start."""
        return (time.time() - time.monotonic()) - self.wall_minus_monotonic
