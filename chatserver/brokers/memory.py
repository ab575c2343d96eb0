"""The embedded broker: one process, so publishing is a direct call.

It keeps the same semantics as the Redis broker: per-room capped history with
strictly increasing seq, at-most-once delivery in publish order, and a message
published again (same seq) is not delivered again.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from chatserver.core.events import Message
from chatserver.core.ids import RoomId
from chatserver.ports import Allowance, Envelope

__all__ = ["ATTEMPT_SWEEP", "MemoryBroker"]

ATTEMPT_SWEEP = 4096
"""Expired attempt counters are swept whenever this many more keys exist than after the
last sweep, so a flood of random usernames or addresses cannot grow memory for ever."""


class MemoryBroker:
    def __init__(self, history: int = 200, node: str = "local") -> None:
        self.node = node
        self._cap = history
        self._history: dict[RoomId, deque[Message]] = {}
        self._floor: dict[RoomId, int] = {}
        self._handler: Callable[[Envelope], Awaitable[None] | None] | None = None
        self._attempts: dict[str, list[int]] = {}
        """Attempt counters: key → [count, window end ms] (the Redis script's twin)."""
        self._sweep_at = ATTEMPT_SWEEP

    async def start(self, on_envelope: Callable[[Envelope], Awaitable[None] | None]) -> None:
        self._handler = on_envelope

    async def close(self) -> None:
        self._handler = None

    shared = False
    """One node: nobody else to tell about room state."""

    def ready(self) -> bool:
        return True

    async def ping(self) -> bool:
        return True

    # One node: the core's own counts are the whole picture.
    async def take_budget(self, participant: str, msg_id: str, limit: int, window_ms: int,
                          now_ms: int) -> bool:
        return True

    async def take_attempts(self, allowances: Sequence[Allowance], now_ms: int) -> bool:
        # One event loop, no await inside: the check and the count are one step.
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
        if len(self._attempts) >= self._sweep_at:
            self._attempts = {k: c for k, c in self._attempts.items() if c[1] > now_ms}
            self._sweep_at = len(self._attempts) + ATTEMPT_SWEEP
        return True

    async def settle_attempts(self, clear: Sequence[str], refund: Sequence[str]) -> None:
        for key in clear:
            self._attempts.pop(key, None)
        for key in refund:
            counter = self._attempts.get(key)
            if counter is not None and counter[0] > 0:
                counter[0] -= 1

    def attempt_keys(self) -> int:
        """How many attempt counters are held (tests: memory stays bounded)."""
        return len(self._attempts)

    async def sockets_elsewhere(self, participant: str, nodes: Sequence[str]) -> int:
        return 0

    async def count_socket(self, node: str, participant: str, delta: int,
                           expiry_ms: int) -> None:
        return None

    async def keep_sockets(self, node: str, expiry_ms: int) -> None:
        return None

    async def resubscribe(self) -> None:
        return None

    async def follow(self, room: RoomId) -> bool:
        return False  # one node hears every room

    async def unfollow(self, room: RoomId) -> None:
        return None

    async def publish(self, envelope: Envelope) -> None:
        if self._handler is None:
            raise RuntimeError("broker is not started")
        if isinstance(envelope.event, Message) and not self._append(envelope.event):
            return  # already published: idempotent by seq, as the Redis script is
        result = self._handler(envelope)
        if inspect.isawaitable(result):
            await result

    def _append(self, message: Message) -> bool:
        hist = self._history.setdefault(message.room, deque(maxlen=self._cap))
        if hist and message.seq <= hist[-1].seq:
            # One node publishes in seq order, so an older seq is a republish.
            return False
        if len(hist) == hist.maxlen:
            self._floor[message.room] = hist[0].seq
        hist.append(message)
        return True

    async def history(self, room: RoomId, after: int | None, limit: int
                      ) -> tuple[list[Message], bool]:
        hist = list(self._history.get(room, ()))
        if after is None:
            return hist[-limit:], False
        missed = [m for m in hist if m.seq > after]
        # A hole: the client's point is older than what is kept (evicted messages).
        gap = after < self._floor.get(room, 0)
        return missed[-limit:] if gap else missed, gap

    async def redact(self, room: RoomId, seq: int) -> None:
        hist = self._history.get(room)
        if hist is not None:
            kept = [m for m in hist if m.seq != seq]
            hist.clear()
            hist.extend(kept)

    async def seed(self, room: RoomId, messages: Sequence[Message]) -> None:
        hist = self._history.setdefault(room, deque(maxlen=self._cap))
        merged = {m.seq: m for m in (*messages, *hist)}
        hist.clear()
        hist.extend(merged[k] for k in sorted(merged))
