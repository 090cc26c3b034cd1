"""Command line of the reference server: `python -m harness.server --port P`.

Serves with uvicorn (uvloop and httptools when importable: about a third more
requests per second than the pure-Python defaults). SIGTERM and Ctrl-C shut
down through uvicorn, which runs the app's lifespan exit (closing the pool).

The admin endpoint (`admin.py`) is on when `MCP_ADMIN_TOKEN` is set or
`--admin-token-file` names a file: never a flag with the token itself, which
any local user could read in `ps`.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from harness.server.faults import FAULT_MODES, FaultSettings

ADMIN_TOKEN_ENV = "MCP_ADMIN_TOKEN"
"""The environment variable holding the admin endpoint's token (`admin.py`)."""

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

KEEP_ALIVE_S = 5.0
"""uvicorn's default keep-alive timeout, set explicitly because admission in the
sessionless revision relies on it: a (host, port) pair idle longer than this
belongs to a connection the server has closed."""


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m harness.server",
        description="Reference MCP server under test: a notes service on PostgreSQL.",
    )
    parser.add_argument("--port", type=_port, required=True, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL, may list several hosts (default: $DATABASE_URL)",
    )
    parser.add_argument("--path", default="/mcp", help="streamable HTTP endpoint (default /mcp)")
    parser.add_argument(
        "--json-response", action="store_true", help="plain JSON replies instead of SSE"
    )
    parser.add_argument(
        "--stateless", action="store_true", help="no Mcp-Session-Id sessions (legacy stateless)"
    )
    parser.add_argument(
        "--session-idle-timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="close a session idle this many seconds; 0 disables (default 1800)",
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=10_000,
        metavar="N",
        help="refuse new sessions with 503 beyond N open; 0 means no limit (default 10000)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning")
    parser.add_argument("--pool-size", type=int, default=10, help="max database connections")
    parser.add_argument(
        "--statement-cache-size",
        type=int,
        default=100,
        metavar="N",
        help="prepared statements kept per connection; 0 behind PgBouncer in transaction "
        "mode (default 100)",
    )
    parser.add_argument("--connect-timeout", type=_positive_float, default=2.0, metavar="S")
    parser.add_argument("--command-timeout", type=_positive_float, default=5.0, metavar="S")
    parser.add_argument("--acquire-timeout", type=_positive_float, default=5.0, metavar="S")
    parser.add_argument(
        "--shutdown-timeout",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="on SIGTERM, wait at most this long for open streams before closing them",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="PATH",
        help=f"turn the admin endpoint on with the token in this file (or set ${ADMIN_TOKEN_ENV}, "
        "not both); loopback clients only",
    )
    _add_protection_arguments(parser)
    _add_fault_arguments(parser)
    return parser.parse_args(argv)


def admin_token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The admin token from the environment or the file (ValueError if both, or unreadable)."""
    from_env = environ.get(ADMIN_TOKEN_ENV) or None
    if token_file is None:
        return from_env
    if from_env is not None:
        raise ValueError(
            f"give the admin token as ${ADMIN_TOKEN_ENV} or --admin-token-file, not both"
        )
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --admin-token-file {token_file}: {exc}") from None
    if not token:
        raise ValueError(f"--admin-token-file {token_file} is empty")
    return token


def _add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that turn this server into a faulty release, for corruption scenarios."""
    group = parser.add_argument_group(
        "fault modes",
        "Run as a deliberately faulty release that damages data (harness/server/faults.py).",
    )
    group.add_argument(
        "--fault-mode",
        choices=FAULT_MODES,
        default="none",
        help="write-garbage: create_note stores a mangled body and adds phantom rows; "
        "corrupt-state: adds the tool compact_notes, which damages rows (default none)",
    )
    group.add_argument(
        "--garbage-phantom-every",
        type=_non_negative_int,
        default=5,
        metavar="N",
        help="write-garbage: one phantom row after every N created notes; 0 = never (default 5)",
    )


