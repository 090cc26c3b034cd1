"""The harness's side of the load: start the Locust processes, read what they record.

Locust monkey-patches the standard library for gevent, which does not mix with
the harness's asyncio, so this module never imports locust or gevent: Locust
runs as a master and N worker processes owned by the run, and the harness
follows the JSON-lines records file the master appends to.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from harness.config import LoadConfig, Scenario
from harness.load.settings import FINAL_BATCH_GRACE_S, SETTINGS_ENV, LoadSettings
from harness.stack.net import LOOPBACK, free_port, is_loopback_host, require_loopback
from harness.stack.processes import (
    PROGRAM_VARS,
    OwnedProcess,
    ProcessRegistry,
    child_environment,
    write_private,
)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SETTINGS_FILE = "load-settings.json"
REPO_ROOT = Path(__file__).resolve().parents[2]


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "*", ""})


@dataclass(frozen=True)
class SwarmShape:
    """How big a swarm is and where it points: the load target, users, spawn rate and
    run time, and the Locust processes (local workers, pinned to ``worker_cpus``;
    ``remote_workers`` started by a person elsewhere). ``master_advertise_host`` is the
    address remote workers dial (default: the bind host, or this machine's name when
    bound to every interface)."""

    base_url: str
    users: int
    spawn_rate: float
    run_time_s: float
    workers: int = 1
    remote_workers: int = 0
    worker_cpus: frozenset[int] | None = None
    master_bind_host: str = LOOPBACK
    master_advertise_host: str | None = None
    stop_timeout_s: float = 2.0
    expect_workers_max_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if (
            self.users < 1
            or self.spawn_rate <= 0
            or self.run_time_s <= 0
            or self.workers < 1
            or self.remote_workers < 0
        ):
            raise ValueError(
                "a swarm needs users >= 1, spawn_rate > 0, run_time_s > 0, workers >= 1, "
                "remote_workers >= 0"
            )
        cpus = self.worker_cpus
        if cpus is not None and (not cpus or min(cpus) < 0):
            raise ValueError(f"worker_cpus {sorted(cpus)} needs CPU numbers >= 0")

    @classmethod
    def of(
        cls, load: LoadConfig, base_url: str, worker_cpus: frozenset[int] | None = None
    ) -> SwarmShape:
        """The shape a scenario's ``load`` asks for."""
        return cls(
            base_url,
            load.users,
            load.spawn_rate,
            load.run_time,
            workers=load.workers,
            remote_workers=load.remote_workers,
            worker_cpus=worker_cpus or None,
            master_bind_host=load.master_bind_host,
        )


