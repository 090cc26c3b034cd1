"""A run's recovery figures when the scenario calls for a restore."""

from __future__ import annotations

from harness.config import Scenario
from harness.measure.failover import ServiceProbeSample
from harness.measure.run_metrics import _service_recovery

WRITES_ALWAYS_OK = [ServiceProbeSample(t / 10, True, None) for t in range(0, 600)]


def scenario(restore: bool) -> Scenario:
    recovery = {
        "promote_after": None,
        **({"restore": {"target": "lsn", "target_lsn": "0/1"}} if restore else {}),
    }
    return Scenario(name="s", faults=[{"kind": "kill_server", "at": 10}], recovery=recovery)


def test_damaged_data_is_not_a_recovered_service_without_the_restore() -> None:
    without = _service_recovery(scenario(True), 10.0, WRITES_ALWAYS_OK, [], 60.0, None)
    assert without == {"failover_s": None, "rto_s": None}


def test_recovery_counts_from_the_end_of_the_restore() -> None:
    restored = _service_recovery(scenario(True), 10.0, WRITES_ALWAYS_OK, [], 60.0, 20.0)
    assert restored["rto_s"] == restored["failover_s"] == 10.0
    plain = _service_recovery(scenario(False), 10.0, WRITES_ALWAYS_OK, [], 60.0, None)
    assert plain["rto_s"] == 0.0
