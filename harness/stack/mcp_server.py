"""The MCP server under test as a process of the run: the reference server or a user's command.

The reference server is started with its admin endpoint on (``harness/server/admin.py``):
a token made for the instance goes through the environment, never argv, and the runbook
reaches it at ``admin_url`` with ``Authorization: Bearer <admin_token>``.

Secrets go through the environment, never argv: every local account can read any
process's command line (``ps``), only the process's own user its environment. The DSN
(with the application's password) is in ``server.database_url_env`` (``DATABASE_URL``
by default; the reference server reads that). A user's ``server.command`` may still
say ``{database_url}``, which then puts the password on the command line: it works,
with a warning.

The environment is ``child_environment``'s allow-list (``PROGRAM_VARS``), then the
scenario's ``server.env`` (``${VAR}`` expanded from the harness's environment: the way
to hand a user's server anything else it needs, e.g. ``{API_KEY: "${API_KEY}"}``), then
the DSN, the port (``server.port_env``) and the admin token. Nothing else of the
harness's environment reaches the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import ServerConfig
from harness.stack.net import LOOPBACK
from harness.stack.postgres import StackError
from harness.stack.processes import (
    PROGRAM_VARS,
    OwnedProcess,
    ProcessRegistry,
    child_environment,
    write_private,
)

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "MCP_ADMIN_TOKEN"
"""Where the reference server reads its admin token (its ``--help`` says so too)."""
REFERENCE_DSN_ENV = "DATABASE_URL"
"""Where the reference server reads its DSN (``--database-url`` defaults to it)."""
DSN_PLACEHOLDER = "{database_url}"
SECRET_PLACEHOLDERS = (DSN_PLACEHOLDER, "{password}")
"""Placeholders that put the application's password where they stand."""
_DSN = re.compile(
    r"^postgresql://(?P<user>[^:@/]+)(?::(?P<password>[^@/]*))?@(?P<host>[^:,/]+):(?P<port>\d+)"
    r"[^/]*/(?P<database>[^?]+)"
)


def placeholders(database_url: str, port: int) -> dict[str, str]:
    """What ``server.command`` and ``server.env`` may name, for a server configured by
    separate settings rather than a URL: ``{writer_host}``/``{writer_port}`` are the first
    host of the DSN (the ``pg-primary`` proxy: with ``topology.writer: endpoint`` it follows
    the primary), ``{database}``, ``{user}``, ``{password}``; and ``{port}``, the server's."""
    found = _DSN.match(database_url)
    if found is None:
        raise ValueError("not a DSN the stack builds: postgresql://user:password@host:port/db")
    return {
        "{port}": str(port),
        DSN_PLACEHOLDER: database_url,
        "{writer_host}": found["host"],
        "{writer_port}": found["port"],
        "{database}": found["database"],
        "{user}": found["user"],
        "{password}": found["password"] or "",
    }


