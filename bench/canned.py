"""A canned MCP endpoint that is never the bottleneck: raw asyncio HTTP/1.1 (uvloop when
installed), keep-alive, no framework, answers from precomputed bytes.

``POST /mcp`` (any path starting with ``/mcp``) answers MCP JSON-RPC in the
2025-11-25 session mode with plain JSON (``application/json``, never SSE):

- ``initialize``: a result with protocolVersion / capabilities / serverInfo and
  an ``Mcp-Session-Id`` header (32 hex characters, new per initialize);
- ``notifications/*`` (no id): 202, empty body;
- ``tools/list``: a canned list of a few tools;
- ``tools/call``: a canned text result (``isError: false``);
- anything else with an id: an empty result.

Sessions are not checked: every request is answered as if its session were
known. ``POST`` anywhere else returns a fixed JSON body (``PLAIN_BODY``, as many
bytes as a tools/list reply: the plain baseline); ``GET`` anything returns the
same (a health check).

``python -m bench.canned --port P [--processes N] [--cpu C]``: N processes share
the port with SO_REUSEPORT. From Python, ``start(processes=N, cpus={C})`` starts
them as subprocesses on a free 127.0.0.1 port and returns a ``Canned`` handle
(``url``, ``mcp_url``, ``pids``, ``cpu_seconds()``, ``stop()``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
PROTOCOL_VERSION = "2025-11-25"
READY_LINE = "canned ready"

_TOOLS = [
    {
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": props, "required": list(props)},
    }
    for name, description, props in (
        (
            "create_note",
            "Create a note",
            {"id": {"type": "string"}, "title": {"type": "string"}, "body": {"type": "string"}},
        ),
        ("get_note", "Read one note by id", {"id": {"type": "string"}}),
        ("search_notes", "Search note titles", {"query": {"type": "string"}}),
        ("notes_report", "Count notes", {}),
    )
]


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


_INITIALIZE_RESULT = _compact(
    {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": {"name": "bench-canned", "version": "1"},
    }
)
_TOOLS_LIST_RESULT = _compact({"tools": _TOOLS})
_TOOLS_CALL_RESULT = _compact({"content": [{"type": "text", "text": "ok"}], "isError": False})
_EMPTY_RESULT = b"{}"
_RESULTS = {
    "initialize": _INITIALIZE_RESULT,
    "tools/list": _TOOLS_LIST_RESULT,
    "tools/call": _TOOLS_CALL_RESULT,
}
PLAIN_BODY = b'{"jsonrpc":"2.0","id":1,"result":' + _TOOLS_LIST_RESULT + b"}"
"""The fixed reply to a plain POST: the same bytes as a tools/list reply, so the baseline
and the MCP user move the same payload and differ only in what the client does."""

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024


def _response(status: bytes, body: bytes, extra: bytes = b"", close: bool = False) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
    if body:
        head += b"Content-Type: application/json\r\n"
    if close:
        head += b"Connection: close\r\n"
    return head + extra + b"\r\n" + body


_PLAIN_RESPONSE = _response(b"200 OK", PLAIN_BODY)
_ACCEPTED_RESPONSE = _response(b"202 Accepted", b"")
_BAD_REQUEST = _response(b"400 Bad Request", b'{"error":"bad request"}', close=True)


def mcp_reply(body: bytes, session_counter: list[int]) -> bytes:
    """The whole HTTP response to one MCP POST body."""
    try:
        message = json.loads(body)
        method = message["method"]
    except (ValueError, KeyError, TypeError):
        return _response(
            b"400 Bad Request",
            b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}',
        )
    if "id" not in message:
        return _ACCEPTED_RESPONSE
    result = _RESULTS.get(method, _EMPTY_RESULT)
    reply = b'{"jsonrpc":"2.0","id":' + _compact(message["id"]) + b',"result":' + result + b"}"
    extra = b""
    if method == "initialize":
        session_counter[0] += 1
        session_id = f"{os.getpid():08x}{session_counter[0]:024x}"
        extra = b"Mcp-Session-Id: " + session_id.encode() + b"\r\n"
    return _response(b"200 OK", reply, extra)


class CannedProtocol(asyncio.Protocol):
    """One keep-alive connection: parse heads by hand, read Content-Length bytes, answer."""

    session_counter = [0]

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(_HEAD_END)
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    self._fail()
                return
            head = bytes(self.buffer[:end])
            length, close = _head_fields(head)
            if length < 0:
                self._fail()
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            self.transport.write(self._answer(head, body))
            if close:
                self.transport.close()
                self.transport = None

    def _answer(self, head: bytes, body: bytes) -> bytes:
        line_end = head.find(b"\r\n")
        request_line = head if line_end < 0 else head[:line_end]
        parts = request_line.split(b" ")
        if len(parts) < 2:
            return _BAD_REQUEST
        method, path = parts[0], parts[1]
        if method == b"POST" and path.startswith(b"/mcp"):
            return mcp_reply(body, self.session_counter)
        return _PLAIN_RESPONSE

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.write(_BAD_REQUEST)
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _head_fields(head: bytes) -> tuple[int, bool]:
    """(Content-Length, whether the client asked to close); length -1 if malformed."""
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return -1, close
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    return length, close


def bound_socket(port: int) -> socket.socket:
    """A 127.0.0.1 TCP socket bound with SO_REUSEPORT (not listening yet)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((HOST, port))
    return sock


