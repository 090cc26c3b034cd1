"""The evidence a stability window must hold before ``failover_s`` / ``rto_s`` count it:
enough successes, spread over the window, no failure sent or answered in it, and (after
the final ledger check) no acknowledged probe write that was later lost."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.measure.failover import (
    LOST_ERROR,
    MIN_WINDOW_SAMPLES,
    ProbeCadence,
    ServiceProbeSample,
    failover_s,
    lost_acks_after,
    observable_until_s,
    rto_s,
    stable_from_s,
    verified_samples,
    window_rejection,
)


class Probe(TypedDict):
    cadence: ProbeCadence


FAST: Probe = {"cadence": ProbeCadence(0.1, 1.0)}
"""A probe that answers within a second, every 0.1 s."""
PATIENT: Probe = {"cadence": ProbeCadence(0.1, 5.0)}
"""The default service probe: 5 s timeout, as long as the window."""


def calls(start: float, end: float, ok: bool, step: float = 0.1) -> list[ServiceProbeSample]:
    """Calls sent at start, start + step, ...; each answered 20 ms later."""
    count = round((end - start) / step)
    return [
        ServiceProbeSample(start + i * step + 0.02, ok, None if ok else "refused", start + i * step)
        for i in range(count)
    ]


def test_one_success_then_a_call_hung_until_the_timeout_is_not_stable() -> None:
    """The bug: fault at 9 s, one success at 10 s, then a call hung for the whole 5 s
    window. The old rule saw only the success in [10, 15) and said failover_s = 1 s."""
    hung = ServiceProbeSample(15.0, False, "timeout", 10.0)
    samples = [
        *calls(9.0, 9.98, False),
        ServiceProbeSample(10.0, True, None, 9.98),
        hung,
        *calls(15.0, 20.0, False),
        *calls(20.0, 30.0, True),
    ]
    assert stable_from_s(samples, 9.0, 5.0, 30.0, **PATIENT) == pytest.approx(20.02)
    assert failover_s(samples, 9.0, 5.0, 30.0, **PATIENT) == pytest.approx(11.02)
    assert window_rejection(samples, 10.0, 5.0, **PATIENT) == "failed"  # sent in the window
    # Without its send time the hung call is outside [10, 15): one success is too few.
    unsent = [s if s is not hung else ServiceProbeSample(15.0, False, "timeout") for s in samples]
    assert window_rejection(unsent, 10.0, 5.0, **PATIENT) == "too_few"
    assert failover_s(unsent, 9.0, 5.0, 30.0, **PATIENT) == pytest.approx(11.02)


def test_a_window_with_two_successes_is_not_stable() -> None:
    two = [ServiceProbeSample(10.0, True), ServiceProbeSample(12.5, True)]
    assert MIN_WINDOW_SAMPLES == 3
    assert window_rejection(two, 10.0, 5.0, **PATIENT) == "too_few"
    assert stable_from_s(two, 9.0, 5.0, 30.0, **PATIENT) is None
    three = [*two, ServiceProbeSample(14.0, True)]
    assert stable_from_s(three, 9.0, 5.0, 30.0, **PATIENT) == 10.0


def test_successes_with_a_silence_longer_than_interval_plus_timeout_are_not_stable() -> None:
    """A 3 s gap between successes with a probe that answers within 1.1 s: the probe was
    stuck on a service that did not answer, whatever it said afterwards."""
    samples = [*calls(10.0, 11.0, True), *calls(13.9, 20.0, True)]  # 10.92 -> 13.92
    assert window_rejection(samples, 10.02, 5.0, **FAST) == "gap"
    assert stable_from_s(samples, 10.0, 5.0, 30.0, **FAST) == pytest.approx(13.92)
    # A probe with a 5 s timeout can be silent for 3 s and keep succeeding.
    assert stable_from_s(samples, 10.0, 5.0, 30.0, **PATIENT) == pytest.approx(10.02)


def test_silence_up_to_the_window_end_is_a_gap_too() -> None:
    """Successes only in the first second of [10, 15): the window's end counts as an end."""
    samples = [*calls(10.0, 11.0, True), *calls(17.0, 30.0, True)]
    assert window_rejection(samples, 10.02, 5.0, **FAST) == "gap"
    assert stable_from_s(samples, 10.0, 5.0, 30.0, **FAST) == pytest.approx(17.02)


