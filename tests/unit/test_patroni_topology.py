"""Patroni as the failover manager (``topology.failover: patroni``): what the scenario may
say, and the patroni.yml each node gets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.config import PatroniConfig, Scenario
from harness.stack.patroni import EtcdServer, PatroniNode
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
    passwords = {"postgres": "su", "replicator": "rep", "mcp_app": "app"}
    config = node.config(dcs, EtcdServer(2379, 2380, tmp_path / "etcd"), passwords, {"a": "1"})
    assert config["name"] == "replica" and config["etcd3"] == {"hosts": "127.0.0.1:2379"}
    assert config["restapi"]["listen"] == config["restapi"]["connect_address"] == "127.0.0.1:8009"
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
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "primary_kill_patroni.yaml"
    code = cli.main(["run", str(scenario), "--out", str(tmp_path / "out")])
    text = " ".join(capsys.readouterr().err.split())
    assert code == 3, text
    fix = "make patroni" if missing == "find_patroni" else "apt-get install etcd-server"
    assert "topology.failover: patroni needs" in text and fix in text
    assert not (tmp_path / "out").exists()
