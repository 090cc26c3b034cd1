"""Processes owned by a run: started, logged, recorded and stopped by pid.

Every process the harness starts is written to the run directory's
``owner.json`` together with the kernel's start time, so a later run can find
the processes of a run whose harness died and stop exactly those (a pid reused
by an unrelated process has another start time and is left alone).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OWNER_FILE = "owner.json"


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True while ``pid`` runs (and, if given, is the process that started at ``start_ticks``)."""
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return False
    return start_ticks is None or ticks == start_ticks


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            kids.append(int(entry.name))
    return kids


def wait_gone(pids: Sequence[int], timeout_s: float) -> bool:
    """Poll until none of ``pids`` runs; False if some still run after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        reap(pids)
        if not any(is_alive(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def become_subreaper() -> None:
    """Adopt orphaned descendants (the backends of a killed postmaster) so they can be reaped.

    Without this they are re-parented to PID 1, which in a container often never
    reaps them, and ``ps`` would list them as defunct after the run.
    """
    import ctypes

    pr_set_child_subreaper = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def reap(pids: Sequence[int]) -> None:
    """Collect the exit status of those ``pids`` that are our (adopted) children and have exited."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_as(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``user`` with that user's own group and
    no supplementary groups (its uid alone would leave it in root's groups, where a
    root-owned directory's group bits decide); nothing for None (run as the caller)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


@dataclass
class OwnedProcess:
    """One process started by the run, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    start_ticks: int | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Ask the process to stop, then SIGKILL it after ``timeout_s``; returns its exit code."""
        if self.running():
            signal_pid(self.pid, sig)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                signal_pid(self.pid, signal.SIGKILL)
                try:
                    self.popen.wait(5)
                except subprocess.TimeoutExpired:
                    return None  # unkillable for now (D state); the next start reaps it
        return self.popen.returncode


@dataclass
class ProcessRegistry:
    """The run's record of what it started, persisted in ``run_dir/owner.json``."""

    run_dir: Path
    processes: list[OwnedProcess] = field(default_factory=list)
    cpus: frozenset[int] | None = None
    """CPUs the run's own processes are pinned to (None: wherever the kernel puts them)."""

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        log_name: str | None = None,
        cpus: frozenset[int] | None = None,
    ) -> OwnedProcess:
        """Start ``argv`` (no shell) with stdout and stderr in ``logs/<name>.log``, on the
        registry's CPUs when it has some (``taskset`` execs the command: the pid is the same)."""
        log_dir = self.run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / (log_name or f"{name}.log")
        command = list(argv)
        pinned = cpus or self.cpus
        if pinned and shutil.which("taskset"):
            command = ["taskset", "-c", ",".join(str(c) for c in sorted(pinned)), *command]
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                **run_as(user),
                start_new_session=True,
            )
        proc = OwnedProcess(name, popen, log_path, proc_start_ticks(popen.pid))
        self.processes.append(proc)
        self.save()
        return proc

    def save(self) -> None:
        owner = {
            "harness_pid": os.getpid(),
            "harness_start_ticks": proc_start_ticks(os.getpid()),
            "processes": [
                {"name": p.name, "pid": p.pid, "start_ticks": p.start_ticks} for p in self.processes
            ],
        }
        tmp = self.run_dir / (OWNER_FILE + ".tmp")
        tmp.write_text(json.dumps(owner, indent=1))
        tmp.replace(self.run_dir / OWNER_FILE)

    def inventory(self) -> list[dict[str, object]]:
        """Every process the run started, with its exit code once it ended (for logs/processes.json)."""
        return [
            {
                "name": p.name,
                "pid": p.pid,
                "start_ticks": p.start_ticks,
                "argv0": str(p.popen.args[0])
                if isinstance(p.popen.args, list)
                else str(p.popen.args),
                "exit_code": p.popen.poll(),
            }
            for p in self.processes
        ]

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """Stop every recorded process, newest first."""
        for proc in reversed(self.processes):
            try:
                proc.stop(timeout_s)
            except OSError:
                continue


def reap_stale_runs(parent: Path, prefix: str) -> list[Path]:
    """Stop the processes and remove the directories of runs whose harness is dead.

    Only pids recorded in a dead run's ``owner.json`` with a matching start time
    are signalled. Returns the directories removed.
    """
    removed = []
    for run_dir in sorted(parent.glob(prefix + "*")):
        owner_path = run_dir / OWNER_FILE
        try:
            owner = json.loads(owner_path.read_text())
        except (OSError, ValueError):
            continue
        if is_alive(owner["harness_pid"], owner.get("harness_start_ticks")):
            continue
        live = [
            p["pid"] for p in owner.get("processes", []) if is_alive(p["pid"], p.get("start_ticks"))
        ]
        for pid in live:
            signal_pid(pid, signal.SIGKILL)
        wait_gone(live, 5.0)
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed
