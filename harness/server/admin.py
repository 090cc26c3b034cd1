"""The reference server's admin endpoint: the levers a DR runbook pulls while it runs.

A runbook's fixes act through real interfaces; for this server they are:
turn admission control on or off at a rate, hold a tool's circuit open or
closed, and make the database pool connect anew (after a promotion, or to a
new DSN). Off unless a token is configured; every change is logged at WARNING.

Token: the environment variable `MCP_ADMIN_TOKEN`, or `--admin-token-file
PATH` (the file's content, surrounding whitespace stripped); giving both is a
usage error (exit 2). There is no flag taking the token itself: argv is
readable by every local user (`ps`), a process's environment and a 0600 file
only by its owner. A token is at least 16 printable ASCII characters without
spaces (`python -c 'import secrets; print(secrets.token_urlsafe(32))'`). The
harness starts the reference server with a fresh token per instance.

Access, checked in this order on every path under `/admin/`:

- the client's address (the TCP peer; proxy headers are ignored) must be
  loopback, 127.0.0.0/8 or ::1, or in `MCP_ADMIN_ALLOW`, else
  `403 {"error": "forbidden"}`;
- `Authorization: Bearer <token>` must match (constant-time compare), else
  `401 {"error": "unauthorized"}` with `WWW-Authenticate: Bearer`.

`MCP_ADMIN_ALLOW` (unset by default) is a comma-separated list of addresses or
networks (`172.18.0.1/32`) allowed besides loopback. It is for a server in a
container: a request through a published port reaches it from the network's
gateway, never from loopback. The harness's docker backend sets it to that one
gateway address, so other containers on the network are still refused; the
token is required all the same. A value that does not parse stops the server
at start.

Neither refusal says more. Without a token the paths do not exist (404).
Then: unknown path 404, wrong method 405, a bad body 400 with
`{"error": "<what is wrong>"}`. Bodies are JSON objects (at most 64 KiB);
unknown keys are refused. Replies are JSON.

`GET /admin/state` -> 200:

    {"admission": {"enabled": bool, "rate": float, "burst": int, "queue": int,
                   "max_wait": float, "queue_depth": int, "admitted": int, "shed": int},
     "storm": {"active": bool, "watching": bool, "new_sessions_per_s": float | null,
               "threshold_per_s": float},
     "tool_concurrency": int,
     "breakers": {"automatic": {"error_rate": float, "window": float, "min_calls": int,
                                "cooldown": float} | null,
                  "tools": {"<tool>": {"state": "closed" | "half_open" | "open",
                                       "mode": "auto" | "open" | "closed",
                                       "calls": int, "failures": int,
                                       "error_rate": float | null, "rejected": int}}},
     "pool": {"dsn": "<DSN, passwords as ***>", "hosts": ["host:port", ...],
              "last_connected_host": "host:port" | null, "size": int, "idle": int,
              "in_use": int, "max_size": int, "waiting": int,
              "db": "ok" | "unreachable" | "unknown"},
     "fault_mode": "none" | "write-garbage" | "corrupt-state"}

`admission.rate`... are the current settings (also kept while admission is
off); `admitted` and `shed` count since start. A breaker's `calls`,
`failures` and `error_rate` are its automatic breaker's sliding window (0, 0,
null without one); `rejected` counts fast failures since start.

`POST /admin/admission` `{"rate": number >= 0, "burst"?: int >= 1, "queue"?: int >= 0,
"max_wait"?: number >= 0}` -> 200 `{"before": <admission>, "after": <admission>}`.
Admission of new sessions (2026-07-28: new connections) at `rate` per
second from now on; 0 turns it off. Omitted keys keep their current value.
Turning it on starts with a full bucket; a change keeps the bucket's level
and the turns already given; turning it off lets queued waiters go at their
turn. `/metrics` shows the `mcp_admission_*` families from the first time
it is on.

`POST /admin/breaker` `{"tool": "<name>", "state": "open" | "closed" | "auto"}`
-> 200 `{"tool": name, "before": <tool>, "after": <tool>}`. `open`: every
call of the tool fails at once with a tool error (`isError`, text beginning
"circuit open: "); `closed`: every call goes through, whatever fails; `auto`:
the automatic breaker again (if `--breaker-error-rate` > 0), starting closed
with an empty window. An unknown tool is a 400 naming the tools.

`POST /admin/pool/repoint` `{}` or `{"dsn": "postgresql://..."}` -> 200
`{"expired": int, "closed_idle": int, "in_use": int, "dsn_changed": bool,
"before": <pool>, "after": <pool>}`. Every pooled connection is expired: the
idle ones are closed at once, the busy ones when their call ends, and the
next calls connect anew (after a promotion they find the new primary).
With `dsn` (a URL `--database-url` would take, possibly multi-host) new
connections go there from now on; an unusable one is a 400 and changes
nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from harness.server.notes import NotesStore, PoolState
from harness.server.shield import BREAKER_MODES, BreakerMode, Protection

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/admin"
ADMIN_ALLOW_ENV = "MCP_ADMIN_ALLOW"
"""Addresses or networks allowed besides loopback (comma-separated); unset: loopback only."""
MIN_TOKEN_LENGTH = 16
MAX_BODY_BYTES = 64 * 1024
TOKEN_SHAPE = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII without spaces: what an Authorization header can carry as is."""

