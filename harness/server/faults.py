"""Fault modes of the reference server: the same server started as a faulty release.

A corruption scenario needs a release that damages data the way real bugs do,
through the server's own tools rather than by editing the database behind its
back, so that integrity checks, the write ledger and a restore are tested
against the kind of damage they exist for:

- `write-garbage`: a release whose write path is broken. create_note stores a
  mangled body under the checksum the client sent (and acknowledges the write
  as usual), and now and then writes a row nobody asked for (a phantom).
- `corrupt-state`: a release whose maintenance tool has a bug. It adds the
  tool `compact_notes`, which damages a chosen share of the rows in one
  transaction and returns exactly what it damaged, the ground truth an
  integrity checker is compared against.

This module holds the pure parts (names, mangling, how many rows and which);
the database side is in `notes.py`, the tools in `app.py`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, get_args

FaultMode = Literal["none", "write-garbage", "corrupt-state"]
FAULT_MODES: tuple[FaultMode, ...] = get_args(FaultMode)

GARBAGE_SUFFIX = " ~garbage"
"""Appended to a mangled body, so a person reading the row sees what happened."""

PHANTOM_ID_PREFIX = "garbage-"
"""Ids of the rows write-garbage invents; compact_notes leaves them alone."""

COMPACTED_SUFFIX = " ~compacted"
"""Appended to the body of a row compact_notes rewrites: the content changes, the checksum not."""


@dataclass(frozen=True)
class FaultSettings:
    """Which faulty release this process is; `none` is the good release."""

    mode: FaultMode = "none"
    phantom_every: int = 5
    """write-garbage: one phantom row after every this many created notes; 0 = never."""

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; one of {', '.join(FAULT_MODES)}")
        if self.phantom_every < 0:
            raise ValueError("phantom_every must be >= 0 (0 = never)")


def mangle_body(body: str) -> str:
    """The body as write-garbage stores it: always different from what the client sent."""
    return body[::-1] + GARBAGE_SUFFIX


@dataclass(frozen=True)
class PhantomNote:
    id: str
    title: str
    body: str


def phantom_note(token: str | None = None) -> PhantomNote:
    """A junk row write-garbage inserts unasked: no checksum, no parent, a `garbage-` id."""
    token = token or secrets.token_hex(8)
    return PhantomNote(
        id=f"{PHANTOM_ID_PREFIX}{token}",
        title=f"garbage {token}",
        body=f"~garbage~ {token[::-1]}",
    )


class PhantomSchedule:
    """Counts created notes and says when the next phantom is due (every `every`-th; 0: never)."""

    def __init__(self, every: int) -> None:
        if every < 0:
            raise ValueError("every must be >= 0 (0 = never)")
        self.every = every
        self.created = 0

    def note_created(self) -> bool:
        """Count one created note; True when a phantom must follow it."""
        self.created += 1
        return self.every > 0 and self.created % self.every == 0


def damage_count(candidates: int, fraction: float) -> int:
    """Rows to damage: `fraction` of `candidates` rounded down, at least 1 if fraction > 0.

    Computed on the decimal the caller wrote (0.29 of 100 is 29, not 28 as
    float arithmetic would have it).
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"a fraction must be within 0..1, got {fraction}")
    if candidates <= 0 or fraction == 0:
        return 0
    return max(1, int(Fraction(str(fraction)) * candidates))


def damage_order(ids: Iterable[str], seed: int) -> list[str]:
    """Ids in the order compact_notes takes them: by md5(id || seed), a fixed shuffle per seed."""
    return sorted(
        ids,
        key=lambda note_id: (
            hashlib.md5(f"{note_id}{seed}".encode(), usedforsecurity=False).digest(),
            note_id,
        ),
    )


@dataclass(frozen=True)
class DamagePlan:
    """Disjoint id sets compact_notes damages, each breaking one invariant."""

    update: list[str]
    delete: list[str]
    break_invariant: list[str]


def plan_damage(ordered_ids: Sequence[str], fractions: tuple[float, float, float]) -> DamagePlan:
    """Consecutive, hence disjoint, slices of `ordered_ids`: update, delete, break an invariant.

    Each count is `damage_count` of all candidates; when they add up to more
    rows than there are, the later sets get what is left.
    """
    taken = 0
    slices: list[list[str]] = []
    for fraction in fractions:
        count = min(damage_count(len(ordered_ids), fraction), len(ordered_ids) - taken)
        slices.append(list(ordered_ids[taken : taken + count]))
        taken += count
    return DamagePlan(update=slices[0], delete=slices[1], break_invariant=slices[2])
