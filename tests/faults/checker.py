"""A Jepsen-style checker for one room (docs/architecture.md § What "no message lost" means).

Pure: feed it what the clients saw; it counts lost, duplicated, unexpected, reordered
and recovered, in the categories of Jepsen's total-queue checker.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["ClientView", "Report", "check"]


@dataclass
class ClientView:
    """One member's history: seqs received (live or by resume), in arrival order, and
    whether the server ever answered it `gap: true` (it then reloads; holes allowed)."""

    received: list[tuple[int, str]] = field(default_factory=list)  # (seq, message id)
    gap: bool = False


@dataclass(frozen=True)
class Report:
    lost: int
    duplicated: int
    unexpected: int
    reordered: int
    recovered: int

    @property
    def ok(self) -> bool:
        return self.lost == self.duplicated == self.unexpected == self.reordered == 0


def check(acked: Mapping[str, int], in_doubt: Iterable[str], final_history: Mapping[int, str],
          members: Mapping[str, ClientView], forbidden: Iterable[str] = ()) -> Report:
    """Args:
        acked: message id → seq, for every send answered ``ack sent``.
        in_doubt: ids of sends that got no answer (the node died).
        final_history: seq → message id, as the store holds the room at the end.
        members: each member who stayed in the room, what they received.
        forbidden: ids of messages that were blocked or held and never approved.
    """
    forbidden_ids = set(forbidden)
    seq_of_id: dict[str, int] = {}
    lost = duplicated = unexpected = reordered = 0
    # Durability: every acked send is in the final history exactly once, with its seq.
    by_id = Counter(final_history.values())
    for mid, seq in acked.items():
        if final_history.get(seq) != mid:
            lost += 1
        seq_of_id[mid] = seq
    duplicated += sum(n - 1 for n in by_id.values() if n > 1)
    unexpected += sum(1 for mid in final_history.values()
                      if mid in forbidden_ids or (mid not in acked and mid not in in_doubt))
    recovered = sum(1 for mid in in_doubt if mid in by_id)
    for view in members.values():
        seqs = [s for s, _ in view.received]
        seen = Counter(seqs)
        duplicated += sum(n - 1 for n in seen.values() if n > 1)
        reordered += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
        unexpected += sum(1 for s, mid in view.received
                          if mid in forbidden_ids or final_history.get(s) not in (mid, None))
        if not view.gap:
            # Delivery to members who stay: every acked seq after the first they saw.
            first = min(seqs, default=None)
            if first is not None:
                lost += sum(1 for s in acked.values() if s > first and s not in seen)
    return Report(lost, duplicated, unexpected, reordered, recovered)
