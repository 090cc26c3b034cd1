"""Pure logic of the server's protection against reconnection storms.

After a restart or a failover every client opens a new session at once, and
session setup (about 450 initialize/s per process) is far dearer than serving
tools/list (2,000-3,000/s): admitting sessions at a bounded rate keeps the
process answering the clients it already has. Everything here is plain
bookkeeping over an injectable clock, with no I/O and no asyncio, so that it
is unit tested with a fake clock; `shield.py` puts it in front of the SDK.

- `AdmissionControl`: a token bucket with a bounded FIFO wait queue.
- `StormDetector`: is the rate of new sessions (or connections) a storm?
- `CircuitBreaker`: per tool, fail fast while the database keeps failing.
- `ConnectionTracker`: which (host, port) pairs are live keep-alive connections.
"""

from __future__ import annotations

import enum
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal

Clock = Callable[[], float]
"""Seconds on a monotonic clock; `time.monotonic` in the server, a fake in tests."""

ShedReason = Literal["queue_full", "max_wait"]


@dataclass(frozen=True)
class ProtectionSettings:
    """Every protection knob; the defaults leave the server as it was (all off).

    The one limit on by default is the tool concurrency lane (64 calls): with
    the default pool of 10 connections it only moves waiting calls from the
    pool's queue to the lane's, and it keeps tools/list off that queue.
    """

    admission_rate: float = 0.0
    """New sessions (or connections) admitted per second; 0 turns admission off."""
    admission_burst: int = 50
    admission_queue: int = 200
    admission_max_wait_s: float = 2.0
    tool_concurrency: int = 64
    """Tool calls running at once; 0 means no limit."""
    defer_expensive: bool = False
    storm_threshold: float = 100.0
    """New sessions per second, over the storm window, that make a storm."""
    breaker_error_rate: float = 0.0
    """Failure fraction that opens a tool's breaker; 0 turns breakers off."""
    breaker_window_s: float = 10.0
    breaker_min_calls: int = 20
    breaker_cooldown_s: float = 5.0
    keep_alive_s: float = 5.0
    """The HTTP server's keep-alive timeout: a pair idle longer is a closed connection."""

    def __post_init__(self) -> None:
        checks = [
            (self.admission_rate >= 0, "admission rate must be >= 0"),
            (self.admission_burst >= 1, "admission burst must be >= 1"),
            (self.admission_queue >= 0, "admission queue must be >= 0"),
            (self.admission_max_wait_s >= 0, "admission max wait must be >= 0"),
            (self.tool_concurrency >= 0, "tool concurrency must be >= 0"),
            (self.storm_threshold > 0, "storm threshold must be > 0"),
            (0 <= self.breaker_error_rate <= 1, "breaker error rate must be within 0..1"),
            (self.breaker_window_s > 0, "breaker window must be > 0"),
            (self.breaker_min_calls >= 1, "breaker min calls must be >= 1"),
            (self.breaker_cooldown_s > 0, "breaker cooldown must be > 0"),
            (self.keep_alive_s > 0, "keep-alive must be > 0"),
        ]
        for name, value in vars(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def admission_on(self) -> bool:
        return self.admission_rate > 0

    @property
    def breakers_on(self) -> bool:
        return self.breaker_error_rate > 0

    @property
    def watches_sessions(self) -> bool:
        """Whether new sessions must be seen at all (to admit them or to detect a storm)."""
        return self.admission_on or self.defer_expensive


class SlidingCounts:
    """Events and failures over the last `window_s`, in fixed slots.

    Slots rather than one timestamp per event: memory stays bounded however
    high the rate (a storm is exactly when it is high). The window is accurate
    to one slot.
    """

    def __init__(self, window_s: float, slots: int = 30) -> None:
        if window_s <= 0 or slots < 1:
            raise ValueError("window must be > 0 and slots >= 1")
        self.window_s = window_s
        self._slot_s = window_s / slots
        self._slots = slots
        self._counts: deque[list[int]] = deque()
        self._events = 0
        self._failures = 0

    def add(self, now: float, *, events: int = 1, failures: int = 0) -> None:
        index = math.floor(now / self._slot_s)
        self._expire(index)
        if self._counts and self._counts[-1][0] == index:
            self._counts[-1][1] += events
            self._counts[-1][2] += failures
        else:
            self._counts.append([index, events, failures])
        self._events += events
        self._failures += failures

    def totals(self, now: float) -> tuple[int, int]:
        """(events, failures) within the window ending at `now`."""
        self._expire(math.floor(now / self._slot_s))
        return self._events, self._failures

    def clear(self) -> None:
        self._counts.clear()
        self._events = self._failures = 0

    def _expire(self, index: int) -> None:
        while self._counts and self._counts[0][0] <= index - self._slots:
            _, events, failures = self._counts.popleft()
            self._events -= events
            self._failures -= failures


@dataclass(frozen=True)
class Admitted:
    """Go ahead after `wait_s` seconds (0: at once): the request's turn in the queue."""

    wait_s: float


@dataclass(frozen=True)
class Shed:
    """Refuse now; a request made `retry_after_s` seconds later would find a token."""

    retry_after_s: int
    reason: ShedReason


class AdmissionControl:
    """A token bucket (rate, burst) with a bounded FIFO queue of waiters.

    Each waiter reserves the next token as it arrives (the bucket may go into
    debt), so its turn is known at once: waiters are served strictly in arrival
    order, nothing has to wake them but their own timer, and a request whose
    turn would come later than `max_wait_s` is refused at once rather than
    after waiting in vain. A reserved token is not given back if its waiter goes
    away; that errs on the side of admitting fewer.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        queue_max: int,
        max_wait_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or queue_max < 0 or max_wait_s < 0:
            raise ValueError("need rate > 0, burst >= 1, queue_max >= 0, max_wait_s >= 0")
        self.rate = rate
        self.burst = burst
        self.queue_max = queue_max
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._turns: deque[float] = deque()
        """When each queued waiter's turn comes, in arrival (and so in time) order."""

    def request(self) -> Admitted | Shed:
        """Decide one arriving request."""
        now = self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return Admitted(0.0)
        wait = (1 - self._tokens) / self.rate
        if len(self._turns) >= self.queue_max:
            return Shed(self._retry_after(), "queue_full")
        if wait > self.max_wait_s + 1e-9:
            return Shed(self._retry_after(), "max_wait")
        self._tokens -= 1
        self._turns.append(now + wait)
        return Admitted(wait)

    def reconfigure(self, rate: float, burst: int, queue_max: int, max_wait_s: float) -> None:
        """New parameters from now on, without forgetting the bucket's level or its waiters.

        Tokens accrued so far count at the old rate; a fuller bucket than the
        new burst allows is cut down to it. Waiters keep the turns they were
        given; newcomers queue behind the debt those turns hold, repaid at the
        new rate.
        """
        if rate <= 0 or burst < 1 or queue_max < 0 or max_wait_s < 0:
            raise ValueError("need rate > 0, burst >= 1, queue_max >= 0, max_wait_s >= 0")
        self._refill()
        self.rate = rate
        self.burst = burst
        self.queue_max = queue_max
        self.max_wait_s = max_wait_s
        self._tokens = min(self._tokens, float(burst))

    def queue_depth(self) -> int:
        """Waiters whose turn has not come yet."""
        self._refill()
        return len(self._turns)

    def tokens(self) -> float:
        """Tokens in the bucket now; negative while waiters hold reservations."""
        self._refill()
        return self._tokens

    def _refill(self) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now
        while self._turns and self._turns[0] <= now:
            self._turns.popleft()
        return now

    def _retry_after(self) -> int:
        """Whole seconds until a new arrival would find a token, at least 1 (as Retry-After)."""
        return max(1, math.ceil((1 - self._tokens) / self.rate - 1e-9))


class StormDetector:
    """Tells a reconnection storm from normal traffic by the rate of new sessions.

    A storm starts when the rate over the window exceeds the threshold, or
    while admission has waiters; it ends once the rate is back under
    `off_fraction` of the threshold and nobody waits. The gap between the two
    keeps a rate hovering near the threshold from flapping the state.
    """

    def __init__(
        self,
        threshold_per_s: float,
        window_s: float = 3.0,
        off_fraction: float = 0.5,
        clock: Clock = time.monotonic,
    ) -> None:
        if threshold_per_s <= 0 or not 0 < off_fraction <= 1:
            raise ValueError("need threshold > 0 and 0 < off_fraction <= 1")
        self.threshold_per_s = threshold_per_s
        self.off_fraction = off_fraction
        self._clock = clock
        self._counts = SlidingCounts(window_s)
        self._active = False

    def record(self, count: int = 1) -> None:
        """One new session (initialize) or new connection, admitted or shed."""
        self._counts.add(self._clock(), events=count)

    def rate(self) -> float:
        """New sessions per second over the window."""
        events, _ = self._counts.totals(self._clock())
        return events / self._counts.window_s

    def active(self, queue_depth: int = 0) -> bool:
        rate = self.rate()
        if queue_depth > 0 or rate > self.threshold_per_s:
            self._active = True
        elif rate <= self.threshold_per_s * self.off_fraction:
            self._active = False
        return self._active


class BreakerState(enum.IntEnum):
    """Values of the `mcp_breaker_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; its outcome counts only in the breaker state it was issued in."""

    generation: int
    probe: bool


class CircuitBreaker:
    """Sliding-window circuit breaker of one tool.

    Closed: calls go through; once the window holds at least `min_calls` and
    the failure fraction reaches `error_rate`, it opens. Open: calls are
    refused for `cooldown_s`, then it is half-open: one probe call goes
    through at a time; its success closes the breaker (with a fresh window),
    its failure opens it again for another cool-down. Outcomes of calls begun
    in an earlier state are ignored: a slow failure that started before a
    recovery must not re-open the breaker.
    """

    def __init__(
        self,
        error_rate: float,
        window_s: float,
        min_calls: int,
        cooldown_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 0 < error_rate <= 1 or min_calls < 1 or cooldown_s <= 0:
            raise ValueError("need 0 < error_rate <= 1, min_calls >= 1, cooldown_s > 0")
        self.error_rate = error_rate
        self.min_calls = min_calls
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._window = SlidingCounts(window_s)
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._probe_out = False
        self.rejected = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self.cooldown_s:
            self._enter(BreakerState.HALF_OPEN)
        return self._state

    def acquire(self) -> Permit | None:
        """A permit for one call, or None (counted as rejected) to fail fast."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(self._generation, probe=False)
        if state is BreakerState.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return Permit(self._generation, probe=True)
        self.rejected += 1
        return None

    def record(self, permit: Permit, *, failure: bool) -> None:
        """The outcome of a permitted call: failure means the infrastructure failed."""
        if permit.generation != self._generation:
            return
        now = self._clock()
        if permit.probe:
            self._enter(BreakerState.OPEN if failure else BreakerState.CLOSED)
            return
        self._window.add(now, failures=int(failure))
        calls, failures = self._window.totals(now)
        if failure and calls >= self.min_calls and failures >= self.error_rate * calls - 1e-9:
            self._enter(BreakerState.OPEN)

    def release(self, permit: Permit) -> None:
        """A permitted call ended with no verdict on the infrastructure (cancelled, busy)."""
        if permit.probe and permit.generation == self._generation:
            self._probe_out = False

    def window_totals(self) -> tuple[int, int]:
        """(calls, failures) counted in the current window (closed state only)."""
        return self._window.totals(self._clock())

    def reset(self) -> None:
        """Closed with an empty window, whatever the state; calls under way no longer count."""
        self._enter(BreakerState.CLOSED)

    def retry_after_s(self) -> float:
        """Seconds until the next probe may go through (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def _enter(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._probe_out = False
        self._window.clear()
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()


class ConnectionTracker:
    """Live client connections, as (host, port) pairs, for the sessionless revision.

    ASGI says nothing of connections, but a keep-alive connection reuses its
    (host, port) pair for every request. A pair is forgotten once idle longer
    than the server's keep-alive timeout (the server has closed that
    connection, so the same pair again is a new one), and the least recently
    used pairs go first when the table is full.
    """

    def __init__(self, idle_s: float, max_entries: int = 50_000, clock: Clock = time.monotonic):
        if idle_s <= 0 or max_entries < 1:
            raise ValueError("need idle_s > 0 and max_entries >= 1")
        self.idle_s = idle_s
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def is_live(self, key: Hashable) -> bool:
        self._expire()
        return key in self._seen

    def touch(self, key: Hashable) -> None:
        """The pair is in use now (a request began or its response ended)."""
        self._seen[key] = self._clock()
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        self._expire()
        return len(self._seen)

    def _expire(self) -> None:
        cutoff = self._clock() - self.idle_s
        while self._seen:
            key, last = next(iter(self._seen.items()))
            if last >= cutoff:
                break
            del self._seen[key]
