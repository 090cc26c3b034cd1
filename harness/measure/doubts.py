"""Why a figure could be wrong: found while measuring, honoured when judging (an
objective on a figure in doubt is not measured)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

EVERY_METRIC = "*"

BOUNDS_KEY: Final = "bounds"
"""In ``metrics``: for a figure some of whose evidence the run could not observe, the
lowest and highest value it could really have (``[lo, hi]``, e.g. reconnect episodes cut
off by the end of the run counted as all failed, then all back). An objective met at one
end and missed at the other is not measured: the unobserved part decides it."""


@dataclass(frozen=True)
class Doubt:
    """A reason some figures could be wrong, and the figures it touches (dotted path
    prefixes into ``metrics``; ``*`` for all). An objective on a touched figure is not
    measured; a miss on any other figure stays a miss."""

    reason: str
    touches: tuple[str, ...] = (EVERY_METRIC,)
    lower_bounds: tuple[str, ...] = ()
    """Touched figures that stay lower bounds of the truth: the evidence in doubt could
    only have made them later (writes the ledger could not verify can only delay a
    recovery measured on them). A figure already over its ``max`` there is missed, doubt
    or not: a server that never came back is failed, not excused by the read that failed."""

    def touches_metric(self, path: str) -> bool:
        return _under(path, self.touches)

    def keeps_lower_bound(self, path: str) -> bool:
        return _under(path, self.lower_bounds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "touches": list(self.touches),
            "lower_bounds": list(self.lower_bounds),
        }


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(
        prefix == EVERY_METRIC or path == prefix or path.startswith(prefix + ".")
        for prefix in prefixes
    )
