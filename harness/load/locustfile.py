"""The locustfile of the harness's load: ``locust -f harness/load/locustfile.py``.

Runs ``McpUser`` and streams records to the one JSON-lines file the harness
reads (``LoadSettings.records_path``). Workers batch their users' records and
send them to the master as custom messages; the master (or a lone local
runner) appends them to the file, adds users / spawned / stop records, and
writes ``stop`` last: when the test stops, it asks every worker to stop its
users and waits for their final batch, so no write attempt goes missing.

Records (one JSON object a line, ``t`` on the master's CLOCK_MONOTONIC):

- ``req``: ``t m ms ok err u``, one per HTTP request a user made (every
  initialize attempt, ok or not, included; the held SSE stream once, as
  ``GET stream``, at its opening); ``err`` is an ``ErrorKind`` value; a shed
  request also has ``ra``, the Retry-After in seconds.
- ``broken`` (``t u reason``), ``reconnected`` (``t u duration_s attempts``).
- Ledger records: ``write_attempt`` (``t id u seq w``), one per send of a write (a
  write sent again after no reply, with the same ``id``, has one per send), and
  ``write`` (``t id sum u seq w``), its acknowledgement: a reply that passed the
  scenario's success rule. ``w`` names the process that ran the user
  (``host:pid``, unique in the run) and ``seq`` counts that process's ledger
  records, both kinds together, from 0, in the order they were made; when the
  process's users have stopped, its final batch ends with ``ledger_end``
  (``t w n``): it made ``n`` ledger records, so seqs ``0..n-1`` must all be
  in the file and any missing one was lost on the way. A worker's batches arrive
  in order, so a process's ledger records are in the file in ``seq`` order.
- ``lag`` (``t p mean max``): how late a process's event loop woke, once a second.
- ``users`` (``t n``), ``spawned`` (``t n``), ``stop`` (``t``).

A worker on another machine has another monotonic clock: its records' ``t``
are moved onto the master's clock on arrival (off by the one-way delay of the
batch, milliseconds on a LAN); ``duration_s`` is measured on the worker and
needs no such care.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

import gevent
from locust import events
from locust.env import Environment
from locust.rpc import Message
from locust.runners import MasterRunner, WorkerRunner

from harness.load.settings import FINAL_BATCH_GRACE_S
from harness.load.user import USER_CONTEXT_KEY, McpUser, Record
from harness.mcp_client.wire import ErrorKind, transport_kind

__all__ = ["McpUser"]

RECORDS_MESSAGE = "mcp_harness_records"
FINAL_BATCH_REQUEST = "mcp_harness_final_batch"
BATCH_INTERVAL_S = 0.25
LOOP_LAG_TICK_S = 0.1
"""The event-loop lag probe sleeps this long, over and over, and records how late it woke."""
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def clock_domain() -> str:
    """Who shares this process's CLOCK_MONOTONIC: this boot of this machine.

    The boot id changes at every boot, so two processes with the same one
    read the same monotonic clock; without it (not Linux), the host name.
    """
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        return socket.gethostname()


CLOCK_DOMAIN = clock_domain()

LEDGER_KINDS = frozenset({"write_attempt", "write"})
"""Records numbered by ``seq`` and counted by ``ledger_end``."""
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
"""This process in ledger records' ``w``: unique in the run (one host, one pid)."""


