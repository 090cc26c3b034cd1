"""Command line of the reference server: `python -m harness.server --port P`.

Serves with uvicorn (uvloop and httptools when importable: about a third more
requests per second than the pure-Python defaults). SIGTERM and Ctrl-C shut
down through uvicorn, which runs the app's lifespan exit (closing the pool).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
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
    return parser.parse_args(argv)


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

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    import uvicorn

    from harness.server.app import ServerConfig, build_app
    from harness.server.notes import DbSettings

    config = ServerConfig(
        db=DbSettings(
            dsn=args.database_url,
            connect_timeout_s=args.connect_timeout,
            command_timeout_s=args.command_timeout,
            acquire_timeout_s=args.acquire_timeout,
            pool_max_size=args.pool_size,
        ),
        path=args.path,
        json_response=args.json_response,
        stateless=args.stateless,
        session_idle_timeout_s=args.session_idle_timeout if args.session_idle_timeout > 0 else None,
        max_sessions=args.max_sessions if args.max_sessions > 0 else None,
        host=args.host,
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
        timeout_graceful_shutdown=args.shutdown_timeout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
