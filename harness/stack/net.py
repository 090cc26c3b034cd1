"""Loopback addresses and free ports: all traffic of a run stays on this machine."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


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
