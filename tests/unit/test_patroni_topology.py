"""Patroni as the failover manager (``topology.failover: patroni``): what the scenario may
say, and the patroni.yml each node gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.chaos import FaultRecord
from harness.config import PatroniConfig, Scenario, load_scenario
from harness.measure.failover import WriteProbeSample
from harness.measure.ledger import WriteLedger
from harness.measure.run_metrics import Evidence, Samples, measure_run
from harness.shipped import SCENARIOS_DIR
from harness.stack.patroni import REST_USER, EtcdServer, PatroniNode
from harness.stack.postgres import PostgresCluster

PATRONI = {"failover": "patroni"}


def test_patroni_keeps_its_own_defaults_and_the_harness_does_not_promote() -> None:
    scenario = Scenario(name="t", topology=PATRONI)
    assert scenario.topology.patroni == PatroniConfig(
        ttl=30, loop_wait=10, retry_timeout=10, maximum_lag_on_failover=1_048_576
    )
    assert scenario.recovery.promote_after is None  # the scripted default steps aside
    assert Scenario(name="t").recovery.promote_after == 2.0


@pytest.mark.parametrize(
    "timings,message",
    [
        ({"ttl": "10s"}, "ttl: Patroni's leader lock lives at least 20s"),
        ({"ttl": "20s"}, r"ttl: must be at least loop_wait \+ 2 × retry_timeout \(30s\)"),
    ],
)
def test_timings_patroni_would_change_are_refused(timings: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Scenario(name="t", topology={**PATRONI, "patroni": timings})


@pytest.mark.parametrize(
    "extra,key",
    [
        ({"recovery": {"promote_after": "2s"}}, "recovery.promote_after"),
        ({"recovery": {"runbook": "default"}}, "recovery.runbook"),
        (
            {"postgres": {"settings": {"synchronous_standby_names": "*"}}},
            "postgres.settings.synchronous_standby_names",
        ),
        ({"postgres": {"replica_settings": {"work_mem": "8MB"}}}, "postgres.replica_settings"),
        ({"backend": "docker"}, "backend: docker"),
    ],
)
def test_a_second_promoter_is_refused_naming_the_key(extra: dict, key: str) -> None:
    with pytest.raises(ValidationError, match=f"{key}: topology.failover: patroni promotes"):
        Scenario(name="t", topology=PATRONI, **extra)


def test_a_node_listens_on_loopback_and_bootstraps_the_scenarios_timings(tmp_path: Path) -> None:
    cluster = PostgresCluster(
        "replica", tmp_path / "replica", tmp_path / "bin", 5433, tmp_path / "sock", None, "su"
    )
    node = PatroniNode(cluster, 8009)
    dcs = PatroniConfig(ttl=20, loop_wait=2, retry_timeout=4, synchronous_mode=True)
    passwords = {"postgres": "su", "replicator": "rep", "mcp_app": "app", REST_USER: "api"}
    config = node.config(dcs, EtcdServer(2379, 2380, tmp_path / "etcd"), passwords, {"a": "1"})
    assert config["name"] == "replica" and config["etcd3"] == {"hosts": "127.0.0.1:2379"}
    assert config["restapi"]["listen"] == config["restapi"]["connect_address"] == "127.0.0.1:8009"
    # its unsafe endpoints (switchover, restart) need the run's password
    assert config["restapi"]["authentication"] == {"username": REST_USER, "password": "api"}
    postgresql = config["postgresql"]
    assert postgresql["listen"] == "127.0.0.1:5433" and postgresql["data_dir"] == str(
        cluster.data_dir
    )
    assert postgresql["authentication"]["replication"] == {
        "username": "replicator",
        "password": "rep",
    }
    assert {"checkpoint": "fast"} in postgresql["basebackup"]
    bootstrap = config["bootstrap"]["dcs"]
    assert (bootstrap["ttl"], bootstrap["loop_wait"], bootstrap["retry_timeout"]) == (20, 2, 4)
    assert bootstrap["synchronous_mode"] is True
    assert bootstrap["postgresql"]["parameters"] == {"a": "1"}
    assert all(
        "127.0.0.1/32" in rule or rule.startswith("local") for rule in config["bootstrap"]["pg_hba"]
    )
    assert "app" not in str(config)  # the application's password is not Patroni's business


@pytest.mark.parametrize("missing", ["find_patroni", "find_etcd"])
def test_a_missing_patroni_or_etcd_stops_the_run_before_anything_starts(
    missing: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from harness import cli
    from harness.stack import patroni, prerequisites

    for check in ("pg_bin_dir", "toxiproxy_server", "pg_run_user"):
        monkeypatch.setattr(prerequisites, check, lambda *_: None)
    monkeypatch.setattr(patroni, missing, lambda: None)
    # the other part found (a clone where `make unit` ran before `make patroni` has neither)
    other = "find_etcd" if missing == "find_patroni" else "find_patroni"
    monkeypatch.setattr(patroni, other, lambda: "/usr/bin/true")
    scenario = SCENARIOS_DIR / "primary_kill_patroni.yaml"
    code = cli.main(["run", str(scenario), "--out", str(tmp_path / "out")])
    text = " ".join(capsys.readouterr().err.split())
    assert code == 3, text
    fix = "make patroni" if missing == "find_patroni" else "apt-get install etcd-server"
    assert "topology.failover: patroni needs" in text and fix in text
    assert not (tmp_path / "out").exists()


def test_a_switchover_needs_patroni_and_names_the_fault() -> None:
    switchover = {"kind": "switchover", "at": "5s"}
    scenario = Scenario(name="t", topology=PATRONI, faults=[switchover])
    assert scenario.faults[0].kind == "switchover" and scenario.faults[0].timeout == 30
    with pytest.raises(
        ValidationError, match=r"faults.0: switchover .* topology.failover: patroni"
    ):
        Scenario(name="t", faults=[switchover])


def test_the_shipped_switchover_scenario_loads() -> None:
    path = SCENARIOS_DIR / "switchover_patroni.yaml"
    scenario = load_scenario(path)
    assert [f.kind for f in scenario.faults] == ["switchover"]
    assert scenario.topology.patroni.synchronous_mode is True


def _evidence_of(kind: str, old: int, new: int) -> Evidence:
    """A primary change at 5 s: writes keep committing on the old node until 6 s (a
    switchover's leader steps down then), none until 7.5 s, then on the new one."""
    writes = [
        WriteProbeSample(i, t / 10, ok, port, None, t / 10 - 0.01)
        for i, (t, ok, port) in enumerate(
            [(40, True, old), (55, True, old), (60, True, old), (65, False, None)]
            + [(75, True, new), (80, True, new)]
        )
    ]
    fault = FaultRecord(kind, "primary", 5.0, t_fault_s=5.0, confirmed=True, killed_port=old)
    return Evidence(
        scenario=Scenario(name="t", topology=PATRONI),
        records=[],
        events=[],
        faults=[fault],
        samples=Samples(writes, [], [], [], 10.0, 2),
        readback=None,
        ledger=WriteLedger(),
        current_primary_port=new,
    )


def test_a_switchover_is_timed_to_the_first_write_on_the_new_primary() -> None:
    """The old primary takes writes until it steps down: for a switchover that is no sign
    the fault failed, as it is for a kill (the write probe un-confirms a kill it saw a
    write survive)."""
    switched = measure_run(_evidence_of("switchover", 5432, 5433))
    assert switched.faults[0].confirmed
    assert switched.metrics["db_failover_s"] == pytest.approx(2.5)
    killed = measure_run(_evidence_of("kill_primary", 5432, 5433))
    assert not killed.faults[0].confirmed and killed.metrics["db_failover_s"] is None


def test_a_killed_primary_boots_again_only_under_patroni() -> None:
    reboot = {"kind": "kill_primary", "at": "5s", "restart_after": "30s"}
    assert Scenario(name="t", topology=PATRONI, faults=[reboot]).faults[0].restart_after == 30
    with pytest.raises(
        ValidationError, match=r"faults.0.restart_after: .* topology.failover: patroni"
    ):
        Scenario(name="t", faults=[reboot])
