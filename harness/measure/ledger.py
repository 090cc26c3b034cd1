"""The write ledger: every acknowledged write, checked against the final primary.

A client that got an acknowledgement believes its write is durable. After
recovery the table on the final primary is read and every ledger entry is
classified; the rows nobody acknowledged are accounted for too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AckedWrite:
    id: str
    checksum: str
    t_ack_s: float


@dataclass
class WriteLedger:
    """Acknowledged writes by id, and the ids of every write attempted."""

    acked: dict[str, AckedWrite] = field(default_factory=dict)
    attempted: set[str] = field(default_factory=set)

    def attempt(self, write_id: str) -> None:
        self.attempted.add(write_id)

    def ack(self, write_id: str, checksum: str, t_ack_s: float) -> None:
        self.attempted.add(write_id)
        if write_id not in self.acked:
            self.acked[write_id] = AckedWrite(write_id, checksum, t_ack_s)

    def classify(
        self, rows: Iterable[tuple[str, str]], t_incident_s: float | None
    ) -> dict[str, object]:
        """Compare with ``rows`` = (id, checksum of content) read from the final primary.

        intact: acknowledged and present unchanged; altered: present with other
        content; lost: acknowledged and absent; phantom: present but never
        attempted by any client; unacknowledged_present: attempted, never
        acknowledged, yet committed (a reply lost in the outage); duplicate: ids
        present more than once. ``rpo_rows`` counts lost + altered among writes
        acknowledged before the incident, ``rpo_s`` the age of the oldest of
        them at the incident.
        """
        counts = Counter(row_id for row_id, _ in rows)
        present = {row_id: checksum for row_id, checksum in rows}
        intact = altered = lost = 0
        before_incident_bad: list[AckedWrite] = []
        lost_after = 0
        for write in self.acked.values():
            before = t_incident_s is None or write.t_ack_s < t_incident_s
            if write.id not in present:
                lost += 1
                if before:
                    before_incident_bad.append(write)
                else:
                    lost_after += 1
            elif present[write.id] != write.checksum:
                altered += 1
                if before:
                    before_incident_bad.append(write)
            else:
                intact += 1
        unacked_present = sum(1 for i in present if i in self.attempted and i not in self.acked)
        phantom = sum(1 for i in present if i not in self.attempted)
        rpo_s = 0.0
        if before_incident_bad and t_incident_s is not None:
            rpo_s = t_incident_s - min(w.t_ack_s for w in before_incident_bad)
        return {
            "acknowledged": len(self.acked),
            "attempted": len(self.attempted),
            "intact": intact,
            "altered": altered,
            "lost": lost,
            "lost_after_incident": lost_after,
            "phantom": phantom,
            "unacknowledged_present": unacked_present,
            "duplicate": sum(1 for c in counts.values() if c > 1),
            "rows_read": sum(counts.values()),
            "rpo_rows": len(before_incident_bad),
            "rpo_s": rpo_s,
        }
