"""Recovery settings and the plain data of a restore (no Postgres needed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from harness.config import ServerConfig
from harness.stack.backup import (
    BaseBackup,
    RestoreClock,
    RestoreFailed,
    RestoreReport,
    RestoreStep,
    RestoreTarget,
    backup_start_lsn,
    recovery_settings,
    replay_failure_hint,
)
from harness.stack.mcp_server import reference_server_command
from harness.stack.postgres import BASE_SETTINGS, StackError, conf_string

ARCHIVE = Path("/tmp/run/wal-archive")


def test_restore_point_target_pauses_on_the_latest_timeline() -> None:
    settings = recovery_settings(RestoreTarget("restore_point", "before-fault"), ARCHIVE)
    assert settings == {
        "restore_command": "'cp /tmp/run/wal-archive/%f %p'",
        "recovery_target_timeline": "'latest'",
        "recovery_target_action": "'pause'",
        "recovery_target_name": "'before-fault'",
    }


def test_time_target_is_exclusive_and_rendered_in_utc() -> None:
    target = RestoreTarget("time", "2026-11-05T14:30:00.123456+02:00")
    settings = recovery_settings(target, ARCHIVE)
    assert settings["recovery_target_time"] == "'2026-11-05 12:30:00.123456+00:00'"
    assert settings["recovery_target_inclusive"] == "off"
    assert "recovery_target_name" not in settings


def test_lsn_target_keeps_the_default_inclusive() -> None:
    settings = recovery_settings(RestoreTarget("lsn", "0/3000060"), ARCHIVE)
    assert settings["recovery_target_lsn"] == "'0/3000060'"
    assert "recovery_target_inclusive" not in settings


def test_quotes_and_spaces_survive_both_parsers() -> None:
    settings = recovery_settings(
        RestoreTarget("restore_point", "it's \\ here"), Path("/tmp/a dir/wal-archive")
    )
    assert settings["recovery_target_name"] == "'it''s \\\\ here'"
    assert settings["restore_command"] == "'cp ''/tmp/a dir/wal-archive''/%f %p'"
    assert conf_string("a'b") == "'a''b'"


def test_before_builds_a_utc_time_target() -> None:
    moment = dt.datetime(2026, 11, 5, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert RestoreTarget.before(moment) == RestoreTarget("time", "2026-11-05T11:00:00+00:00")
    with pytest.raises(ValueError, match="time zone"):
        RestoreTarget.before(dt.datetime(2026, 11, 5))


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("earliest_damage", "x", "expected one of"),
        ("time", "2026-11-05 12:00", "no time zone"),
        ("time", "yesterday", "ISO 8601"),
        ("lsn", "3000060", "LSN like"),
        ("restore_point", "", "1 to 63"),
        ("restore_point", "x" * 64, "1 to 63"),
    ],
)
def test_invalid_targets_are_refused(kind: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RestoreTarget(kind, value)  # type: ignore[arg-type]


def test_start_lsn_is_read_from_backup_label() -> None:
    label = (
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
        "CHECKPOINT LOCATION: 0/2000080\nBACKUP METHOD: streamed\n"
    )
    assert backup_start_lsn(label) == "0/2000028"
    with pytest.raises(StackError, match="START WAL LOCATION"):
        backup_start_lsn("nothing here")


def _backup() -> BaseBackup:
    wall = dt.datetime(2026, 11, 5, 12, tzinfo=dt.UTC)
    return BaseBackup(Path("/tmp/b"), "mcp-harness base backup 1", "0/2000028", wall, 1.0, 0.2)


def test_replay_failure_hints_name_the_cause() -> None:
    late = replay_failure_hint(
        "FATAL:  recovery ended before configured recovery target was reached", _backup()
    )
    assert "archive ends before the target" in late
    early = replay_failure_hint(
        "FATAL:  requested recovery stop point is before consistent recovery point", _backup()
    )
    assert "0/2000028" in early and "later target" in early


def test_clock_times_steps_and_names_the_failing_one() -> None:
    clock = RestoreClock()
    with clock.step("stop"):
        pass
    with pytest.raises(RestoreFailed) as failed:
        with clock.step("restore_base_backup"):
            raise StackError("does not verify")
    assert failed.value.step == "restore_base_backup"
    assert [s.name for s in failed.value.steps] == ["stop"]
    assert "restore failed at step restore_base_backup: does not verify" in str(failed.value)
    assert isinstance(failed.value, StackError)
    assert "recovery.restore.timeout" in str(clock.timed_out(30))


def test_report_durations_and_plain_data() -> None:
    report = RestoreReport(
        steps=[RestoreStep("stop", 10.0, 10.5), RestoreStep("promote", 10.5, 12.0)],
        target=RestoreTarget("lsn", "0/3000060"),
        stopped_at_lsn="0/3000060",
        last_replayed_commit=None,
        base_backup="mcp-harness base backup 1",
        new_primary_port=5433,
    )
    assert report.duration_s == 2.0
    assert [step.duration_s for step in report.steps] == [0.5, 1.5]


def test_commit_timestamps_are_tracked() -> None:
    assert BASE_SETTINGS["track_commit_timestamp"] == "on"


def test_reference_server_gets_its_fault_mode() -> None:
    assert "--fault-mode" not in reference_server_command(ServerConfig())
    argv = reference_server_command(ServerConfig(fault_mode="corrupt-state"))
    assert argv[argv.index("--fault-mode") + 1] == "corrupt-state"
