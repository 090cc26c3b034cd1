"""A small typed client for Toxiproxy's HTTP API, and the server process.

Why not ``toxiproxy-python`` (0.1.1): its API address is class-wide state (two
stacks in one process would share it), its calls take no timeout, statuses
other than 400/404/409 pass silently, it updates proxies with the deprecated
POST and it needs the ``future`` Python 2 shim. A fault injector that can hang
or fail silently would make measurements lie, so this client gives every call
a timeout and raises on every unexpected status.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

Stream = Literal["upstream", "downstream"]
TOXIC_TYPES = (
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
)


class ToxiproxyError(RuntimeError):
    """A Toxiproxy API call failed or answered with an unexpected status."""


@dataclass(frozen=True)
class Proxy:
    name: str
    listen: str
    upstream: str
    enabled: bool

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Toxic:
    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: dict[str, Any]


class ToxiproxyClient:
    """Toxiproxy v2 HTTP API; every call has a timeout and raises on failure."""

    def __init__(self, host: str, port: int, timeout_s: float = 3.0) -> None:
        self.base_url = f"http://{host}:{port}"
        self.timeout_s = timeout_s

    def _call(
        self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,)
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ToxiproxyError(f"{method} {self.base_url}{path}: {exc}") from exc
        if status not in expect:
            raise ToxiproxyError(
                f"{method} {self.base_url}{path} answered {status}: {payload.decode(errors='replace')[:300]}"
            )
        return json.loads(payload) if payload.strip() else None

    def version(self) -> str:
        request = urllib.request.Request(self.base_url + "/version")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read().decode().strip()
        except (urllib.error.URLError, OSError) as exc:
            raise ToxiproxyError(f"GET {self.base_url}/version: {exc}") from exc
        try:
            return str(json.loads(text)["version"])
        except (ValueError, KeyError, TypeError):
            return text

    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> Proxy:
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        return _proxy(self._call("POST", "/proxies", body, expect=(201,)))

    def proxy(self, name: str) -> Proxy:
        return _proxy(self._call("GET", f"/proxies/{name}"))

    def proxies(self) -> dict[str, Proxy]:
        return {name: _proxy(p) for name, p in self._call("GET", "/proxies").items()}

    def update_proxy(
        self, name: str, *, upstream: str | None = None, enabled: bool | None = None
    ) -> Proxy:
        body: dict[str, Any] = {}
        if upstream is not None:
            body["upstream"] = upstream
        if enabled is not None:
            body["enabled"] = enabled
        return _proxy(self._call("PATCH", f"/proxies/{name}", body))

    def delete_proxy(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}", expect=(204,))

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        attributes: dict[str, Any] | None = None,
    ) -> Toxic:
        if type not in TOXIC_TYPES:
            raise ToxiproxyError(f"unknown toxic type {type!r}; known: {', '.join(TOXIC_TYPES)}")
        body = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes or {},
        }
        return _toxic(self._call("POST", f"/proxies/{proxy}/toxics", body))

    def toxics(self, proxy: str) -> list[Toxic]:
        return [_toxic(t) for t in self._call("GET", f"/proxies/{proxy}/toxics")]

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}", expect=(204,))

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset", expect=(204,))


def _proxy(raw: dict[str, Any]) -> Proxy:
    return Proxy(raw["name"], raw["listen"], raw["upstream"], bool(raw["enabled"]))


def _toxic(raw: dict[str, Any]) -> Toxic:
    return Toxic(
        raw["name"], raw["type"], raw["stream"], float(raw["toxicity"]), raw.get("attributes") or {}
    )