def test_a_window_whose_probe_writes_were_later_lost_is_not_stable() -> None:
    """The service acknowledged the probe's writes from 10 s on, then lost those before
    12 s (they went to a node that was not promoted): it recovered at 12 s, not 10 s."""
    samples = [
        ServiceProbeSample(t.t_s, t.ok, t.error, t.sent_s, f"w{i}")
        for i, t in enumerate(calls(10.0, 30.0, True))
    ]
    lost = {f"w{i}" for i, s in enumerate(samples) if s.t_s < 12.0}
    intact = frozenset(f"w{i}" for i in range(len(samples))) - lost
    assert stable_from_s(samples, 10.0, 5.0, 30.0, **FAST) == pytest.approx(10.02)
    verified = verified_samples(samples, intact)
    assert stable_from_s(verified, 10.0, 5.0, 30.0, **FAST) == pytest.approx(12.02)
    assert all(s.error == LOST_ERROR for s in verified if not s.ok)
    assert sum(1 for s in verified if not s.ok) == len(lost) == 20
    assert lost_acks_after(samples, intact, 10.0) == 20
    assert lost_acks_after(samples, intact, 11.0) == 10
    # Not checked: the samples as they are.
    assert verified_samples(samples, None) == samples
    assert lost_acks_after(samples, None, 10.0) == 0
    # Samples without a write id cannot be checked and stay.
    assert verified_samples([ServiceProbeSample(1.0, True)], frozenset()) == [
        ServiceProbeSample(1.0, True)
    ]


def test_every_write_lost_is_not_a_recovery_and_says_why() -> None:
    samples = [
        ServiceProbeSample(s.t_s, s.ok, s.error, s.sent_s, f"w{i}")
        for i, s in enumerate(calls(10.0, 30.0, True))
    ]
    assert failover_s(verified_samples(samples, frozenset()), 9.0, 5.0, 30.0, **FAST) is None
    assert lost_acks_after(samples, frozenset(), 9.0) == len(samples)


def test_rto_needs_the_same_evidence() -> None:
    samples = [*calls(10.0, 11.0, True), *calls(14.0, 20.0, True)]
    assert rto_s(samples, 10.0, 5.0, 30.0, [], None, **FAST) == pytest.approx(4.02)


def test_the_last_window_of_the_run_cannot_be_observed() -> None:
    assert observable_until_s(60.0, 5.0) == 55.0
    samples = calls(10.0, 60.0, True)
    stable = stable_from_s(samples, 56.0, 5.0, 60.0, **FAST)
    assert stable is None  # recovered at 56 s perhaps, but nobody watched it last


# The property: whatever the history, a window stable_from_s returns holds the evidence.

EPSILON_S = 1e-9
T = TypeVar("T")


def has_evidence(
    samples: Sequence[ServiceProbeSample], c: float, window_s: float, max_gap_s: float
) -> bool:
    """The evidence rules, written out again from their definition."""
    end = c + window_s
    inside = [s for s in samples if c <= s.t_s < end]
    if any(not s.ok for s in inside):
        return False
    if any(not s.ok and s.sent_s is not None and c <= s.sent_s < end for s in samples):
        return False
    ok_acks = sorted(s.t_s for s in inside if s.ok)
    if len(ok_acks) < MIN_WINDOW_SAMPLES:
        return False
    ends = [c, *ok_acks, end]
    return all(b - a <= max_gap_s + EPSILON_S for a, b in zip(ends, ends[1:], strict=False))