class RecordStream:
    """This process's end of the records stream: a worker's sender, or the file's writer."""

    def __init__(self, environment: Environment, records_path: str) -> None:
        assert environment.runner is not None
        self.environment = environment
        self.runner = environment.runner
        self.pending: list[Record] = []
        self.file: IO[str] | None = None
        if not isinstance(self.runner, WorkerRunner):
            self.file = open(records_path, "a", encoding="utf-8")
        self.users_by_worker: dict[str, int] = {}
        self.final_batch_from: set[str] = set()
        self.users_ticker: gevent.Greenlet | None = None
        self.lag_probe: gevent.Greenlet | None = None
        self.ledger_seq = 0
        """How many ledger records this process's users made (the next one's ``seq``)."""

    def on_request(
        self, name: str, response_time: float, exception: Exception | None, context: dict, **_: Any
    ) -> None:
        user_id = context.get(USER_CONTEXT_KEY)
        if user_id is None:
            return
        record: Record = {
            "k": "req",
            "t": time.monotonic(),
            "m": name,
            "ms": response_time,
            "ok": exception is None,
            "err": None if exception is None else str(error_kind_of(exception)),
            "u": user_id,
        }
        retry_after_s = getattr(exception, "retry_after_s", None)
        if retry_after_s is not None:
            record["ra"] = retry_after_s
        self.pending.append(record)

    def on_record(self, record: Record) -> None:
        if record.get("k") in LEDGER_KINDS:
            record["seq"] = self.ledger_seq
            record["w"] = WORKER_ID
            self.ledger_seq += 1
        self.pending.append(record)

    def ledger_end(self) -> Record:
        """The last ledger record of this process: how many it made (seqs 0..n-1)."""
        return {"k": "ledger_end", "t": time.monotonic(), "w": WORKER_ID, "n": self.ledger_seq}

    def deliver_pending(self, final: bool = False) -> None:
        batch, self.pending = self.pending, []
        if isinstance(self.runner, WorkerRunner):
            if batch or final:
                data = {
                    "records": batch,
                    "users": self.runner.user_count,
                    "final": final,
                    "clock": CLOCK_DOMAIN,
                    "sent": time.monotonic(),
                }
                self.runner.send_message(RECORDS_MESSAGE, data)
        elif batch:
            self.write(batch)

    def deliver_every_interval(self) -> None:
        while True:
            gevent.sleep(BATCH_INTERVAL_S)
            self.deliver_pending()

    def write(self, records: list[Record]) -> None:
        assert self.file is not None
        self.file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self.file.flush()

    def on_worker_batch(self, msg: Message, **_: Any) -> None:
        self.users_by_worker[msg.node_id] = msg.data["users"]
        if msg.data["final"]:
            self.final_batch_from.add(msg.node_id)
        records = msg.data["records"]
        if msg.data.get("clock") != CLOCK_DOMAIN:
            offset_s = time.monotonic() - msg.data["sent"]
            for record in records:
                record["t"] += offset_s
                record["remote"] = True
        self.write(records)

    def on_final_batch_request(self, **_: Any) -> None:
        """Worker: stop the users now; the test_stop listener then sends the final batch."""
        self.runner.stop()

    def measure_loop_lag(self) -> None:
        """Once a second, how late this process's event loop woke from short sleeps (mean and
        worst). A loop that runs late delays every response it times: the generator is
        saturated, or starved of CPU by something else, and the run must say so."""
        while True:
            late: list[float] = []
            second_end = time.monotonic() + 1.0
            while time.monotonic() < second_end:
                before = time.monotonic()
                gevent.sleep(LOOP_LAG_TICK_S)
                late.append(max(0.0, time.monotonic() - before - LOOP_LAG_TICK_S))
            record: Record = {
                "k": "lag",
                "t": time.monotonic(),
                "p": os.getpid(),
                "mean": sum(late) / len(late),
                "max": max(late),
            }
            if isinstance(self.runner, MasterRunner):
                self.write([record])
            else:
                self.pending.append(record)

    def user_count(self) -> int:
        if isinstance(self.runner, MasterRunner):
            return sum(self.users_by_worker.values())
        return self.runner.user_count

    def tick_users(self) -> None:
        while True:
            self.write([{"k": "users", "t": time.monotonic(), "n": self.user_count()}])
            gevent.sleep(1.0)

    def on_test_start(self, **_: Any) -> None:
        if self.file is not None and self.users_ticker is None:
            self.users_ticker = gevent.spawn(self.tick_users)

    def on_spawning_complete(self, user_count: int, **_: Any) -> None:
        if self.file is not None:
            self.write([{"k": "spawned", "t": time.monotonic(), "n": user_count}])

    def on_test_stop(self, **_: Any) -> None:
        if self.lag_probe is not None:  # nothing after the last record, "stop"
            self.lag_probe.kill()
            self.lag_probe = None
        if isinstance(self.runner, MasterRunner):
            self.collect_final_batches()
        else:  # its users have stopped: no ledger record comes after this
            self.pending.append(self.ledger_end())
        self.deliver_pending(final=True)
        if self.file is not None:
            if self.users_ticker is not None:
                self.users_ticker.kill()
                self.users_ticker = None
            self.write([{"k": "stop", "t": time.monotonic()}])

    def collect_final_batches(self) -> None:
        assert isinstance(self.runner, MasterRunner)
        clients = self.runner.clients
        workers = {worker.id for worker in clients.ready + clients.spawning + clients.running}
        self.runner.send_message(FINAL_BATCH_REQUEST)
        deadline = time.monotonic() + self.environment.stop_timeout + FINAL_BATCH_GRACE_S
        while not workers <= self.final_batch_from and time.monotonic() < deadline:
            gevent.sleep(0.05)

    def on_quitting(self, **_: Any) -> None:
        self.deliver_pending(final=True)


def error_kind_of(exception: BaseException) -> ErrorKind:
    """The MCP verdict McpUser attached, or, for a failure it did not judge, the transport's."""
    kind = getattr(exception, "kind", None)
    return kind if isinstance(kind, ErrorKind) else transport_kind(exception)


@events.init.add_listener
def stream_records(environment: Environment, **_: Any) -> None:
    settings = McpUser.configured_settings()
    stream = RecordStream(environment, settings.records_path)
    environment.events.request.add_listener(stream.on_request)
    McpUser.record_event.add_listener(stream.on_record)
    environment.events.test_start.add_listener(stream.on_test_start)
    environment.events.spawning_complete.add_listener(stream.on_spawning_complete)
    environment.events.test_stop.add_listener(stream.on_test_stop)
    environment.events.quitting.add_listener(stream.on_quitting)
    runner = environment.runner
    stream.lag_probe = gevent.spawn(stream.measure_loop_lag)
    if isinstance(runner, MasterRunner):
        runner.register_message(RECORDS_MESSAGE, stream.on_worker_batch)
    else:
        gevent.spawn(stream.deliver_every_interval)
    if isinstance(runner, WorkerRunner):
        runner.register_message(FINAL_BATCH_REQUEST, stream.on_final_batch_request, concurrent=True)
