"""Load settings survive the trip through JSON and refuse what Locust could not run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.load.settings import SETTINGS_ENV, LoadSettings, load_from_env


def full_settings() -> LoadSettings:
    return LoadSettings(
        records_path="/run/records.jsonl",
        mcp_path="/rpc",
        think_time_s=(0.5, 1.5),
        tool_mix={"tools/list": 3.0, "create_note": 1.0},
        reconnect_policy="immediate",
        backoff_base_s=0.2,
        backoff_cap_s=3.0,
        request_timeout_s=4.0,
        headers={"Authorization": "Bearer x"},
        id_prefix="run-42",
        seed=7,
        protocol="2026-07-28",
        hold_stream=True,
        success_when={"equals": {"status": "ok"}, "text_not_matching": "failed"},
        retry_unanswered=3,
    )


def test_round_trip_keeps_every_field() -> None:
    settings = full_settings()
    again = LoadSettings.from_json(settings.to_json())
    assert again == settings
    assert isinstance(again.think_time_s, tuple)


def test_defaults_round_trip() -> None:
    settings = LoadSettings(records_path="r.jsonl")
    assert LoadSettings.from_json(settings.to_json()) == settings


def test_load_from_env_reads_the_named_file(tmp_path: Path) -> None:
    path = full_settings().write(tmp_path / "load.json")
    assert load_from_env({SETTINGS_ENV: str(path)}) == full_settings()


def test_load_from_env_says_what_is_missing() -> None:
    with pytest.raises(RuntimeError, match=SETTINGS_ENV):
        load_from_env({})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tool_mix": {"": 1.0}}, "empty tool name"),
        ({"tool_mix": {"tools/list": 0.0}}, "at least one positive"),
        ({"think_time_s": (2.0, 1.0)}, "think_time_s"),
        ({"reconnect_policy": "sometimes"}, "reconnect_policy"),
        ({"backoff_base_s": 5.0, "backoff_cap_s": 1.0}, "backoff"),
        ({"protocol": "2024-11-05"}, "not supported"),
        ({"mcp_path": "mcp"}, "mcp_path"),
    ],
)
def test_invalid_settings_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadSettings(records_path="r.jsonl", **change)


def test_success_rule_and_retries_follow_the_settings() -> None:
    rule = full_settings().ack_rule()
    assert rule.equals == (("status", "ok"),) and rule.text_not_matching == "failed"
    assert rule.not_false == ("success", "ok") and rule.absent == ("error",)
    assert full_settings().retry_unanswered == 3


def test_policy_follows_the_settings() -> None:
    policy = full_settings().policy()
    assert (policy.name, policy.base_s, policy.cap_s) == ("immediate", 0.2, 3.0)
    assert policy.think_time_s == (0.5, 1.5)
    assert LoadSettings(records_path="r.jsonl").policy().name == "backoff"


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        LoadSettings.from_json('{"records_path": "r", "users": 5}')


def test_harness_side_of_the_load_imports_neither_locust_nor_gevent() -> None:
    code = (
        "import sys, harness.load, harness.load.swarm, harness.load.settings, harness.mcp_client.wire, harness.mcp_client.acks\n"
        "import harness.load.policy\n"
        "assert not {'locust', 'gevent'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
