"""Reconnect pacing: backoff bounds and cap, immediate retries, Retry-After honoured (capped).

Deterministic: a seeded RNG, and a fake clock whose ``sleep`` only moves time on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from harness.load.policy import RETRY_AFTER_CAP_S, Attempt, ReconnectPolicy

SAMPLES = 2000


class FakeClock:
    """Monotonic time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedServer:
    """Answers each attempt from a script, noting the fake time it arrived."""

    def __init__(self, clock: FakeClock, script: list[Attempt]) -> None:
        self.clock = clock
        self.answers: Iterator[Attempt] = iter(script)
        self.arrivals: list[float] = []

    def attempt(self) -> Attempt:
        self.arrivals.append(self.clock.now)
        return next(self.answers)


def backoff(base_s: float = 0.1, cap_s: float = 5.0) -> ReconnectPolicy:
    return ReconnectPolicy("backoff", base_s, cap_s, think_time_s=(1.0, 2.0))


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 5])
def test_backoff_is_full_jitter_below_the_exponential_ceiling(attempt: int) -> None:
    policy = backoff()
    rng = random.Random(1)
    ceiling = min(5.0, 0.1 * 2**attempt)
    assert policy.backoff_ceiling_s(attempt) == pytest.approx(ceiling)
    delays = [policy.delay_s(attempt, rng) for _ in range(SAMPLES)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # full jitter: the whole range is used, not just the top of it
    assert min(delays) < 0.05 * ceiling and max(delays) > 0.95 * ceiling
    assert sum(delays) / SAMPLES == pytest.approx(ceiling / 2, rel=0.1)


def test_backoff_ceiling_stops_at_the_cap_even_for_huge_attempt_numbers() -> None:
    policy = backoff(base_s=0.1, cap_s=5.0)
    assert policy.backoff_ceiling_s(6) == 5.0  # 0.1 * 64 > 5
    assert policy.backoff_ceiling_s(10_000) == 5.0
    rng = random.Random(2)
    delays = [policy.delay_s(10_000, rng) for _ in range(SAMPLES)]
    assert max(delays) <= 5.0 and max(delays) > 4.9


def test_immediate_first_attempt_at_once_then_in_lockstep_every_base() -> None:
    policy = ReconnectPolicy("immediate", base_s=0.25, think_time_s=(1.0, 2.0))
    rng = random.Random(3)
    assert policy.delay_s(0, rng) == 0.0
    later = {policy.delay_s(n, rng) for n in range(1, SAMPLES)}
    assert later == {0.25}  # no growth, no jitter


@pytest.mark.parametrize("name", ["immediate", "backoff"])
@pytest.mark.parametrize("attempt", [0, 1, 7])
def test_retry_after_is_a_floor_under_both_policies(name: str, attempt: int) -> None:
    policy = ReconnectPolicy(name, 0.1, 5.0, think_time_s=(1.0, 2.0))  # type: ignore[arg-type]
    rng = random.Random(4)
    delays = [policy.delay_s(attempt, rng, retry_after_s=3.0) for _ in range(SAMPLES)]
    assert all(d >= 3.0 for d in delays)
    if name == "backoff" and policy.backoff_ceiling_s(attempt) > 3.0:
        # with backoff the pause is max(retry-after, jitter): above it when the draw is
        assert max(delays) > 3.0
    else:
        assert set(delays) == {3.0}


def test_retry_after_is_capped_at_sixty_seconds() -> None:
    policy = backoff(cap_s=5.0)
    rng = random.Random(5)
    assert RETRY_AFTER_CAP_S == 60.0
    assert policy.retry_after_wait_s(3600.0) == 60.0
    assert policy.retry_after_wait_s(-1.0) == 0.0
    assert policy.delay_s(3, rng, retry_after_s=3600.0) == 60.0
    immediate = ReconnectPolicy("immediate")
    assert immediate.delay_s(0, rng, retry_after_s=90.0) == 60.0


def test_a_retry_after_larger_than_the_backoff_cap_is_still_honoured_in_full() -> None:
    policy = backoff(base_s=0.1, cap_s=1.0)
    rng = random.Random(6)
    assert min(policy.delay_s(0, rng, retry_after_s=2.0) for _ in range(100)) == 2.0


def test_same_seed_same_delays() -> None:
    policy = backoff()
    first = [policy.delay_s(n, random.Random(7)) for n in range(10)]
    again = [policy.delay_s(n, random.Random(7)) for n in range(10)]
    assert first == again


def test_run_waits_out_a_shed_before_the_next_attempt() -> None:
    clock = FakeClock()
    server = ScriptedServer(
        clock, [Attempt(False, retry_after_s=2.0), Attempt(False), Attempt(True)]
    )
    policy = backoff(base_s=0.1, cap_s=1.0)
    attempts = policy.run(server.attempt, random.Random(8), clock.sleep)
    assert attempts == 3
    first, second, third = server.arrivals
    assert first <= 0.1  # attempt 0: jitter in [0, base]
    assert second - first >= 2.0  # the shed was waited out, although the cap is 1 s
    assert 0.0 <= third - second <= 0.4  # attempt 2: back to plain backoff, ceiling 0.4


def test_run_immediate_reconnects_at_once_then_every_base_and_honours_a_shed() -> None:
    clock = FakeClock()
    server = ScriptedServer(
        clock,
        [Attempt(False), Attempt(False, retry_after_s=5.0), Attempt(False), Attempt(True)],
    )
    policy = ReconnectPolicy("immediate", base_s=0.5)
    assert policy.run(server.attempt, random.Random(9), clock.sleep) == 4
    arrivals = server.arrivals
    assert arrivals[0] == 0.0
    assert arrivals[1] - arrivals[0] == 0.5
    assert arrivals[2] - arrivals[1] == 5.0  # max(base, Retry-After)
    assert arrivals[3] - arrivals[2] == 0.5


def test_run_first_success_is_one_attempt_without_sleeping_when_immediate() -> None:
    clock = FakeClock()
    server = ScriptedServer(clock, [Attempt(True)])
    assert ReconnectPolicy("immediate").run(server.attempt, random.Random(1), clock.sleep) == 1
    assert clock.sleeps == []


def test_run_is_deterministic_with_a_seed() -> None:
    def arrivals(seed: int) -> list[float]:
        clock = FakeClock()
        server = ScriptedServer(clock, [Attempt(False)] * 6 + [Attempt(True)])
        backoff().run(server.attempt, random.Random(seed), clock.sleep)
        return server.arrivals

    assert arrivals(10) == arrivals(10)
    assert arrivals(10) != arrivals(11)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "sometimes"}, "not one of"),
        ({"base_s": 0.0}, "base_s"),
        ({"base_s": 2.0, "cap_s": 1.0}, "base_s <= cap_s"),
        ({"think_time_s": (2.0, 1.0)}, "think_time_s"),
        ({"retry_after_cap_s": -1.0}, "retry_after_cap_s"),
    ],
)
def test_invalid_policies_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReconnectPolicy(**kwargs)
