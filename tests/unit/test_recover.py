"""Pure parts of the recovery from damaged data: the run's clocks, a restore's summary."""

from __future__ import annotations

import datetime as dt

from harness.measure.clock import RunClock
from harness.recover import RestoreOutcome, app_database_dsn


def test_run_clock_converts_both_ways() -> None:
    clock = RunClock(t0=1000.0, wall_minus_monotonic=1_700_000_000.0)
    wall = clock.wall_of(12.5)
    assert wall == dt.datetime.fromtimestamp(1_700_001_012.5, dt.UTC)
    assert abs(clock.t_of(wall) - 12.5) < 1e-6


def test_run_clock_reports_a_wall_clock_step() -> None:
    clock = RunClock(t0=0.0)
    assert abs(clock.drift_s()) < 0.05
    stepped = RunClock(t0=0.0, wall_minus_monotonic=clock.wall_minus_monotonic - 3.0)
    assert 2.9 < stepped.drift_s() < 3.1


def test_app_dsn_points_at_the_application_database() -> None:
    assert app_database_dsn("postgresql://postgres:x@127.0.0.1:5/postgres") == (
        "postgresql://postgres:x@127.0.0.1:5/mcp"
    )


def test_a_restore_that_did_not_happen_still_summarises() -> None:
    outcome = RestoreOutcome("detection", error="no damage found")
    summary = outcome.summary(None)
    assert summary["error"] == "no damage found"
    assert summary["total_s"] is None
    assert summary["steps"] == {"first_good_write_s": None, "rebuild_replica_s": None}
