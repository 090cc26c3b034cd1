"""Processes owned by a run: started, logged, recorded and stopped by pid.

Every process the harness starts is written to the run directory's
``owner.json`` together with the kernel's start time and a digest of its command
line, so a later run can find the processes of a run whose harness died and stop
exactly those (a pid reused by an unrelated process has another start time or
command line and is left alone). Only a record this user wrote, in a directory only
this user may change, is trusted (``reap_stale_runs``).

Every child gets a minimal environment (``child_environment``), never the harness's
own: that may hold CI secrets, and anything a child holds can be read by whoever
controls the child (``/proc/<pid>/environ`` of a Postgres server is readable by
anything running as the Postgres user).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"
OWNER_FORMAT = 2
"""Version of ``owner.json``: 2 records each process's command-line digest; a record
without them (an older harness's) is not trusted to kill anything."""
MAX_OWNER_BYTES = 1 << 20

SYSTEM_VARS: tuple[str, ...] = ("PATH", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR")
"""What every child gets from the harness's environment (``NAME*``: every name with that
prefix): where programs are, the locale and time zone (initdb's default locale, log
timestamps) and the temporary directory. No ``PG*`` variable: they configure libpq for
some other database (``PGPASSWORD``, ``PGHOST``, ``PGSSLMODE`` ...); the harness's
Postgres tools are given their connection explicitly."""
PROGRAM_VARS: tuple[str, ...] = (
    *SYSTEM_VARS,
    "HOME",
    "USER",
    "LOGNAME",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONHASHSEED",
    "PYTHONFAULTHANDLER",
    "PYTHONWARNINGS",
    "PYTHONDEVMODE",
    "COVERAGE_PROCESS_START",
)
"""What a program run as the harness's own user gets (the MCP server, Locust): the
system variables, who the user is and where its home is, and what selects and tunes
the Python interpreter (the reference server and Locust run on the harness's Python)."""


def child_environment(
    additions: Mapping[str, str] | None = None,
    *,
    keep: Iterable[str] = SYSTEM_VARS,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a child the stack starts: the variables of ``environ`` (default:
    the harness's own) named in ``keep`` (``NAME*`` keeps every name with that prefix),
    then ``additions`` on top; nothing else. PATH is always set (``os.defpath`` if the
    harness has none): archive_command and the tools' shells need it.

    The allow-list, not a deny-list: a CI runner's environment holds secrets under any
    name, and a child does not need them. A user's server that needs more names it in
    ``server.env`` (``{NAME: "${NAME}"}`` passes the harness's value through), which
    arrives here as additions.
    """
    source = os.environ if environ is None else environ
    names = set()
    prefixes = []
    for pattern in keep:
        if pattern.endswith("*"):
            prefixes.append(pattern[:-1])
        else:
            names.add(pattern)
    env = {
        name: value
        for name, value in source.items()
        if name in names or any(name.startswith(prefix) for prefix in prefixes)
    }
    env.setdefault("PATH", os.defpath)
    env.update(additions or {})
    return env


def write_private(path: Path, text: str, *, owner: str | None = None) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (0600 from the first byte: a
    new file under a temporary name, then renamed over ``path``); ``owner`` (a user name)
    becomes its owner, with that user's group, before it gets its name."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "w", closefd=False) as file:
            file.write(text)
        os.fchmod(fd, 0o600)
        if owner is not None:
            account = pwd.getpwnam(owner)
            os.fchown(fd, account.pw_uid, account.pw_gid)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return path


def private_dir(path: Path, *, owner: str | None = None) -> Path:
    """``path`` as a directory (made if missing) that only its owner may enter: 0700,
    owned by ``owner`` (a user name, with its group) when given."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    if owner is not None:
        shutil.chown(path, owner, pwd.getpwnam(owner).pw_gid)
    return path


_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_ACL_UNDEFINED_ID = 0xFFFFFFFF


def search_only_acl(uid: int) -> bytes:
    """A POSIX access ACL (``system.posix_acl_access``, the kernel's format) of a
    directory: its owner rwx, user ``uid`` search only (x), nobody else anything."""
    entries = [
        (_ACL_USER_OBJ, 0o7, _ACL_UNDEFINED_ID),
        (_ACL_USER, 0o1, uid),
        (_ACL_GROUP_OBJ, 0o0, _ACL_UNDEFINED_ID),
        (_ACL_MASK, 0o1, _ACL_UNDEFINED_ID),
        (_ACL_OTHER, 0o0, _ACL_UNDEFINED_ID),
    ]
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def let_user_through(directory: Path, user: str) -> str:
    """Let ``user`` (the Postgres user, when the harness is root) pass through a private
    (0700) directory to what it owns inside: search (x) only, so it cannot list the
    directory, and opens only what it names and the file's own mode lets it (the
    harness's files there that matter are 0600, its logs in a 0700 directory). A POSIX
    ACL naming the user where the file system has them (``stat`` then shows 0710: the
    group bits are the ACL's mask); else the directory's group becomes the user's own
    group, with search only (0710). Returns which."""
    account = pwd.getpwnam(user)
    try:
        os.setxattr(directory, "system.posix_acl_access", search_only_acl(account.pw_uid))
        return "acl"
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    os.chown(directory, -1, account.pw_gid)
    directory.chmod(0o710)
    log.info(
        "%s: no POSIX ACLs on this file system; group %s (of %s) may search it",
        directory,
        account.pw_gid,
        user,
    )
    return "group"


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone or a zombie.

    Read from /proc rather than psutil: a process's identity (pid + start) must compare
    exactly across runs, and psutil offers the start only as a float of seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def proc_cmdline_digest(pid: int) -> str | None:
    """``cmdline_digest`` of what /proc says ``pid`` runs, or None if it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return hashlib.sha256(raw).hexdigest()


def cmdline_digest(argv: Sequence[str]) -> str:
    """SHA-256 of a command line as /proc/<pid>/cmdline holds it (each argument followed
    by NUL). A digest, not the text: an argv may carry a secret (a user's
    ``{database_url}``), and the owner file does not need it to recognise the process."""
    return hashlib.sha256(b"".join(os.fsencode(arg) + b"\0" for arg in argv)).hexdigest()


def is_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True while ``pid`` runs (and, if given, is the process that started at ``start_ticks``)."""
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return False
    return start_ticks is None or ticks == start_ticks


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (none once it is gone)."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except (psutil.Error, OSError):
        return []


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


def reap_adopted(owned: Collection[int], names: Collection[str] = ("postgres",)) -> list[int]:
    """Collect the exit status of adopted orphans named ``names`` that have exited
    (zombies whose subreaper this process is), leaving ``owned`` children to their own
    ``Popen`` and any other child to the ``subprocess`` call waiting for it. Patroni
    detaches the postmasters it starts: when one stops (a switchover's demotion) it stays
    a zombie of ours until reaped, and Patroni waits for it to go away."""
    exited = []
    for child in psutil.Process().children():
        if child.pid in owned:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE and child.name() in names:
                exited.append(child.pid)
        except psutil.Error:
            pass
    reap(exited)
    return exited


def signal_pid(pid: int, sig: int) -> None:
    if pid <= 1:  # 0 and -1 would signal a whole group, or every process there is
        raise ValueError(f"refusing to signal pid {pid}")
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
    cmdline_digests: tuple[str, ...] = ()
    """Digests of the command lines /proc may show for it: its argv, and (pinned)
    ``taskset``'s before that execs it."""

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
        registry's CPUs when it has some (``taskset`` execs the command: the pid is the same).

        ``env`` is the child's whole environment, made with ``child_environment``; None is
        ``child_environment()`` (the system variables only), never the harness's own."""
        log_dir = private_dir(self.run_dir / "logs")
        log_path = log_dir / (log_name or f"{name}.log")
        command = list(argv)
        digests = [cmdline_digest(command)]
        pinned = cpus or self.cpus
        if pinned and shutil.which("taskset"):
            command = ["taskset", "-c", ",".join(str(c) for c in sorted(pinned)), *command]
            digests.append(cmdline_digest(command))
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_environment() if env is None else env,
                cwd=cwd,
                **run_as(user),
                start_new_session=True,
            )
        proc = OwnedProcess(name, popen, log_path, proc_start_ticks(popen.pid), tuple(digests))
        self.processes.append(proc)
        self.save()
        return proc

    def save(self) -> None:
        owner = {
            "format": OWNER_FORMAT,
            "harness_pid": os.getpid(),
            "harness_start_ticks": proc_start_ticks(os.getpid()),
            "processes": [
                {
                    "name": p.name,
                    "pid": p.pid,
                    "start_ticks": p.start_ticks,
                    "cmdline_sha256": list(p.cmdline_digests),
                }
                for p in self.processes
                if p.start_ticks is not None  # gone before it was seen: nothing to reap
            ],
        }
        write_private(self.run_dir / OWNER_FILE, json.dumps(owner, indent=1))

    def reap_adopted(self) -> list[int]:
        """``reap_adopted`` of everything but the processes this registry started."""
        return reap_adopted({p.pid for p in self.processes})

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


class UntrustedRun(Exception):
    """A run directory or owner file the reaper must not act on; the message says why."""


@dataclass(frozen=True)
class RecordedProcess:
    """One process of an owner file: what it must still be for the reaper to kill it."""

    name: str
    pid: int
    start_ticks: int
    cmdline_sha256: tuple[str, ...]

    def is_running(self) -> bool:
        """Whether ``pid`` is still this process: same start time and command line."""
        ticks = proc_start_ticks(self.pid)
        if ticks is None or ticks != self.start_ticks:
            return False
        return proc_cmdline_digest(self.pid) in self.cmdline_sha256


@dataclass(frozen=True)
class OwnerRecord:
    harness_pid: int
    harness_start_ticks: int
    processes: tuple[RecordedProcess, ...]


def _number(value: object, least: int) -> int | None:
    """``value`` if it is an integer (not a bool) of at least ``least``, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= least:
        return value
    return None


def parse_owner_record(text: str) -> OwnerRecord:
    """An owner file's content; ValueError saying what is wrong with it. Every pid must be
    above 1 (0 and -1 would signal a group, or everything) and have its start time."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    if raw.get("format") != OWNER_FORMAT:
        raise ValueError(f"format {raw.get('format')!r}, not {OWNER_FORMAT} (an older harness?)")
    pid, ticks = _number(raw.get("harness_pid"), 2), _number(raw.get("harness_start_ticks"), 0)
    if pid is None or ticks is None:
        raise ValueError("harness_pid / harness_start_ticks missing or not valid")
    entries = raw.get("processes")
    if not isinstance(entries, list):
        raise ValueError("processes is not a list")
    processes = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError("a process entry is not an object")
        name = str(entry.get("name"))
        child, started = _number(entry.get("pid"), 2), _number(entry.get("start_ticks"), 0)
        if child is None or started is None:
            raise ValueError(f"process {name!r}: pid / start_ticks missing or not valid")
        digests = entry.get("cmdline_sha256")
        if not (
            isinstance(digests, list)
            and digests
            and all(isinstance(d, str) and len(d) == 64 for d in digests)
        ):
            raise ValueError(f"process {name!r}: no command-line digest")
        processes.append(RecordedProcess(name, child, started, tuple(digests)))
    return OwnerRecord(pid, ticks, tuple(processes))


def _trusted(info: os.stat_result, what: str) -> None:
    """Raise UntrustedRun unless ``info`` is this user's and only this user may change it."""
    uid = os.geteuid()
    if info.st_uid != uid:
        raise UntrustedRun(f"{what} belongs to uid {info.st_uid}, not to this user (uid {uid})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedRun(
            f"{what} is writable by others (mode {stat.S_IMODE(info.st_mode):o}): "
            "anyone may have written it"
        )


def read_owner_record(run_dir: Path) -> OwnerRecord | None:
    """The owner record of ``run_dir`` if this user can trust it; None when the directory
    has none (not a run's, or a run that ended). Raises UntrustedRun when the directory or
    the file is another user's, writable by others, a symlink, or malformed."""
    try:
        info = os.lstat(run_dir)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedRun("not a directory (a symlink?)")
    _trusted(info, "the directory")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(run_dir / OWNER_FILE, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UntrustedRun(f"{OWNER_FILE} cannot be opened safely ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedRun(f"{OWNER_FILE} is not a regular file")
        _trusted(info, OWNER_FILE)
        data = file.read(MAX_OWNER_BYTES + 1)
    if len(data) > MAX_OWNER_BYTES:
        raise UntrustedRun(f"{OWNER_FILE} is larger than {MAX_OWNER_BYTES} bytes")
    try:
        return parse_owner_record(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UntrustedRun(f"{OWNER_FILE} is malformed: {exc}") from None


def reap_stale_runs(parent: Path, prefix: str) -> list[Path]:
    """Stop the processes and remove the directories of runs whose harness is dead.

    Only a run of this user is touched: its directory and ``owner.json`` are this user's
    and writable by nobody else (another account could otherwise plant a record naming
    any process, and a root harness would kill it). Only a recorded process that still
    is that process (its pid, start time and command line as /proc shows them) is
    signalled. A directory or record that fails a check is skipped with a warning,
    never an error: another user's run, or a malformed record, must not stop this run
    from starting. Returns the directories removed.
    """
    removed = []
    for run_dir in sorted(parent.glob(prefix + "*")):
        try:
            owner = read_owner_record(run_dir)
        except UntrustedRun as exc:
            log.warning("left alone (not a run this harness may clean up): %s: %s", run_dir, exc)
            continue
        except OSError as exc:
            log.warning("left alone (cannot be read): %s: %s", run_dir, exc)
            continue
        if owner is None or is_alive(owner.harness_pid, owner.harness_start_ticks):
            continue
        live = [p.pid for p in owner.processes if p.is_running()]
        for pid in live:
            try:
                signal_pid(pid, signal.SIGKILL)
            except OSError as exc:
                log.warning("%s: could not stop pid %s of a dead run: %s", run_dir, pid, exc)
        wait_gone(live, 5.0)
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed


async def poll_until(
    ready: Callable[[], Awaitable[bool]],
    timeout_s: float,
    *,
    process: OwnedProcess | None = None,
    interval_s: float = 0.1,
) -> bool:
    """Ask ``ready()`` until it says yes (True), or until ``process`` has exited or
    ``timeout_s`` has passed (False): the caller then raises with what it knows."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and not process.running():
            return False
        if await ready():
            return True
        await asyncio.sleep(interval_s)
    return False
