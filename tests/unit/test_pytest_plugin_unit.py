"""Pure parts of the pytest plugin: judging recovery from the clients' records, request
statistics, and the clients a scenario describes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from harness.config import LedgerConfig, LoadConfig, Scenario
from harness.load.swarm import settings_for
from harness.measure.failover import ServiceProbeSample
from harness.testing.swarm import RecoveryRules, RequestStats, recovery_of

WRITE = "tools/call:create_note"


def req(t_s: float, ok: bool, method: str = WRITE, user: int = 0, ms: float = 5.0) -> dict:
    return {
        "k": "req",
        "t_s": t_s,
        "m": method,
        "ms": ms,
        "ok": ok,
        "err": None if ok else "connect_refused",
        "u": user,
    }


def writes(start_s: float, end_s: float, ok: bool, step_s: float = 0.1) -> list[dict]:
    """The clients' write requests."""
    count = round((end_s - start_s) / step_s)
    return [req(start_s + i * step_s, ok) for i in range(count)]


def probe(start_s: float, end_s: float, ok: bool, step_s: float = 0.1) -> list[ServiceProbeSample]:
    """The service probe's writes."""
    count = round((end_s - start_s) / step_s)
    return [ServiceProbeSample(start_s + i * step_s, ok) for i in range(count)]


def broken(t_s: float, user: int) -> dict:
    return {"k": "broken", "t_s": t_s, "u": user, "reason": "connect_refused"}


def reconnected(t_s: float, user: int, duration_s: float) -> dict:
    return {"k": "reconnected", "t_s": t_s, "u": user, "duration_s": duration_s, "attempts": 3}


def judge(
    records: list[dict],
    service: list[ServiceProbeSample],
    observed_until_s: float = 20.0,
    **kwargs: Any,
):
    rules = RecoveryRules(**{"stable_s": 2.0, "window_s": 60.0, **kwargs})
    return recovery_of(records, service, 10.0, observed_until_s, rules)


def outage(back_s: float) -> list[ServiceProbeSample]:
    """Fault at 10 s: the probe's writes fail until ``back_s``, then succeed."""
    return [*probe(5.0, 10.0, True), *probe(10.0, back_s, False), *probe(back_s, 20.0, True)]


def server_restart() -> list[dict]:
    """Fault at 10 s: the clients' writes fail until 11.5 s; users 1 and 2 break and
    come back."""
    return [
        *writes(5.0, 10.0, ok=True),
        *writes(10.0, 11.5, ok=False),
        *writes(11.5, 20.0, ok=True),
        broken(10.1, 1),
        reconnected(11.2, 1, 1.1),
        broken(10.2, 2),
        reconnected(12.2, 2, 2.0),
    ]


def test_recovered_when_every_broken_client_is_back_and_the_probe_writes_stay_good() -> None:
    recovery = judge(server_restart(), outage(11.5))
    assert recovery.recovered
    assert recovery.clients_broken == 2 and recovery.clients_reconnected == 2
    assert recovery.reconnect_success_rate == 1.0
    assert recovery.failover_s == pytest.approx(1.5)
    assert recovery.time_to_reconnect_s["max"] == pytest.approx(2.0, rel=0.01)
    assert recovery.errors == 15 and recovery.errors_by_kind == {"connect_refused": 15}
    assert recovery.requests == 100  # from the fault on, not before


def test_a_client_still_out_is_not_recovered_and_counts_against_the_rate() -> None:
    recovery = judge([*server_restart(), broken(10.3, 3)], outage(11.5))
    assert not recovery.recovered
    assert recovery.clients_not_reconnected == 1
    assert recovery.reconnect_success_rate == pytest.approx(2 / 3)


def test_no_broken_session_is_a_rate_of_one_with_nothing_broken() -> None:
    """A primary loss behind a server that keeps its sessions: writes fail, no session
    breaks; the rate is 1.0 and clients_broken says why."""
    records = [*writes(5.0, 10.0, True), *writes(10.0, 12.0, False), *writes(12.0, 20.0, True)]
    recovery = judge(records, outage(12.0))
    assert recovery.recovered and recovery.clients_broken == 0
    assert recovery.reconnect_success_rate == 1.0
    assert recovery.failover_s == pytest.approx(2.0)


def test_not_recovered_before_the_stable_window_was_watched_to_its_end() -> None:
    service = [*probe(10.0, 12.0, False), *probe(12.0, 13.5, True)]
    assert not judge([], service, observed_until_s=13.5).recovered
    assert judge([], service, observed_until_s=13.5, stable_s=1.0).recovered


def test_records_after_the_observed_instant_are_not_judged_yet() -> None:
    """A session that broke after the instant judged is not counted yet."""
    records = [*writes(10.0, 11.0, False), *writes(11.0, 14.0, True), broken(14.2, 5)]
    service = [*probe(10.0, 11.0, False), *probe(11.0, 14.0, True), ServiceProbeSample(14.2, False)]
    early = judge(records, service, observed_until_s=14.0)
    assert early.recovered and early.clients_broken == 0
    late = judge(records, service, observed_until_s=14.5)
    assert not late.recovered and late.clients_broken == 1


def test_a_probe_failure_in_the_window_restarts_the_search_a_client_failure_does_not() -> None:
    """A sporadic failure among hundreds of clients is not the service being down."""
    service = [*probe(10.0, 11.0, True), ServiceProbeSample(11.5, False), *probe(11.6, 20.0, True)]
    recovery = judge([*writes(10.0, 20.0, True), req(12.0, False)], service)
    assert recovery.failover_s == pytest.approx(1.6)
    assert recovery.errors == 1


def test_request_stats_by_method() -> None:
    requests = [
        req(1.0, True, "tools/list", ms=10),
        req(1.1, True, "tools/list", ms=30),
        req(1.2, False, "tools/list"),
        req(1.3, True, ms=600),
    ]
    stats = RequestStats(1.0, 2.0, requests)
    assert stats.count() == 4 and stats.count("tools/list") == 3
    assert stats.errors("tools/list") == 1 and stats.errors(WRITE) == 0
    assert stats.errors_by_kind() == {"connect_refused": 1}
    assert stats.percentile_ms("tools/list", 99) == pytest.approx(30, rel=0.01)
    assert stats.percentile_ms("initialize", 99) is None
    assert stats.methods() == ["tools/call:create_note", "tools/list"]
    assert "tools/list: 3, 1 failed" in str(stats)


def test_clients_follow_the_scenario_load_and_ledger(tmp_path) -> None:
    scenario = Scenario(
        name="mine",
        seed=3,
        load=LoadConfig(think_time=(0.5, 1.0), tool_mix={"tools/list": 1.0}),
        ledger=LedgerConfig(tool="save", arguments={"key": "{id}", "text": "{body}"}),
    )
    settings = settings_for(scenario, tmp_path / "records.jsonl", "pt1s0")
    assert settings.think_time_s == (0.5, 1.0)
    assert settings.tool_mix == {"tools/list": 1.0}
    assert settings.write_tool == "save" and settings.write_arguments == {
        "key": "{id}",
        "text": "{body}",
    }
    assert settings.id_prefix == "pt1s0" and settings.seed == 3
    assert settings.records_path == str(tmp_path / "records.jsonl")
    with pytest.raises(ValueError, match="think_time_s"):
        dataclasses.replace(settings, think_time_s=(2.0, 1.0))
