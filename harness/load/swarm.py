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
import sys
import time
from pathlib import Path
from typing import Any

from harness.load.settings import SETTINGS_ENV, LoadSettings
from harness.stack.net import free_port, require_loopback
from harness.stack.processes import OwnedProcess, ProcessRegistry

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SETTINGS_FILE = "load-settings.json"
REPO_ROOT = Path(__file__).resolve().parents[2]

FINAL_BATCH_GRACE_S = 5
"""Matches the locustfile: how long the master waits for workers' last records after stop."""


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
        *,
        base_url: str,
        users: int,
        spawn_rate: float,
        run_time_s: float,
        workers: int = 1,
        stop_timeout_s: float = 2.0,
        expect_workers_max_wait_s: float = 30.0,
        allow_remote: bool = False,
    ) -> None:
        require_loopback(base_url, allow_remote=allow_remote, what="load target")
        if users < 1 or spawn_rate <= 0 or run_time_s <= 0 or workers < 1:
            raise ValueError(
                "a swarm needs users >= 1, spawn_rate > 0, run_time_s > 0, workers >= 1"
            )
        self.registry = registry
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self.users = users
        self.spawn_rate = spawn_rate
        self.run_time_s = math.ceil(run_time_s)  # Locust takes whole seconds
        self.worker_count = workers
        self.stop_timeout_s = math.ceil(stop_timeout_s)
        self.expect_workers_max_wait_s = math.ceil(expect_workers_max_wait_s)
        self.master_port: int | None = None
        self.master: OwnedProcess | None = None
        self.workers: list[OwnedProcess] = []

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
            "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
            "--expect-workers", str(self.worker_count),
            "--expect-workers-max-wait", str(self.expect_workers_max_wait_s),
            "-u", str(self.users), "-r", str(self.spawn_rate), "-t", f"{self.run_time_s}s",
            "--host", self.base_url,
            "--stop-timeout", str(self.stop_timeout_s),
            "--exit-code-on-error", "0",
        ]  # fmt: skip

    def worker_argv(self, master_port: int) -> list[str]:
        return [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE),
            "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port),
        ]  # fmt: skip

    def process_env(self) -> dict[str, str]:
        """The harness's environment without LOCUST_* overrides, plus the settings file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
        env[SETTINGS_ENV] = str(self.settings_path)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return env

    def start(self) -> None:
        """Write settings, start the master and the workers; the test begins once all connect."""
        if self.master is not None:
            raise RuntimeError("this swarm was started already")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.settings.write(self.settings_path)
        self.master_port = free_port()
        env = self.process_env()
        self.master = self.registry.start(
            "locust-master", self.master_argv(self.master_port), env=env, cwd=self.run_dir
        )
        for index in range(self.worker_count):
            worker = self.registry.start(
                f"locust-worker-{index}",
                self.worker_argv(self.master_port),
                env=env,
                cwd=self.run_dir,
            )
            self.workers.append(worker)

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
