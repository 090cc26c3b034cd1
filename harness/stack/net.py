"""Loopback addresses and free ports: all traffic of a run stays on this machine."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import psutil

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself listens on ``port``: what answers there is ours, not
    a stranger that took the port first (a part that lost the race may keep running). A
    process this account may not inspect counts as listening: the caller goes by what
    answers, as it would without this check."""
    try:
        sockets = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.AccessDenied:
        return True
    except psutil.NoSuchProcess:
        return False
    return any(s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == port for s in sockets)


def taken_by_another(pid: int, port: int) -> bool:
    """Whether something other than process ``pid`` accepts connections on ``port``."""
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.2).close()
    except OSError:
        return False
    return not listens_on(pid, port)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_loopback(url: str, *, allow_remote: bool = False, what: str = "target") -> None:
    """Refuse a non-loopback target unless the user explicitly allowed it."""
    host = urlsplit(url).hostname or ""
    if not allow_remote and not is_loopback_host(host):
        raise ValueError(
            f"{what} {url} is not on this machine (loopback only); pass --allow-remote to target it"
        )