Json = dict[str, Any]


class AdminRequestError(ValueError):
    """A request the admin endpoint refuses with 400; the message says what is wrong."""


def check_token(token: str) -> str:
    """The configured token, or ValueError saying what a usable one looks like."""
    if len(token) < MIN_TOKEN_LENGTH or not TOKEN_SHAPE.fullmatch(token):
        raise ValueError(
            f"the admin token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters "
            "without spaces; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow(value: str | None) -> tuple[Network, ...]:
    """The networks of ``MCP_ADMIN_ALLOW`` (``172.18.0.1``, ``172.18.0.1/32``, ...); ValueError
    names the entry that is not an address or network."""
    networks = []
    for entry in (value or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError:
            raise ValueError(
                f"{ADMIN_ALLOW_ENV}: {entry!r} is not an address or network (e.g. 172.18.0.1/32)"
            ) from None
    return tuple(networks)


def is_allowed(host: str | None, allow: Sequence[Network] = ()) -> bool:
    """Whether a client address is loopback or in one of the ``allow`` networks."""
    if is_loopback(host):
        return True
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allow)


def is_loopback(host: str | None) -> bool:
    """Whether a client address is loopback (127.0.0.0/8, ::1, or IPv4-mapped 127.x)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme in any case), else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def access_refusal(
    client_host: str | None,
    authorization: str | None,
    token: str,
    allow: Sequence[Network] = (),
) -> int | None:
    """None to let the request in, else its status: 403 neither loopback nor allowed, 401 no
    or wrong token.

    The address is checked first, so a client elsewhere learns nothing about tokens.
    """
    if not is_allowed(client_host, allow):
        return 403
    offered = bearer_token(authorization)
    if offered is None or not hmac.compare_digest(offered.encode(), token.encode()):
        return 401
    return None


def _only_keys(body: Json, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise AdminRequestError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )


def _number(body: Json, key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AdminRequestError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _integer(body: Json, key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminRequestError(f"{key} must be an integer, got {value!r}")
    return value


def parse_admission(body: Json, protection: Protection) -> tuple[float, int, int, float]:
    """(rate, burst, queue, max_wait_s) of a POST /admin/admission; omitted keys keep theirs."""
    _only_keys(body, ("rate", "burst", "queue", "max_wait"))
    if "rate" not in body:
        raise AdminRequestError("rate is required (new sessions per second; 0 turns it off)")
    current = protection.settings
    rate = _number(body, "rate", 0.0)
    burst = _integer(body, "burst", current.admission_burst)
    queue = _integer(body, "queue", current.admission_queue)
    max_wait = _number(body, "max_wait", current.admission_max_wait_s)
    checks = [
        (rate >= 0, "rate must be >= 0 (0 turns admission off)"),
        (burst >= 1, "burst must be >= 1"),
        (queue >= 0, "queue must be >= 0"),
        (max_wait >= 0, "max_wait must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise AdminRequestError(message)
    return rate, burst, queue, max_wait


def parse_breaker(body: Json, tools: tuple[str, ...]) -> tuple[str, BreakerMode]:
    """(tool, mode) of a POST /admin/breaker."""
    _only_keys(body, ("tool", "state"))
    tool, state = body.get("tool"), body.get("state")
    if not isinstance(tool, str) or tool not in tools:
        raise AdminRequestError(f"unknown tool {tool!r}; the tools are {', '.join(tools)}")
    for mode in BREAKER_MODES:
        if state == mode:
            return tool, mode
    raise AdminRequestError(f"state must be one of {', '.join(BREAKER_MODES)}, got {state!r}")


def parse_repoint(body: Json) -> str | None:
    """The new DSN of a POST /admin/pool/repoint, or None to keep the current one."""
    _only_keys(body, ("dsn",))
    dsn = body.get("dsn")
    if dsn is not None and (not isinstance(dsn, str) or not dsn):
        raise AdminRequestError("dsn must be a postgresql:// URL")
    return dsn


def parse_body(raw: bytes) -> Json:
    """A request body as a JSON object; an empty body is {}."""
    if len(raw) > MAX_BODY_BYTES:
        raise AdminRequestError(f"body over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise AdminRequestError("body is not JSON") from None
    if not isinstance(body, dict):
        raise AdminRequestError("body must be a JSON object")
    return body


def admission_state(protection: Protection) -> Json:
    settings = protection.settings
    return {
        "enabled": settings.admission_on,
        "rate": settings.admission_rate,
        "burst": settings.admission_burst,
        "queue": settings.admission_queue,
        "max_wait": settings.admission_max_wait_s,
        "queue_depth": protection.queue_depth(),
        "admitted": protection.admitted,
        "shed": protection.shed,
    }


def tool_state(protection: Protection, tool: str) -> Json:
    breaker = protection.breakers.get(tool)
    calls, failures = (0, 0) if breaker is None else breaker.window_totals()
    return {
        "state": protection.breaker_state(tool).name.lower(),
        "mode": protection.breaker_mode(tool),
        "calls": calls,
        "failures": failures,
        "error_rate": failures / calls if calls else None,
        "rejected": protection.breaker_rejected(tool),
    }


def server_state(protection: Protection, store: NotesStore, fault_mode: str) -> Json:
    """The body of GET /admin/state."""
    settings = protection.settings
    storm = protection.storm
    automatic = (
        {
            "error_rate": settings.breaker_error_rate,
            "window": settings.breaker_window_s,
            "min_calls": settings.breaker_min_calls,
            "cooldown": settings.breaker_cooldown_s,
        }
        if settings.breakers_on
        else None
    )
    return {
        "admission": admission_state(protection),
        "storm": {
            "active": protection.storm_active(),
            "watching": settings.watches_sessions,
            "new_sessions_per_s": None if storm is None else storm.rate(),
            "threshold_per_s": settings.storm_threshold,
        },
        "tool_concurrency": settings.tool_concurrency,
        "breakers": {
            "automatic": automatic,
            "tools": {tool: tool_state(protection, tool) for tool in protection.tools},
        },
        "pool": dict(store.pool_state()),
        "fault_mode": fault_mode,
    }


def describe_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """`key old -> new, ...` for the keys that changed, or "unchanged"."""
    changed = [f"{k} {before[k]} -> {after[k]}" for k in after if before.get(k) != after[k]]
    return ", ".join(changed) or "unchanged"


Handler = Callable[[Json], Awaitable[Json]]


class AdminApi:
    """The /admin/* handlers over the server's protection and pool; one Starlette endpoint."""

    def __init__(
        self,
        *,
        token: str,
        protection: Protection,
        store: NotesStore,
        fault_mode: str,
        allow: Sequence[Network] | None = None,
    ) -> None:
        self._token = check_token(token)
        self._allow = parse_allow(os.environ.get(ADMIN_ALLOW_ENV)) if allow is None else allow
        self._protection = protection
        self._store = store
        self._fault_mode = fault_mode
        self._routes: dict[str, tuple[str, Handler]] = {
            "state": ("GET", self._state),
            "admission": ("POST", self._admission),
            "breaker": ("POST", self._breaker),
            "pool/repoint": ("POST", self._repoint),
        }

    @property
    def route_path(self) -> str:
        """The Starlette path that sends every /admin/ request here (and so past the checks)."""
        return f"{ADMIN_PREFIX}/{{rest:path}}"

    async def handle(self, request: Request) -> Response:
        client = request.client.host if request.client else None
        refusal = access_refusal(
            client, request.headers.get("authorization"), self._token, self._allow
        )
        if refusal == 403:
            logger.warning(
                "admin: refused %s %s from %s: not loopback nor allowed",
                request.method,
                request.url.path,
                client,
            )
            return JSONResponse({"error": "forbidden"}, status_code=403)
        if refusal == 401:
            logger.warning(
                "admin: refused %s %s from %s: no valid token",
                request.method,
                request.url.path,
                client,
            )
            return JSONResponse(
                {"error": "unauthorized"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        route = self._routes.get(request.path_params.get("rest", "").strip("/"))
        if route is None:
            paths = ", ".join(f"{m} {ADMIN_PREFIX}/{p}" for p, (m, _) in self._routes.items())
            return JSONResponse({"error": f"no such admin endpoint; there are {paths}"}, 404)
        method, handler = route
        if request.method != method:
            return JSONResponse(
                {"error": f"use {method}"}, status_code=405, headers={"Allow": method}
            )
        try:
            body = parse_body(await request.body()) if method == "POST" else {}
            return JSONResponse(await handler(body))
        except AdminRequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def _state(self, body: Json) -> Json:
        return server_state(self._protection, self._store, self._fault_mode)

    async def _admission(self, body: Json) -> Json:
        rate, burst, queue, max_wait = parse_admission(body, self._protection)
        before = admission_state(self._protection)
        try:
            self._protection.set_admission(rate, burst, queue, max_wait)
        except ValueError as exc:
            raise AdminRequestError(str(exc)) from None
        after = admission_state(self._protection)
        settings = ("enabled", "rate", "burst", "queue", "max_wait")
        logger.warning(
            "admin: admission %s: %s",
            "on" if after["enabled"] else "off",
            describe_change({k: before[k] for k in settings}, {k: after[k] for k in settings}),
        )
        return {"before": before, "after": after}

    async def _breaker(self, body: Json) -> Json:
        tool, mode = parse_breaker(body, self._protection.tools)
        before = tool_state(self._protection, tool)
        self._protection.set_breaker(tool, mode)
        after = tool_state(self._protection, tool)
        logger.warning(
            "admin: breaker of %s %s (was mode %s, state %s; now state %s)",
            tool,
            {"open": "held open", "closed": "held closed", "auto": "back to automatic"}[mode],
            before["mode"],
            before["state"],
            after["state"],
        )
        return {"tool": tool, "before": before, "after": after}

    async def _repoint(self, body: Json) -> Json:
        dsn = parse_repoint(body)
        before: PoolState = self._store.pool_state()
        try:
            done = await self._store.repoint(dsn)
        except ValueError as exc:
            raise AdminRequestError(f"bad dsn: {exc}") from None
        after = self._store.pool_state()
        target = (
            f"DSN {before['dsn']} -> {after['dsn']}"
            if done["dsn_changed"]
            else f"DSN kept ({after['dsn']})"
        )
        logger.warning(
            "admin: pool repointed: %d connection(s) expired, %d idle closed now, "
            "%d in use closed when released; %s",
            done["expired"],
            done["closed_idle"],
            done["in_use"],
            target,
        )
        return {**done, "before": dict(before), "after": dict(after)}
