"""Point-in-time recovery as plain data: base backups, restore points, restore targets and
the timed report of a restore, plus the recovery settings a restore writes.

A restore copies the latest base backup into a fresh cluster and replays the WAL archive
up to a target, where it pauses: the harness reads where replay stopped before it
promotes, so a report says exactly what state the service came back with.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncpg

from harness.stack.postgres import StackError, conf_string
from harness.stack.toxiproxy import ToxiproxyError

RestoreKind = Literal["restore_point", "time", "lsn"]
RESTORE_KINDS: tuple[RestoreKind, ...] = ("restore_point", "time", "lsn")
RESTORE_STEPS = ("stop", "restore_base_backup", "replay_wal", "promote", "reattach_server")
"""The timed steps of every restore, in order (RestoreReport.steps)."""
MAX_RESTORE_POINT_NAME = 63
"""pg_create_restore_point refuses longer names (MAXFNAMELEN - 1)."""
_LSN = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}")
_START_LSN = re.compile(r"^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+)", re.MULTILINE)


@dataclass(frozen=True)
class BaseBackup:
    """A plain-format base backup with its manifest. A restore can reach any point after it
    finished (``taken_at_wall``), as far as the WAL archive goes."""

    path: Path
    label: str
    start_lsn: str
    taken_at_wall: dt.datetime
    """When it finished (UTC): a time target must be later."""
    t_done: float
    duration_s: float


@dataclass(frozen=True)
class RestorePoint:
    """A named point in the WAL (``pg_create_restore_point``), a restore target."""

    name: str
    lsn: str
    t_start: float
    t_end: float
    wall: dt.datetime
    """Wall-clock time (UTC) just before it was created."""


@dataclass(frozen=True)
class RestoreTarget:
    """Where replay stops: a restore point's name, an ISO 8601 time with a zone (recovery
    stops before the first commit at or after it) or an LSN (stops just after it)."""

    kind: RestoreKind
    value: str

    def __post_init__(self) -> None:
        if self.kind not in RESTORE_KINDS:
            raise ValueError(
                f"restore target kind {self.kind!r}: expected one of {', '.join(RESTORE_KINDS)}"
            )
        if self.kind == "time":
            parse_utc(self.value)
        if self.kind == "lsn" and not _LSN.fullmatch(self.value):
            raise ValueError(f"restore target lsn {self.value!r}: expected an LSN like 0/3000060")
        if self.kind == "restore_point" and not 0 < len(self.value) <= MAX_RESTORE_POINT_NAME:
            raise ValueError(
                f"restore point name {self.value!r}: 1 to {MAX_RESTORE_POINT_NAME} characters"
            )

    @classmethod
    def before(cls, moment: dt.datetime) -> RestoreTarget:
        """A time target: everything committed before ``moment`` (an aware datetime)."""
        if moment.tzinfo is None:
            raise ValueError(f"restore target time {moment} has no time zone")
        return cls("time", moment.astimezone(dt.UTC).isoformat())


def parse_utc(text: str) -> dt.datetime:
    """An ISO 8601 time with a zone, in UTC; a naive time is refused (which zone is it?)."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"restore target time {text!r}: expected ISO 8601") from None
    if moment.tzinfo is None:
        raise ValueError(f"restore target time {text!r} has no time zone (add Z or +00:00)")
    return moment.astimezone(dt.UTC)


def recovery_settings(target: RestoreTarget, archive_dir: Path) -> dict[str, str]:
    """postgresql.conf settings (values quoted) that replay the WAL archive up to ``target``
    and pause there. The latest timeline is followed, so a base backup from before an
    earlier restore or failover still reaches a target on the newer timeline."""
    settings = {
        "restore_command": conf_string(f"cp {shlex.quote(str(archive_dir))}/%f %p"),
        "recovery_target_timeline": "'latest'",
        "recovery_target_action": "'pause'",
    }
    if target.kind == "restore_point":
        settings["recovery_target_name"] = conf_string(target.value)
    elif target.kind == "time":
        settings["recovery_target_time"] = conf_string(parse_utc(target.value).isoformat(" "))
        settings["recovery_target_inclusive"] = "off"
    else:
        settings["recovery_target_lsn"] = conf_string(target.value)
    return settings


def backup_start_lsn(backup_label: str) -> str:
    """The ``START WAL LOCATION`` of a backup_label file."""
    match = _START_LSN.search(backup_label)
    if match is None:
        raise StackError("backup_label has no START WAL LOCATION line: not a base backup?")
    return match.group(1)


def replay_failure_hint(log_tail: str, backup: BaseBackup) -> str:
    """What to try when replay stopped short of its target, from the server's last words."""
    if "before configured recovery target was reached" in log_tail:
        return (
            "The archive ends before the target: a target later than the last archived WAL "
            "(a primary killed before it archived its last WAL file loses those commits) or a "
            "restore point name that was never created cannot be reached. Choose an earlier "
            "target."
        )
    if "before consistent recovery point" in log_tail:
        return (
            f"The target is before the end of base backup {backup.label!r} (started at "
            f"{backup.start_lsn}, finished {backup.taken_at_wall.isoformat()}): choose a later "
            "target."
        )
    return "Read the log tail above; the WAL archive is in the run directory's wal-archive."


@dataclass(frozen=True)
class RestoreStep:
    """One timed step of a restore (CLOCK_MONOTONIC)."""

    name: str
    start: float
    end: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did and where replay stopped: the state the service came back with."""

    steps: list[RestoreStep]
    target: RestoreTarget
    stopped_at_lsn: str
    """pg_last_wal_replay_lsn() at the pause."""
    last_replayed_commit: str | None
    """pg_last_xact_replay_timestamp() at the pause (ISO 8601), None if no commit was replayed."""
    base_backup: str
    """The label of the base backup it started from."""
    new_primary_port: int

    @property
    def duration_s(self) -> float:
        return self.steps[-1].end - self.steps[0].start if self.steps else 0.0


class RestoreFailed(StackError):
    """A restore failed at ``step``; ``steps`` are the ones it finished, for the report."""

    def __init__(self, step: str, steps: list[RestoreStep], message: str) -> None:
        super().__init__(f"restore failed at step {step}: {message}")
        self.step = step
        self.steps = list(steps)


class RestoreClock:
    """Times the steps of one restore; a failing step becomes a RestoreFailed naming it."""

    def __init__(self) -> None:
        self.steps: list[RestoreStep] = []
        self.current = ""

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.current = name
        start = time.monotonic()
        try:
            yield
        except (StackError, OSError, asyncpg.PostgresError, ToxiproxyError) as exc:
            if isinstance(exc, RestoreFailed):
                raise
            raise RestoreFailed(name, self.steps, str(exc)) from exc
        self.steps.append(RestoreStep(name, start, time.monotonic()))

    def timed_out(self, timeout_s: float) -> RestoreFailed:
        return RestoreFailed(
            self.current,
            self.steps,
            f"the restore did not finish within {timeout_s:g}s (recovery.restore.timeout); "
            "raise the timeout or restore to an earlier target (less WAL to replay)",
        )