class Swarm:
    """One Locust master and its workers, bounded in users and time, owned by the run.

    The master stops the test by itself after ``run_time_s``; ``stop()`` ends it
    early. Both leave ``stop`` as the last record once the workers' final
    records are in.
    """

    def __init__(
        self,
        registry: ProcessRegistry,
        settings: LoadSettings,
        shape: SwarmShape,
        *,
        allow_remote: bool = False,
    ) -> None:
        """``shape.workers`` local worker processes are started here;
        ``shape.remote_workers`` more are started by a person on other machines
        (``remote_worker_command``) and the test begins once all of them are connected.
        A master bound beyond loopback (for remote workers) or a target that is not on
        this machine needs ``allow_remote``."""
        require_loopback(shape.base_url, allow_remote=allow_remote, what="load target")
        if not is_loopback_host(shape.master_bind_host) and not allow_remote:
            raise ValueError(
                f"the Locust master would listen on {shape.master_bind_host!r}, not on "
                "loopback; pass allow_remote=True (--allow-remote) to let workers on other "
                "machines in"
            )
        self.registry = registry
        self.settings = settings
        self.shape = shape
        self.base_url = shape.base_url.rstrip("/")
        self.users = shape.users
        self.spawn_rate = shape.spawn_rate
        self.run_time_s = math.ceil(shape.run_time_s)  # Locust takes whole seconds
        self.worker_count = shape.workers
        self.remote_worker_count = shape.remote_workers
        self.stop_timeout_s = math.ceil(shape.stop_timeout_s)
        self.expect_workers_max_wait_s = math.ceil(shape.expect_workers_max_wait_s)
        self.worker_cpus = shape.worker_cpus
        self.master_bind_host = shape.master_bind_host
        self.master_advertise_host = shape.master_advertise_host or (
            socket.getfqdn() if shape.master_bind_host in WILDCARD_HOSTS else shape.master_bind_host
        )
        self.local_master_host = (
            LOOPBACK if shape.master_bind_host in WILDCARD_HOSTS else shape.master_bind_host
        )
        """Where local workers dial the master: loopback when it listens everywhere."""
        self.master_port: int | None = None
        self.master: OwnedProcess | None = None
        self.workers: list[OwnedProcess] = []
        self.affinity: dict[int, list[int] | None] = {}
        """Per local worker pid: the CPUs it was pinned to, None when pinning was not applied."""
        self.affinity_notes: list[str] = []
        """Why pinning was not applied (platform without it, CPUs not available, ...)."""

    @property
    def run_dir(self) -> Path:
        return self.registry.run_dir

    @property
    def records_path(self) -> Path:
        """Where the master appends records (a relative records_path is under the run dir)."""
        return self.run_dir / self.settings.records_path

    @property
    def settings_path(self) -> Path:
        return self.run_dir / SETTINGS_FILE

    @property
    def running(self) -> bool:
        """True while the master runs (it exits when the test is over)."""
        return self.master is not None and self.master.running()

    def master_argv(self, master_port: int) -> list[str]:
        return [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE),
            "--headless", "--only-summary",
            "--master", "--master-bind-host", self.master_bind_host,
            "--master-bind-port", str(master_port),
            "--expect-workers", str(self.worker_count + self.remote_worker_count),
            "--expect-workers-max-wait", str(self.expect_workers_max_wait_s),
            "-u", str(self.users), "-r", str(self.spawn_rate), "-t", f"{self.run_time_s}s",
            "--host", self.base_url,
            "--stop-timeout", str(self.stop_timeout_s),
            "--exit-code-on-error", "0",
        ]  # fmt: skip

    def worker_argv(self, master_port: int, master_host: str | None = None) -> list[str]:
        return [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE),
            "--worker", "--master-host", master_host or self.local_master_host,
            "--master-port", str(master_port),
        ]  # fmt: skip

    def remote_worker_command(self) -> str:
        """The shell command that starts one worker of this swarm on another machine.

        Available once started (the master's port is chosen then). The other
        machine needs this checkout and Python environment at the same paths,
        and a copy of the settings file at the path named here (workers read
        the settings, the master alone writes records).
        """
        if self.master_port is None:
            raise RuntimeError("start the swarm first: the master's port is chosen at start")
        env = {
            SETTINGS_ENV: str(self.settings_path),
            "PYTHONPATH": str(REPO_ROOT),
        }
        argv = self.worker_argv(self.master_port, self.master_advertise_host)
        return " ".join(
            [f"{name}={shlex.quote(value)}" for name, value in env.items()]
            + [shlex.quote(part) for part in argv]
        )

    def pids(self) -> list[int]:
        """The master's pid, then the local workers' (for sampling their CPU)."""
        processes = ([self.master] if self.master is not None else []) + self.workers
        return [process.pid for process in processes]

    def process_env(self) -> dict[str, str]:
        """The Locust processes' whole environment: ``child_environment``'s allow-list for a
        Python program (no LOCUST_* override, no secret of the harness's environment), the
        settings file and this checkout on PYTHONPATH."""
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return child_environment(
            {SETTINGS_ENV: str(self.settings_path), "PYTHONPATH": python_path}, keep=PROGRAM_VARS
        )

    def start(self) -> None:
        """Write settings, start the master and the workers; the test begins once all connect."""
        if self.master is not None:
            raise RuntimeError("this swarm was started already")
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # 0600: the settings carry the scenario's expanded server.headers (a bearer token)
        write_private(self.settings_path, self.settings.to_json())
        self.master_port = free_port()
        env = self.process_env()
        self.master = self.registry.start(
            "locust-master",
            self.master_argv(self.master_port),
            env=env,
            cwd=self.run_dir,
            cpus=self.worker_cpus,
        )
        for index in range(self.worker_count):
            worker = self.registry.start(
                f"locust-worker-{index}",
                self.worker_argv(self.master_port),
                env=env,
                cwd=self.run_dir,
            )
            self.workers.append(worker)
            self.pin(worker)

    def pin(self, worker: OwnedProcess) -> None:
        """Restrict a just-started worker to ``worker_cpus`` (each of its threads, if it has any).

        Threads it starts later inherit the mask. Recorded in ``affinity``;
        a platform without ``sched_setaffinity`` or CPUs not available here
        leave the worker unpinned, with the reason in ``affinity_notes``.
        """
        if self.worker_cpus is None:
            return
        setaffinity = getattr(os, "sched_setaffinity", None)
        if setaffinity is None:
            self.affinity[worker.pid] = None
            self.affinity_notes.append("os.sched_setaffinity is not available: workers unpinned")
            return
        try:
            tids = [thread.id for thread in psutil.Process(worker.pid).threads()]
            for tid in tids or [worker.pid]:
                setaffinity(tid, self.worker_cpus)
            self.affinity[worker.pid] = sorted(os.sched_getaffinity(worker.pid))
        except (OSError, psutil.Error) as exc:
            self.affinity[worker.pid] = None
            self.affinity_notes.append(
                f"{worker.name}: pinning to {sorted(self.worker_cpus)} failed: {exc}"
            )

    def wait(self, timeout_s: float) -> int | None:
        """Block until the master exits (and its workers after it); its exit code, None on timeout.

        Blocking: from asyncio, call it through ``asyncio.to_thread`` or poll ``running``.
        """
        if self.master is None:
            raise RuntimeError("the swarm was not started")
        deadline = time.monotonic() + timeout_s
        while self.master.running():
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        while any(worker.running() for worker in self.workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.master.popen.returncode

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM the master (it stops the test and its workers), then any worker left over.

        A process still running after its grace period gets SIGKILL.
        """
        grace_s = (
            timeout_s if timeout_s is not None else self.stop_timeout_s + FINAL_BATCH_GRACE_S + 5
        )
        if self.master is not None:
            self.master.stop(grace_s)
        for worker in self.workers:
            worker.stop(5.0)

    def tail(self) -> RecordTail:
        return RecordTail(self.records_path)


class RecordTail:
    """Incremental reader of a JSON-lines file another process appends to.

    Each ``read_new()`` returns the complete lines added since the last call; a
    partial last line waits for its newline. A line that is not a JSON object
    is counted in ``skipped_lines`` and dropped.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.skipped_lines = 0

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        records = []
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                self.skipped_lines += 1
        return records


def settings_for(scenario: Scenario, records_path: Path, id_prefix: str) -> LoadSettings:
    """The clients the scenario's ``load`` section describes (think time, tool mix,
    reconnect policy, protocol), writing through its ``ledger`` tool, acknowledging by its
    ``ledger.success_when`` and retrying unanswered writes ``ledger.retry_unanswered`` times."""
    load, server, ledger = scenario.load, scenario.server, scenario.ledger
    return LoadSettings(
        records_path=str(records_path),
        mcp_path=server.path,
        protocol=load.protocol,
        think_time_s=load.think_time,
        tool_mix=dict(load.tool_mix),
        tool_arguments={tool: dict(arguments) for tool, arguments in load.tool_arguments.items()},
        reconnect_policy=load.reconnect.policy,
        backoff_base_s=load.reconnect.base,
        backoff_cap_s=load.reconnect.cap,
        request_timeout_s=load.request_timeout,
        hold_stream=load.hold_stream,
        headers=server.resolved_headers(),
        id_prefix=id_prefix,
        seed=scenario.seed,
        write_tool=ledger.tool,
        write_arguments=dict(ledger.arguments),
        write_content=ledger.content,
        success_when=ledger.success_when.model_dump(mode="json"),
        retry_unanswered=ledger.retry_unanswered,
    )
