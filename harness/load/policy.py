"""How a client paces its attempts to get a working session back: pure arithmetic.

Kept apart from the Locust user (no gevent, no clock of its own: the caller
passes ``sleep`` and a random generator) so the pacing that shapes a reconnect
storm can be tested deterministically with a seeded RNG and a fake clock.

Two policies, as in the scenario's ``load.reconnect``:

- ``immediate``: the first attempt at once, then one every ``base`` seconds, with
  no growth and no jitter (a naive client's retry loop: every client that broke at
  the same instant retries in lockstep; the worst storm).
- ``backoff``: exponential backoff with full jitter, each pause drawn from
  uniform(0, min(cap, base * 2**attempt)).

Under both, a server that shed an attempt (503 or 429 with ``Retry-After``)
is left alone for at least what it asked, up to ``retry_after_cap_s`` (a
misconfigured server asking for an hour must not park the load for the rest of
the run); with backoff the pause is the larger of the two.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

PolicyName = Literal["immediate", "backoff"]
POLICY_NAMES: tuple[PolicyName, ...] = ("immediate", "backoff")

RETRY_AFTER_CAP_S = 60.0
"""The longest ``Retry-After`` a client honours; a longer one is cut to this."""

MAX_BACKOFF_EXPONENT = 30
"""2**30 times any sane base is past every cap; bounding it keeps the float finite."""


@dataclass(frozen=True)
class Attempt:
    """What one attempt to (re)connect came to."""

    ok: bool
    retry_after_s: float | None = None
    """Set when the server shed the attempt and said when to come back."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """The pause before each attempt to get a working session (or connection) back."""

    name: PolicyName = "backoff"
    base_s: float = 0.1
    cap_s: float = 5.0
    think_time_s: tuple[float, float] = (1.0, 2.0)
    """Kept for validation symmetry with the user's settings; pacing does not use it."""
    retry_after_cap_s: float = RETRY_AFTER_CAP_S

    def __post_init__(self) -> None:
        if self.name not in POLICY_NAMES:
            raise ValueError(f"reconnect policy {self.name!r} is not one of {POLICY_NAMES}")
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")
        low, high = self.think_time_s
        if not 0 <= low <= high:
            raise ValueError(f"think_time_s {self.think_time_s} needs 0 <= min <= max")
        if self.retry_after_cap_s < 0:
            raise ValueError("retry_after_cap_s must be >= 0")

    def backoff_ceiling_s(self, attempt: int) -> float:
        """Upper bound of the jittered pause before attempt number ``attempt`` (0-based)."""
        return min(self.cap_s, self.base_s * 2 ** min(max(attempt, 0), MAX_BACKOFF_EXPONENT))

    def retry_after_wait_s(self, retry_after_s: float) -> float:
        """How long a ``Retry-After`` of ``retry_after_s`` keeps the client away (capped)."""
        return min(max(retry_after_s, 0.0), self.retry_after_cap_s)

    def delay_s(
        self, attempt: int, rng: random.Random, retry_after_s: float | None = None
    ) -> float:
        """The pause before attempt ``attempt`` (0 = the first after the break).

        ``retry_after_s`` is what the server asked for when it shed the previous
        attempt. The RNG is drawn from the same way whether or not it is set, so
        a seeded run makes the same choices either way.
        """
        if self.name == "backoff":
            delay = rng.uniform(0.0, self.backoff_ceiling_s(attempt))
        else:
            rng.random()  # same draws under both policies: seeded runs stay comparable
            delay = self.base_s if attempt > 0 else 0.0
        if retry_after_s is not None:
            delay = max(delay, self.retry_after_wait_s(retry_after_s))
        return delay

    def run(
        self,
        attempt: Callable[[], Attempt],
        rng: random.Random,
        sleep: Callable[[float], object],
    ) -> int:
        """Call ``attempt`` until it succeeds, pausing before each call; returns the attempts made.

        Never gives up: the load is bounded in time by its runner, which stops
        the user (and this loop with it) when the test ends.
        """
        made = 0
        retry_after_s: float | None = None
        while True:
            delay = self.delay_s(made, rng, retry_after_s)
            if delay > 0:
                sleep(delay)
            outcome = attempt()
            made += 1
            if outcome.ok:
                return made
            retry_after_s = outcome.retry_after_s