async def serve(port: int, parent: int | None = None) -> None:
    """Serve until SIGTERM / SIGINT, or until ``parent`` is no longer this process's parent
    (the process that started it died without stopping it)."""
    sock = bound_socket(port)
    sock.listen(4096)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CannedProtocol, sock=sock, backlog=4096)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if parent is not None:
        loop.create_task(_watch_parent(parent, stop))
    print(f"{READY_LINE} {port} pid {os.getpid()}", flush=True)
    async with server:
        await stop.wait()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


def run_one(port: int, parent: int | None = None) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port, parent))
    else:
        uvloop.run(serve(port, parent))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far; raises when it is gone (a bench
    must not count a dead endpoint as an idle one)."""
    from harness.measure.resources import cpu_seconds as process_cpu_seconds

    seconds = process_cpu_seconds(pid)
    if seconds is None:
        raise ProcessLookupError(f"process {pid} is gone")
    return seconds


@dataclass
class Canned:
    """Running canned processes on one 127.0.0.1 port."""

    port: int
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base URL (``http://127.0.0.1:P``): the Locust host."""
        return f"http://{HOST}:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by all its processes together."""
        total = 0.0
        for pid in self.pids:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total

    def stop(self, timeout_s: float = 5.0) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        for proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()

    def __enter__(self) -> Canned:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start(
    processes: int = 1,
    cpus: set[int] | None = None,
    port: int = 0,
    ready_timeout_s: float = 10.0,
) -> Canned:
    """Start ``processes`` canned servers on one free 127.0.0.1 port (or ``port``), each
    pinned to ``cpus`` when given; returns once every one of them listens."""
    placeholder = bound_socket(port)  # holds the port until the servers bound it too
    handle = Canned(placeholder.getsockname()[1])
    try:
        for _ in range(processes):
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.canned",
                    "--port",
                    str(handle.port),
                    "--parent",
                    str(os.getpid()),
                ],  # fmt: skip
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            handle.processes.append(proc)
            if cpus:
                os.sched_setaffinity(proc.pid, cpus)
        for proc in handle.processes:
            _wait_ready(proc, ready_timeout_s)
    except BaseException:
        handle.stop()
        raise
    finally:
        placeholder.close()
    return handle


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline()
                if line.startswith(READY_LINE):
                    return
                if not line:
                    break
    raise RuntimeError(f"canned server pid {proc.pid} did not become ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.canned", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--cpu", type=int, action="append", help="pin to this CPU (repeatable)")
    parser.add_argument("--parent", type=int, help="exit when this process is no longer the parent")
    args = parser.parse_args(argv)
    cpus = set(args.cpu) if args.cpu else None
    if args.processes <= 1:
        if cpus:
            os.sched_setaffinity(0, cpus)
        run_one(args.port, args.parent)
        return 0
    handle = start(args.processes, cpus, port=args.port)
    print(f"{READY_LINE} {handle.port} pids {handle.pids}", flush=True)
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        signal.sigwait(signals)
    finally:
        handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
