"""The tool mix a run sends to the server it found: checked against the server's own
``tools/list`` before the load starts, so no client calls a tool the server does not have.

A mix the scenario wrote names tools on purpose: one the server does not list stops the
run before any load (the scenario is wrong for this server). The default mix is the
reference server's: for a user's server it keeps only the tools that server lists, and
says which it left out. tools/list and the ledger's write tool are always kept (a
missing write tool shows as failed writes, which the verdict judges).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

ALWAYS = ("tools/list", "create_note")
"""Operations that are not a tool of the server's own name (create_note is the ledger's
write, whatever its tool is called)."""


@dataclass(frozen=True)
class MixDecision:
    mix: dict[str, float]
    left_out: list[str] = field(default_factory=list)
    """Tools of the default mix the server does not list (dropped)."""
    unknown: list[str] = field(default_factory=list)
    """Tools the scenario's own mix names that the server does not list (the run stops)."""


def mix_for_server(
    mix: Mapping[str, float], *, explicit: bool, listed: Collection[str], write_tool: str
) -> MixDecision:
    """The mix to send, given the tools the server listed."""
    missing = [op for op in mix if op not in ALWAYS and op != write_tool and op not in listed]
    if explicit:
        return MixDecision(dict(mix), unknown=missing)
    kept = {op: weight for op, weight in mix.items() if op not in missing}
    return MixDecision(kept, left_out=missing)
