"""Requests per second of one reference server process (``harness/server``), against a
canned endpoint (``bench/canned.py``), with its protections off and on.

``python -m bench.server [--cycles N] [--round-s S] [--connections C]``

What runs: a ``LocalStack`` (Postgres primary + replica, Toxiproxy, the reference
server) for a default scenario with every protection on, a second reference server
process with every protection off (started as the stack starts its own, on the same
database URL through the proxies), and one canned process. Two operations on a held
MCP session (2025-11-25, one session per connection): ``tools/list``, and
``tools/call create_note`` (the write tool the service probe and the ledger use; one
INSERT per call, through the ``pg-primary`` proxy, on the server's pool). The canned
endpoint answers both from precomputed bytes: the server's figure over the canned one
is what the MCP SDK (and, for the call, the database) costs.

Placement (2 cores): this process (the load driver) on CPU 0, the process under load
(server or canned) alone on CPU 1; Postgres and Toxiproxy on CPU 0 with the driver. The
driver is a raw asyncio HTTP/1.1 client on uvloop, ``C`` keep-alive connections each
with one request in flight. Every round records the CPU seconds of each party, so a
figure says where its bottleneck was (a party near 100 % of its core is it). Rounds
alternate in ABC..CBA order, so drift from other work on this machine hits every
variant alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit

import httpx2
import psutil
from starlette.types import Message, Receive, Scope, Send

from bench import canned
from bench.common import Figure, busy_cpu_seconds, report
from harness.config import AdmissionConfig, BreakerConfig, ProtectionConfig, Scenario, ServerConfig
from harness.mcp_client.async_client import open_session
from harness.mcp_client.wire import McpSession
from harness.server.app import TOOL_NAMES
from harness.server.protection import ProtectionSettings
from harness.server.shield import AdmissionMiddleware, Protection
from harness.stack.local import LocalStack
from harness.stack.mcp_server import McpServerProcess
from harness.stack.net import free_port

BENCH = "server"
DRIVER_CPU = 0
SERVED_CPU = 1

PROTECTIONS_OFF = ProtectionConfig(tool_concurrency=0)
"""Nothing between the SDK and the tools: no admission, no lane, no breakers, no deferral."""
PROTECTIONS_ON = ProtectionConfig(
    admission=AdmissionConfig(rate=1000.0, burst=200),
    tool_concurrency=64,
    defer_expensive=True,
    breaker=BreakerConfig(error_rate=0.5),
)
"""Every protection on, at limits this load never reaches (it opens its sessions once, before
measuring): what is measured is what the protections cost per request, not a refusal."""

NOTE_TITLE = "bench note"
NOTE_BODY = "a note written by bench/server.py to time one create_note round trip " * 2
NOTE_CHECKSUM = hashlib.sha256(f"{NOTE_TITLE}\n{NOTE_BODY}".encode()).hexdigest()
ID_MARK = "@@NOTE_ID@@"
RPC_ID_MARK = 987654321
"""Stand-ins replaced in the framed body per request (a JSON-RPC id and a note id)."""


@dataclass(frozen=True)
class Operation:
    name: str
    label: str
    ok_marker: bytes
    """Bytes every good reply body holds (checked on every reply)."""
    frame: Callable[[McpSession], str]
    """The JSON-RPC body, with ``RPC_ID_MARK`` as its id and ``ID_MARK`` as any unique id."""


def _frame_list(session: McpSession) -> str:
    return session.tools_list().body


def _frame_call(session: McpSession) -> str:
    arguments = {"id": ID_MARK, "title": NOTE_TITLE, "body": NOTE_BODY, "checksum": NOTE_CHECKSUM}
    return session.tools_call("create_note", arguments).body


OPERATIONS = (
    Operation("tools_list", "tools/list", b'"tools":[', _frame_list),
    Operation("create_note", "tools/call create_note", b'"isError":false', _frame_call),
)


class RequestMaker:
    """Request bytes for one connection: framed once by the harness's own ``McpSession``,
    then only the JSON-RPC id and the note id change (every note id unique in the run)."""

    counter = 0

    def __init__(self, host: str, port: int, path: str, session_id: str, op: Operation) -> None:
        session = McpSession(next_request_id=RPC_ID_MARK)
        session.session_id = session_id
        body = op.frame(session)
        head, tail = body.split(str(RPC_ID_MARK), 1)
        self._parts = [p.encode() for p in (head, *tail.split(ID_MARK))]
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-11-25\r\n"
            f"Mcp-Session-Id: {session_id}\r\nContent-Length: "
        ).encode()

    def next(self) -> bytes:
        RequestMaker.counter += 1
        n = str(RequestMaker.counter).encode()
        body = self._parts[0] + n + (b"bench-" + n).join(self._parts[1:])
        return self._head + str(len(body)).encode() + b"\r\n\r\n" + body


def parse_response(buf: bytearray) -> tuple[int, bytes] | None:
    """Take one whole HTTP/1.1 response off ``buf``: (status, body), or None if incomplete.
    Bodies come with Content-Length (canned, JSON) or chunked (the SDK's SSE stream)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        total = end + 4 + int(head[at + 17 : stop if stop >= 0 else None])
        if len(buf) < total:
            return None
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        return status, body
    if b"\r\ntransfer-encoding: chunked" not in head:
        del buf[: end + 4]
        return status, b""
    pos, parts = end + 4, list[bytes]()
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
        if len(buf) < line_end + 4 + size:
            return None
        if size == 0:
            del buf[: line_end + 4]
            return status, b"".join(parts)
        parts.append(bytes(buf[line_end + 2 : line_end + 2 + size]))
        pos = line_end + 4 + size


@dataclass
class RoundState:
    op: Operation
    ok: int = 0
    bad: int = 0
    stopping: bool = False
    in_flight: int = 0
    first_bad: str = ""
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight, sent again on each reply."""

    def __init__(self, state: RoundState, maker: RequestMaker) -> None:
        self.state = state
        self.maker = maker
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        if self.state.stopping or self.transport is None:
            return
        self.state.in_flight += 1
        self.transport.write(self.maker.next())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (reply := parse_response(self.buf)) is not None:
            status, body = reply
            state = self.state
            state.in_flight -= 1
            if status == 200 and state.op.ok_marker in body:
                state.ok += 1
            else:
                state.bad += 1
                state.first_bad = state.first_bad or f"HTTP {status}: {body[:300]!r}"
            if state.stopping and state.in_flight == 0:
                state.idle.set()
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None and not self.state.stopping:
            self.state.bad += 1
            self.state.first_bad = self.state.first_bad or f"connection lost: {exc}"
        self.transport = None


@dataclass
class Target:
    """A process under load: its MCP URL, its pid(s), its sessions."""

    name: str
    label: str
    url: str
    pids: list[int]
    sessions: list[str] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (and its live children), 0 if it is gone."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *(proc.children(recursive=True) if with_children else [])]
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total
    except psutil.Error:
        return 0.0


@dataclass
class Meters:
    """CPU seconds of every party of a round, read at once."""

    wall: float
    served: float
    driver: float
    postgres: float
    toxiproxy: float
    served_core: float
    driver_core: float


def read_meters(target: Target, postgres_pid: int, toxiproxy_pid: int) -> Meters:
    return Meters(
        wall=time.monotonic(),
        served=target.cpu_seconds(),
        driver=time.process_time(),
        postgres=cpu_seconds(postgres_pid, with_children=True),
        toxiproxy=cpu_seconds(toxiproxy_pid),
        served_core=busy_cpu_seconds(SERVED_CPU),
        driver_core=busy_cpu_seconds(DRIVER_CPU),
    )


async def open_sessions(target: Target, count: int) -> None:
    """``count`` sessions by the harness's own initialize + notifications/initialized."""
    async with httpx2.AsyncClient(timeout=10) as client:
        for _ in range(count):
            session = McpSession()
            outcome = await open_session(client, target.url, session)
            if not outcome.ok or session.session_id is None:
                raise RuntimeError(f"{target.name}: initialize failed: {outcome}")
            target.sessions.append(session.session_id)


async def run_round(
    target: Target,
    op: Operation,
    warmup_s: float,
    measure_s: float,
    pids: tuple[int, int],
) -> dict[str, Any]:
    """Load ``target`` with ``op`` on every session; count replies in the measured window."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(target.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    state = RoundState(op)
    transports = []
    for session_id in target.sessions:
        maker = RequestMaker(host, port, parts.path, session_id, op)
        transport, _ = await loop.create_connection(partial(Connection, state, maker), host, port)
        transports.append(transport)
    await asyncio.sleep(warmup_s)
    ok0, bad0, m0 = state.ok, state.bad, read_meters(target, *pids)
    await asyncio.sleep(measure_s)
    ok1, bad1, m1 = state.ok, state.bad, read_meters(target, *pids)
    state.stopping = True
    if state.in_flight:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.idle.wait(), 10)
    for transport in transports:
        transport.close()
    wall = m1.wall - m0.wall
    served_cpu = m1.served - m0.served
    ok = ok1 - ok0
    return {
        "target": target.name,
        "op": op.name,
        "rps": ok / wall,
        "errors": bad1 - bad0,
        "first_error": state.first_bad,
        "wall_s": round(wall, 3),
        "served_util": round(served_cpu / wall, 3),
        "served_core_other_util": round(
            max(0.0, (m1.served_core - m0.served_core) - served_cpu) / wall, 3
        ),
        "driver_util": round((m1.driver - m0.driver) / wall, 3),
        "driver_core_util": round((m1.driver_core - m0.driver_core) / wall, 3),
        "postgres_util": round((m1.postgres - m0.postgres) / wall, 3),
        "toxiproxy_util": round((m1.toxiproxy - m0.toxiproxy) / wall, 3),
        "requests_per_served_cpu_s": round(ok / served_cpu, 1) if served_cpu > 0 else None,
    }


def schedule(targets: list[Target], cycles: int) -> Iterator[tuple[Target, Operation]]:
    """ABC..CBA: odd cycles run the variants backwards, so drift falls on all of them."""
    variants = [(t, op) for op in OPERATIONS for t in targets]
    for cycle in range(cycles):
        yield from (variants if cycle % 2 == 0 else reversed(variants))


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Pin a process and its children (a postmaster's backends fork from it later)."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        for p in (proc, *proc.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                p.cpu_affinity(sorted(cpus))


def server_config(protection: ProtectionConfig) -> ServerConfig:
    return ServerConfig(protection=protection)


async def start_servers(stack: LocalStack) -> tuple[Target, Target]:
    """The stack's own server runs with protections on; one more with them off, started as
    the stack starts its servers (same command builder, registry, DSN through the proxies)."""
    on = stack.servers[0]
    off = McpServerProcess(server_config(PROTECTIONS_OFF), free_port(), stack.server_database_url)
    off.start(stack.registry, name="mcp-server-protections-off")
    await off.wait_ready()
    assert on.process is not None and off.process is not None
    return (
        Target("server_off", "reference server, protections off", off.url, [off.process.pid]),
        Target("server_on", "reference server, protections on", on.url, [on.process.pid]),
    )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def _noop_app(scope: Scope, receive: Receive, send: Send) -> None:
    return None


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


async def _note() -> dict[str, Any]:
    return {"id": "x", "created": True}


def settings_of(config: ProtectionConfig) -> ProtectionSettings:
    """The server's settings for a scenario's protection (what its command line carries)."""
    return ProtectionSettings(
        admission_rate=config.admission.rate,
        admission_burst=config.admission.burst,
        admission_queue=config.admission.queue,
        admission_max_wait_s=config.admission.max_wait,
        tool_concurrency=config.tool_concurrency,
        defer_expensive=config.defer_expensive,
        storm_threshold=config.storm_threshold,
        breaker_error_rate=config.breaker.error_rate,
        breaker_window_s=config.breaker.window,
        breaker_min_calls=config.breaker.min_calls,
        breaker_cooldown_s=config.breaker.cooldown,
    )


async def protection_cost_us(settings: ProtectionSettings, n: int = 30_000) -> float:
    """CPU microseconds the protections add to one tools/call on a held session, in process:
    the admission middleware's pass on the request plus ``Protection.call_tool`` around a
    tool that returns at once (what either costs beyond that is the same on and off)."""
    protection = Protection(settings, tools=TOOL_NAMES, lane_timeout_s=5.0)
    middleware = AdmissionMiddleware(_noop_app, protection=protection, path="/mcp")
    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/mcp",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"mcp-protocol-version", b"2025-11-25"),
            (b"mcp-session-id", b"0123456789abcdef0123456789abcdef"),
        ],
    }
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(n):
            await middleware(scope, _receive, _send)
            await protection.call_tool("create_note", _note)
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


FIGURE_KINDS = (
    ("rps", "req/s", "requests per second through one process"),
    ("per_cpu_s", "req/CPU-s", "requests per CPU-second of that process (what a whole core gives)"),
)


def paired_ratios(
    rounds: list[dict[str, Any]], op: str, target: str, base: str | None, key: str
) -> list[float]:
    """Per cycle, this target's value over its baseline's in the same cycle (their rounds
    are adjacent in the schedule, so both saw nearly the same load from outside)."""
    if base is None:
        return []
    mine = [r[key] for r in rounds if r["target"] == target and r["op"] == op]
    theirs = [r[key] for r in rounds if r["target"] == base and r["op"] == op]
    return [round(a / b, 4) for a, b in zip(mine, theirs, strict=False) if a and b]


def summarize(
    rounds: list[dict[str, Any]], connections: int, micro: dict[str, float]
) -> list[Figure]:
    """Per operation: canned (baseline), server off (vs canned), server on (vs off); each as
    requests/s and as requests per CPU-second of the loaded process."""
    figures = []
    for op in OPERATIONS:
        what = "MCP SDK" + (" + database" if op.name == "create_note" else "")
        notes = {
            "canned": f"{op.label} from precomputed bytes (bench/canned.py): the baseline",
            "server_off": f"{op.label}, reference server, protections off; ratio: {what} cost",
            "server_on": f"{op.label}, reference server, protections on; ratio: on / off",
        }
        previous = {"canned": None, "server_off": "canned", "server_on": "server_off"}
        for kind, unit, meaning in FIGURE_KINDS:
            key = "rps" if kind == "rps" else "requests_per_served_cpu_s"
            for target, note in notes.items():
                rs = [r for r in rounds if r["target"] == target and r["op"] == op.name]
                base = previous[target]
                figures.append(
                    Figure(
                        bench=BENCH,
                        name=f"{op.name}_{target}_{kind}",
                        value=_median([r[key] or 0.0 for r in rs]),
                        unit=unit,
                        baseline=None if base is None else f"{op.name}_{base}_{kind}",
                        note=f"{note} ({meaning})",
                        detail={
                            "connections": connections,
                            "errors": sum(r["errors"] for r in rs),
                            "served_util": _median([r["served_util"] for r in rs]),
                            "served_core_other_util": _median(
                                [r["served_core_other_util"] for r in rs]
                            ),
                            "driver_util": _median([r["driver_util"] for r in rs]),
                            "per_round": [r[key] for r in rs],
                            "paired_ratios": paired_ratios(rounds, op.name, target, base, key),
                            "rounds": rs if kind == "rps" else "see the _rps figure",
                        },
                    )
                )
    by_name = {f.name: f for f in figures}
    per_call_us = 1e6 / (by_name["create_note_server_off_per_cpu_s"].value or float("inf"))
    added = micro["on"] - micro["off"]
    figures.append(
        Figure(
            bench=BENCH,
            name="protections_added_us_per_call",
            value=added,
            unit="us",
            note="CPU the protections add to one tools/call on a held session, measured in "
            "process (admission middleware + Protection.call_tool, on minus off)",
            detail={
                "on_us": micro["on"],
                "off_us": micro["off"],
                "server_cpu_us_per_call": per_call_us,
                "share_of_a_call": added / per_call_us,
            },
        )
    )
    return figures


async def bench(args: argparse.Namespace) -> list[Figure]:
    scenario = Scenario(name="bench-server", server=server_config(PROTECTIONS_ON))
    stack = LocalStack(scenario, cpus=frozenset({DRIVER_CPU}))
    canned_handle: canned.Canned | None = None
    rounds: list[dict[str, Any]] = []
    cpus = os.sched_getaffinity(0)
    micro = {
        "off": await protection_cost_us(settings_of(PROTECTIONS_OFF)),
        "on": await protection_cost_us(settings_of(PROTECTIONS_ON)),
    }
    print(f"protections in process: {micro['off']:.1f} us off, {micro['on']:.1f} us on", flush=True)
    try:
        t = time.monotonic()
        await stack.up()
        print(f"stack up in {time.monotonic() - t:.1f} s", flush=True)
        off, on = await start_servers(stack)
        canned_handle = canned.start(processes=1, cpus={SERVED_CPU})
        base = Target("canned", "canned endpoint", canned_handle.mcp_url, canned_handle.pids)
        targets = [base, off, on]
        for target in targets:
            for pid in target.pids:
                pin_tree(pid, {SERVED_CPU})
        os.sched_setaffinity(0, {DRIVER_CPU})
        for target in targets:
            await open_sessions(target, args.connections)
        primary = stack.clusters[stack.primary_name]
        assert primary.pid is not None and stack.toxiproxy_process is not None
        pids = (primary.pid, stack.toxiproxy_process.pid)
        for target, op in schedule(targets, args.cycles):
            r = await run_round(target, op, args.warmup_s, args.round_s, pids)
            rounds.append(r)
            print(
                f"{target.name:10} {op.label:22} {r['rps']:8,.0f} req/s "
                f"{r['requests_per_served_cpu_s'] or 0:8,.0f} req/CPU-s  errors {r['errors']}"
                f"  cpu: served {r['served_util']:.0%} (others on its core "
                f"{r['served_core_other_util']:.0%}) driver {r['driver_util']:.0%} (its core "
                f"{r['driver_core_util']:.0%}) "
                f"postgres {r['postgres_util']:.0%} toxiproxy {r['toxiproxy_util']:.0%}",
                flush=True,
            )
            if r["first_error"]:
                print(f"  first error: {r['first_error']}", flush=True)
    finally:
        os.sched_setaffinity(0, cpus)
        if canned_handle is not None:
            canned_handle.stop()
        await stack.down()
        stack.remove_run_dir()
    return summarize(rounds, args.connections, micro)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__)
    parser.add_argument("--cycles", type=int, default=3, help="rounds per variant (default 3)")
    parser.add_argument("--round-s", type=float, default=5.0, help="measured seconds per round")
    parser.add_argument("--warmup-s", type=float, default=0.8, help="unmeasured lead-in")
    parser.add_argument(
        "--connections", type=int, default=32, help="keep-alive connections (= sessions)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        print("bench.server needs 2 usable CPUs (driver and server on their own)", file=sys.stderr)
        return 2
    import uvloop

    figures = uvloop.run(bench(args))
    report(BENCH, figures)
    errors = sum(f.detail.get("errors", 0) for f in figures)
    if errors:
        print(f"{errors} requests failed (see detail.rounds[].first_error)", file=sys.stderr)
    return 0 if all(f.value > 0 for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
