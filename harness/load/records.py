"""The load's records, as the Locust processes write them (one JSON object per line of
``load-records.jsonl``) and the harness reads them back.

Keys are short because a run writes hundreds of thousands of them; the TypedDicts below
name each one. ``t`` is CLOCK_MONOTONIC when the record was made; the harness adds
``t_s``, seconds from the start of the load, when it reads the record in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, TypedDict, cast, overload

Record = dict[str, Any]
"""A record as read from the file (before its kind is looked at)."""


class _Stamped(TypedDict):
    t: float
    """CLOCK_MONOTONIC when the record was made."""
    t_s: float
    """Seconds from the start of the load (added when the harness reads it)."""


class Request(_Stamped, total=False):
    """``req``: one request a simulated client made."""

    k: Literal["req"]
    m: str
    """The request: ``tools/list``, ``initialize``, a tool's name, ``GET stream``."""
    ms: float
    """How long it took."""
    ok: bool
    err: str | None
    """Its error kind (``harness.mcp_client.wire.ErrorKind``) when it failed."""
    u: int
    """The simulated client (``USER_ID_STRIDE`` × worker + n)."""
    ra: float
    """The Retry-After seconds of a shed request."""


class WriteAttempt(_Stamped, total=False):
    """``write_attempt``: a write is about to be sent (again, for a retry)."""

    k: Literal["write_attempt"]
    id: str
    u: int
    seq: int
    """This worker's ledger record number (gaps: records lost)."""
    w: str
    """The worker."""


class Write(_Stamped, total=False):
    """``write``: a write was acknowledged."""

    k: Literal["write"]
    id: str
    sum: str
    """Checksum of its content (``harness.mcp_client.writes.content_checksum``)."""
    u: int
    seq: int
    w: str


class Broken(_Stamped, total=False):
    """``broken``: a client's session (or connection) broke."""

    k: Literal["broken"]
    u: int
    reason: str


class Reconnected(_Stamped, total=False):
    """``reconnected``: a client that broke is back, ``duration_s`` later (its own clock)."""

    k: Literal["reconnected"]
    u: int
    duration_s: float
    attempts: int


class Users(_Stamped, total=False):
    """``users``: how many clients are running (every second)."""

    k: Literal["users"]
    n: int


class Spawned(_Stamped, total=False):
    """``spawned``: every client has started."""

    k: Literal["spawned"]
    n: int


class Lag(_Stamped, total=False):
    """``lag``: a Locust process's event loop, late by ``mean`` / ``max`` seconds over one second."""

    k: Literal["lag"]
    p: int
    mean: float
    max: float


class LedgerEnd(_Stamped, total=False):
    """``ledger_end``: a worker's last ledger record: it made ``n`` (seqs 0..n-1)."""

    k: Literal["ledger_end"]
    w: str
    n: int


Kind = Literal[
    "req",
    "write_attempt",
    "write",
    "broken",
    "reconnected",
    "users",
    "spawned",
    "lag",
    "ledger_end",
]


@overload
def of_kind(records: Iterable[Record], kind: Literal["req"]) -> Iterator[Request]: ...
@overload
def of_kind(
    records: Iterable[Record], kind: Literal["write_attempt"]
) -> Iterator[WriteAttempt]: ...
@overload
def of_kind(records: Iterable[Record], kind: Literal["write"]) -> Iterator[Write]: ...
@overload
def of_kind(records: Iterable[Record], kind: Literal["broken"]) -> Iterator[Broken]: ...
@overload
def of_kind(records: Iterable[Record], kind: Literal["reconnected"]) -> Iterator[Reconnected]: ...
@overload
def of_kind(records: Iterable[Record], kind: Literal["users"]) -> Iterator[Users]: ...
@overload
def of_kind(records: Iterable[Record], kind: Literal["spawned"]) -> Iterator[Spawned]: ...
@overload
def of_kind(records: Iterable[Record], kind: Literal["lag"]) -> Iterator[Lag]: ...
@overload
def of_kind(records: Iterable[Record], kind: Literal["ledger_end"]) -> Iterator[LedgerEnd]: ...
def of_kind(records: Iterable[Record], kind: Kind) -> Iterator[Any]:
    """The records of one kind, typed."""
    return (cast(Any, r) for r in records if r.get("k") == kind)


def of_kinds(records: Iterable[Record], *kinds: Kind) -> Iterator[Record]:
    """The records of any of ``kinds``, in order."""
    return (r for r in records if r.get("k") in kinds)