def fill(template: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template


def reference_server_command(config: ServerConfig, *, statement_cache: bool = True) -> list[str]:
    """argv of the reference server (``harness/server``), placeholders unfilled; without
    ``statement_cache`` behind a pooler in transaction mode."""
    argv = [sys.executable, "-m", "harness.server", "--port", "{port}", "--path", config.path]
    if not statement_cache:
        argv += ["--statement-cache-size", "0"]
    argv += ["--session-idle-timeout", f"{config.session_idle_timeout:g}"]
    argv += ["--max-sessions", str(config.max_sessions)]
    if config.json_response:
        argv.append("--json-response")
    guard = config.protection
    argv += [
        "--admission-rate", f"{guard.admission.rate:g}",
        "--admission-burst", str(guard.admission.burst),
        "--admission-queue", str(guard.admission.queue),
        "--admission-max-wait", f"{guard.admission.max_wait:g}",
        "--tool-concurrency", str(guard.tool_concurrency),
        "--defer-expensive" if guard.defer_expensive else "--no-defer-expensive",
        "--storm-threshold", f"{guard.storm_threshold:g}",
        "--breaker-error-rate", f"{guard.breaker.error_rate:g}",
        "--breaker-window", f"{guard.breaker.window:g}",
        "--breaker-min-calls", str(guard.breaker.min_calls),
        "--breaker-cooldown", f"{guard.breaker.cooldown:g}",
    ]  # fmt: skip
    if config.fault_mode != "none":
        argv += ["--fault-mode", config.fault_mode]
    return argv


@dataclass(frozen=True)
class Rollout:
    """A rolling redeploy on CLOCK_MONOTONIC: when the first process of the new release
    was started (it cannot have served anything before) and when every instance was ready."""

    first_started: float
    done: float

    @property
    def duration_s(self) -> float:
        return self.done - self.first_started


@dataclass
class McpServerProcess:
    """One MCP server instance: command, environment, port and readiness check. ``config``
    is the release it runs (a redeploy swaps it; the port stays)."""

    config: ServerConfig
    port: int
    database_url: str
    statement_cache: bool = True
    """False behind a pooler in transaction mode (the reference server's own setting)."""
    process: OwnedProcess | None = None
    _admin_token: str = field(
        default_factory=lambda: secrets.token_urlsafe(32), init=False, repr=False
    )
    """One per instance, kept across its restarts and releases, so a runbook that read it
    before a restart still holds the right one after."""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{self.config.path}"

    @property
    def is_reference(self) -> bool:
        """Whether this instance runs the reference server (a release may swap it for a command)."""
        return self.config.command is None

    @property
    def admin_url(self) -> str | None:
        """The reference server's admin endpoint, straight to the port (no proxy in between);
        None for a user's server."""
        return f"http://{LOOPBACK}:{self.port}/admin" if self.is_reference else None

    @property
    def admin_token(self) -> str | None:
        """The bearer token of ``admin_url``; None for a user's server. Never log it."""
        return self._admin_token if self.is_reference else None

    def argv(self) -> list[str]:
        template = self.config.command or reference_server_command(
            self.config, statement_cache=self.statement_cache
        )
        values = placeholders(self.database_url, self.port)
        return [fill(arg, values) for arg in template]

    @property
    def dsn_on_command_line(self) -> bool:
        """Whether the user's ``server.command`` puts the password (in the DSN or alone) in argv."""
        return any(p in arg for arg in self.config.command or [] for p in SECRET_PLACEHOLDERS)

    def environment(self) -> dict[str, str]:
        """The server's whole environment (the module's docstring lists what is in it)."""
        values = placeholders(self.database_url, self.port)
        additions = {k: fill(os.path.expandvars(v), values) for k, v in self.config.env.items()}
        if self.is_reference:
            additions[REFERENCE_DSN_ENV] = self.database_url
        if self.config.database_url_env:
            additions[self.config.database_url_env] = self.database_url
        if self.config.port_env:
            additions[self.config.port_env] = str(self.port)
        if self.admin_token is not None:
            additions[ADMIN_TOKEN_ENV] = self.admin_token
        return child_environment(additions, keep=PROGRAM_VARS)

    def start(self, registry: ProcessRegistry, name: str = "mcp-server") -> OwnedProcess:
        if self.dsn_on_command_line:
            log.warning(
                "server.command has %s: the database password is on the server's command "
                "line, which every local account can read (ps); read the DSN from the "
                "environment instead (server.database_url_env, %s by default)",
                DSN_PLACEHOLDER,
                REFERENCE_DSN_ENV,
            )
        self.process = registry.start(name, self.argv(), env=self.environment())
        return self.process

    async def wait_ready(self) -> None:
        """GET the ready path until 200 (or until the process exits or the timeout passes)."""
        ready_url = f"http://{LOOPBACK}:{self.port}{self.config.ready or self.config.path}"
        await wait_until_ready(ready_url, self.config, self.process)

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL after ``timeout_s``."""
        if self.process is not None:
            self.process.stop(timeout_s)


async def wait_until_ready(
    ready_url: str, config: ServerConfig, process: OwnedProcess | None = None
) -> None:
    """GET ``ready_url`` until 200 (any answer of the MCP endpoint when ``config.ready`` is
    null), until ``process`` exits, or until ``config.ready_timeout``: then StackError."""
    deadline = time.monotonic() + config.ready_timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and not process.running():
            last = f"process exited with {process.popen.returncode}"
            break
        status = await asyncio.to_thread(_http_status, ready_url)
        if status == 200 or (config.ready is None and status in (400, 405, 406)):
            return
        last = f"HTTP {status}" if status else "connection refused"
        await asyncio.sleep(0.1)
    tail = f" Log tail:\n{process.log_tail()}" if process else ""
    raise StackError(f"MCP server did not become ready at {ready_url} ({last}).{tail}")


def write_database_url_file(path: Path, variable: str, database_url: str) -> Path:
    """``variable=database_url`` in ``path``, readable by its owner only (it holds the
    application's password), written whole: a server waiting for the file never reads
    half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_private(path, f"{variable}={database_url}\n")


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None