def rarely(rare: st.SearchStrategy[T], usual: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``rare`` about once in 15 draws, else ``usual``."""
    return st.integers(0, 14).flatmap(lambda n: rare if n == 0 else usual)


@st.composite
def histories(draw: st.DrawFn) -> list[ServiceProbeSample]:
    """Samples on a 10 ms grid (ties and boundaries are frequent): mostly a probe beat apart,
    sometimes a long silence; mostly ok; each sent a little or a long time (a hung call)
    before its answer, or at an unknown time; some with a write id."""
    steps = draw(
        st.lists(
            st.tuples(
                rarely(st.integers(0, 600), st.integers(0, 30)),
                rarely(st.just(False), st.just(True)),
                rarely(st.integers(0, 600), st.none() | st.integers(0, 20)),
                st.none() | st.sampled_from(["a", "b", "c", "d"]),
            ),
            min_size=1,
            max_size=150,
        )
    )
    samples, t = [], 0
    for gap, ok, took, tag in steps:
        t += gap
        samples.append(
            ServiceProbeSample(
                t / 100,
                ok,
                None if ok else "err",
                None if took is None else max(0, t - took) / 100,
                None if tag is None else f"{tag}{t}",
            )
        )
    return draw(st.permutations(samples))  # the functions must not rely on the order


@settings(max_examples=400, deadline=None)
@given(
    samples=histories(),
    t_from=st.integers(0, 100).map(lambda t: t / 100),
    window=st.integers(20, 400).map(lambda t: t / 100),
    run_end_after_last=st.integers(-500, 500).map(lambda t: t / 100),
    interval=st.sampled_from([0.05, 0.1, 0.5]),
    timeout=st.sampled_from([0.2, 1.0, 5.0]),
)
def test_a_window_without_evidence_is_never_stable(
    samples: list[ServiceProbeSample],
    t_from: float,
    window: float,
    run_end_after_last: float,
    interval: float,
    timeout: float,
) -> None:
    """Whenever ``stable_from_s`` returns c, [c, c + W) holds every piece of evidence, and c
    is the first such window that fits in the run; otherwise there is none."""
    run_end = max((s.t_s for s in samples), default=0.0) + run_end_after_last
    stable = stable_from_s(
        samples, t_from, window, run_end, cadence=ProbeCadence(interval, timeout)
    )
    candidates = sorted(
        (
            s
            for s in samples
            if s.ok and s.t_s >= t_from and (s.sent_s is None or s.sent_s >= t_from)
        ),
        key=lambda s: s.t_s,
    )
    expected = next(
        (
            s.t_s
            for s in candidates
            if s.t_s + window <= run_end
            and has_evidence(samples, s.t_s, window, interval + timeout)
        ),
        None,
    )
    assert stable == expected
    if stable is not None:
        assert stable + window <= run_end
        assert all(s.ok for s in samples if stable <= s.t_s < stable + window)
        assert (
            window_rejection(samples, stable, window, cadence=ProbeCadence(interval, timeout))
            is None
        )


@settings(max_examples=200, deadline=None)
@given(samples=histories(), keep=st.sets(st.sampled_from(["a", "b", "c", "d"])))
def test_a_stable_window_after_the_ledger_check_holds_no_lost_write(
    samples: list[ServiceProbeSample], keep: set[str]
) -> None:
    """Writes tagged with a kept letter are intact; the others were lost."""
    intact = frozenset(s.write_id for s in samples if s.write_id and s.write_id[0] in keep)
    assert None not in intact
    verified = verified_samples(samples, intact)
    assert len(verified) == len(samples)
    assert sum(1 for s in samples if s.ok) - sum(1 for s in verified if s.ok) == lost_acks_after(
        samples, intact, -math.inf
    )
    assert all(not v.ok for s, v in zip(samples, verified, strict=True) if not s.ok)
    stable = stable_from_s(verified, 0.0, 2.0, 40.0, **FAST)
    if stable is not None:
        window = [s for s in samples if stable <= s.t_s < stable + 2.0]
        assert all(s.write_id is None or s.write_id in intact for s in window)


@settings(max_examples=200, deadline=None)
@given(
    samples=histories(),
    keep=st.sets(st.sampled_from(["a", "b", "c", "d"])),
    window=st.integers(20, 400).map(lambda t: t / 100),
)
def test_checking_writes_against_the_ledger_can_only_delay_a_recovery(
    samples: list[ServiceProbeSample], keep: set[str], window: float
) -> None:
    """Why a recovery measured on unverified writes is a lower bound (``Doubt.lower_bounds``
    of an unread ledger): whatever the ledger would have found, the verified recovery is
    never earlier, and never there when the unverified one is not."""
    intact = frozenset(s.write_id for s in samples if s.write_id and s.write_id[0] in keep)
    run_end = max(s.t_s for s in samples) + window
    cadence = ProbeCadence(0.1, 1.0)
    unverified = stable_from_s(samples, 0.0, window, run_end, cadence=cadence)
    verified = stable_from_s(
        verified_samples(samples, intact), 0.0, window, run_end, cadence=cadence
    )
    if unverified is None:
        assert verified is None
    elif verified is not None:
        assert verified >= unverified
