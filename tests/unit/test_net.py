"""Who answers on a port: a part of the stack speaks only to its own process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from harness.stack.net import LOOPBACK, listens_on, taken_by_another


def listening_socket() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_a_socket_this_process_listens_on_is_its_own() -> None:
    sock, port = listening_socket()
    with sock:
        assert listens_on(os.getpid(), port)
        assert not taken_by_another(os.getpid(), port)


def test_a_port_another_process_holds_is_taken_by_another() -> None:
    sock, port = listening_socket()
    with sock:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert not listens_on(child.pid, port)
            assert taken_by_another(child.pid, port)
        finally:
            child.kill()
            child.wait()


def test_a_free_port_is_neither() -> None:
    sock, port = listening_socket()
    sock.close()
    assert not listens_on(os.getpid(), port)
    assert not taken_by_another(os.getpid(), port)


def test_a_process_that_is_gone_listens_on_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not listens_on(child.pid, 1)


class _Process:
    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def running(self) -> bool:
        return self.alive


def test_poll_until_says_ready_and_gives_up_on_an_exit_or_the_timeout() -> None:
    import asyncio

    from harness.stack.processes import poll_until

    answers = iter([False, False, True])
    calls: list[int] = []

    async def third_time() -> bool:
        calls.append(1)
        return next(answers)

    async def never() -> bool:
        return False

    assert asyncio.run(poll_until(third_time, 5, interval_s=0.01)) is True and len(calls) == 3
    exited = _Process(alive=False)
    assert asyncio.run(poll_until(never, 5, process=exited, interval_s=0.01)) is False  # type: ignore[arg-type]
    assert asyncio.run(poll_until(never, 0.05, process=_Process(True), interval_s=0.01)) is False  # type: ignore[arg-type]


ADOPTION = r"""
import os, subprocess, sys, time
import psutil
from harness.stack.processes import become_subreaper, reap_adopted
become_subreaper()
owned = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])  # a status to lose
# a detached grandchild, as Patroni starts a postmaster: its parent exits at once
middle = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(0.3)']).pid)"],
    stdout=subprocess.PIPE, text=True)
orphan = int(middle.stdout.readline())
name = psutil.Process(orphan).name()
middle.wait()
time.sleep(1.0)
other = subprocess.Popen(["sh", "-c", "exit 4"])  # a child someone else waits for
time.sleep(0.5)
reaped = reap_adopted({owned.pid}, names=(name,))
print(reaped == [orphan], owned.poll() == 3, other.poll() == 4)
"""


def test_an_adopted_orphan_that_exited_is_reaped_and_owned_children_are_left_to_popen() -> None:
    """Patroni detaches its postmasters and the harness (a subreaper) adopts them: a
    stopped one must be reaped, or Patroni waits for it forever (a switchover never ends)."""
    done = subprocess.run(
        [sys.executable, "-c", ADOPTION], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.split() == ["True", "True", "True"], done.stdout + done.stderr
