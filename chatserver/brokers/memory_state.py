"""The counts of one process (``ClusterState`` in ``ports.py``), the Redis scripts' twins.

One event loop and no ``await`` inside a call: each check and its count are one step,
as each Lua script is in Redis. Windows run in the caller's clock.

What one process does not need, and why (the only place it is said): ``keep_sockets``
renews nothing, and socket counts never expire, because here the node is the process,
so its counts end exactly when it does. The server asks for the send budget and for
sockets elsewhere only in a cluster (``Broker.shared``): alone, the core's own window and
socket count are the whole picture. They are counted here all the same, so that both
backends keep one contract (``tests/brokers/test_contract.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from chatserver.ports import Allowance

__all__ = ["SWEEP_EVERY", "CountStats", "MemoryClusterState"]

SWEEP_EVERY: Final = 4096
"""Expired windows are swept whenever this many more keys exist than after the last
sweep, so a flood of random usernames, addresses or participants cannot grow memory
for ever (Redis expires its keys itself)."""


@dataclass(frozen=True, slots=True)
class CountStats:
    """How many windows are held now (memory stays bounded)."""

    attempt_windows: int
    send_windows: int


class MemoryClusterState:
    def __init__(self) -> None:
        self._attempts: dict[str, list[int]] = {}
        """Attempt counters: key → [count, window end ms] (``attempts.lua``'s hash)."""
        self._attempts_sweep = SWEEP_EVERY
        self._sends: dict[str, deque[tuple[int, str]]] = {}
        """Send windows: participant → (ms, message id), oldest first (``budget.lua``)."""
        self._sends_sweep = SWEEP_EVERY
        self._sockets: dict[str, dict[str, int]] = {}
        """Open sockets: node → participant → count."""

    async def close(self) -> None:
        return None

    def statistics(self) -> CountStats:
        return CountStats(len(self._attempts), len(self._sends))

    async def take_attempts(self, allowances: Sequence[Allowance], now_ms: int) -> bool:
        counters = [self._attempts.get(a.key) for a in allowances]
        live = [c is not None and c[1] > now_ms for c in counters]
        for a, c, alive in zip(allowances, counters, live, strict=True):
            if (c[0] if c is not None and alive else 0) >= a.limit:
                return False
        for a, c, alive in zip(allowances, counters, live, strict=True):
            if c is not None and alive:
                c[0] += 1
            else:
                self._attempts[a.key] = [1, now_ms + a.window_ms]
        if len(self._attempts) >= self._attempts_sweep:
            self._attempts = {k: c for k, c in self._attempts.items() if c[1] > now_ms}
            self._attempts_sweep = len(self._attempts) + SWEEP_EVERY
        return True

    async def settle_attempts(self, clear: Sequence[str], refund: Sequence[str]) -> None:
        for key in clear:
            self._attempts.pop(key, None)
        for key in refund:
            counter = self._attempts.get(key)
            if counter is not None and counter[0] > 0:
                counter[0] -= 1

    async def take_budget(self, participant: str, msg_id: str, limit: int, window_ms: int,
                          now_ms: int) -> bool:
        sent = self._sends.setdefault(participant, deque())
        while sent and sent[0][0] <= now_ms - window_ms:
            sent.popleft()
        if any(mid == msg_id for _, mid in sent):
            return True  # a resend: the core answers it with its first outcome
        if len(sent) >= limit:
            return False
        sent.append((now_ms, msg_id))
        if len(self._sends) >= self._sends_sweep:
            self._sends = {p: s for p, s in self._sends.items()
                           if s and s[-1][0] > now_ms - window_ms}
            self._sends_sweep = len(self._sends) + SWEEP_EVERY
        return True

    async def count_socket(self, node: str, participant: str, delta: int,
                           expiry_ms: int) -> None:
        counts = self._sockets.setdefault(node, {})
        left = counts.get(participant, 0) + delta
        if left > 0:
            counts[participant] = left
        else:
            counts.pop(participant, None)

    async def keep_sockets(self, node: str, expiry_ms: int) -> None:
        return None

    async def sockets_elsewhere(self, participant: str, nodes: Sequence[str]) -> int:
        return sum(self._sockets.get(node, {}).get(participant, 0) for node in nodes)