def _add_protection_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the protection against reconnection storms; the defaults leave it all off."""
    group = parser.add_argument_group(
        "reconnection-storm protection",
        "Admission of new sessions (2026-07-28: new connections), deferral of expensive "
        "tools during a storm, per-tool circuit breakers. All off by default.",
    )
    group.add_argument(
        "--admission-rate",
        type=_non_negative_float,
        default=0.0,
        metavar="R",
        help="new sessions admitted per second; 0 turns admission off (default 0)",
    )
    group.add_argument(
        "--admission-burst",
        type=_positive_int,
        default=50,
        metavar="N",
        help="new sessions admitted at once before the rate applies (default 50)",
    )
    group.add_argument(
        "--admission-queue",
        type=_non_negative_int,
        default=200,
        metavar="N",
        help="new sessions that may wait their turn; more are refused with 503 (default 200)",
    )
    group.add_argument(
        "--admission-max-wait",
        type=_non_negative_float,
        default=2.0,
        metavar="S",
        help="longest wait for a turn; a later turn is refused at once with 503 (default 2.0)",
    )
    group.add_argument(
        "--tool-concurrency",
        type=_non_negative_int,
        default=64,
        metavar="N",
        help="tool calls running at once (tools/list is not one); 0 means no limit (default 64)",
    )
    group.add_argument(
        "--defer-expensive",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="during a storm, answer notes_report at once with a retryable tool error "
        "(default off)",
    )
    group.add_argument(
        "--storm-threshold",
        type=_positive_float,
        default=100.0,
        metavar="R",
        help="new sessions per second over the last 3 s that make a storm (default 100)",
    )
    group.add_argument(
        "--breaker-error-rate",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="fraction of database failures that opens a tool's breaker; 0 turns breakers "
        "off (default 0)",
    )
    group.add_argument(
        "--breaker-window",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="sliding window of the breaker's error rate (default 10)",
    )
    group.add_argument(
        "--breaker-min-calls",
        type=_positive_int,
        default=20,
        metavar="N",
        help="calls in the window before a breaker may open (default 20)",
    )
    group.add_argument(
        "--breaker-cooldown",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="time an open breaker refuses calls before it lets a probe through (default 5)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.database_url:
        print(
            "error: no database: pass --database-url or set DATABASE_URL "
            "(e.g. postgresql://user:pw@127.0.0.1:5432/mcp?target_session_attrs=read-write)",
            file=sys.stderr,
        )
        return 2
    if args.pool_size < 1:
        print("error: --pool-size must be at least 1", file=sys.stderr)
        return 2
    from harness.server.notes import split_dsn

    try:
        split_dsn(args.database_url)
    except ValueError as exc:
        print(f"error: bad --database-url: {exc}", file=sys.stderr)
        return 2

    from harness.server.admin import check_token

    try:
        token = admin_token(args.admin_token_file, os.environ)
        if token is not None:
            check_token(token)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    import uvicorn

    from harness.server.app import ServerConfig, build_app
    from harness.server.notes import DbSettings
    from harness.server.protection import ProtectionSettings

    config = ServerConfig(
        db=DbSettings(
            dsn=args.database_url,
            connect_timeout_s=args.connect_timeout,
            command_timeout_s=args.command_timeout,
            acquire_timeout_s=args.acquire_timeout,
            pool_max_size=args.pool_size,
            statement_cache_size=args.statement_cache_size,
        ),
        path=args.path,
        json_response=args.json_response,
        stateless=args.stateless,
        session_idle_timeout_s=args.session_idle_timeout if args.session_idle_timeout > 0 else None,
        max_sessions=args.max_sessions if args.max_sessions > 0 else None,
        host=args.host,
        protection=ProtectionSettings(
            admission_rate=args.admission_rate,
            admission_burst=args.admission_burst,
            admission_queue=args.admission_queue,
            admission_max_wait_s=args.admission_max_wait,
            tool_concurrency=args.tool_concurrency,
            defer_expensive=args.defer_expensive,
            storm_threshold=args.storm_threshold,
            breaker_error_rate=args.breaker_error_rate,
            breaker_window_s=args.breaker_window,
            breaker_min_calls=args.breaker_min_calls,
            breaker_cooldown_s=args.breaker_cooldown,
            keep_alive_s=KEEP_ALIVE_S,
        ),
        faults=FaultSettings(mode=args.fault_mode, phantom_every=args.garbage_phantom_every),
        admin_token=token,
    )
    app = build_app(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal
    # against the handler found at start; this one turns it into exit status 0,
    # so a clean shutdown is told apart from a crash or a kill.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        # The client address is the TCP peer's, whatever X-Forwarded-For says: the admin
        # endpoint trusts loopback clients only.
        proxy_headers=False,
        timeout_graceful_shutdown=args.shutdown_timeout,
        timeout_keep_alive=int(KEEP_ALIVE_S),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
