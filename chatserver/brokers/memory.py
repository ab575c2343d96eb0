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
from chatserver.ports import Envelope

__all__ = ["MemoryBroker"]


class MemoryBroker:
    def __init__(self, history: int = 200, node: str = "local") -> None:
        self.node = node
        self._cap = history
        self._history: dict[RoomId, deque[Message]] = {}
        self._floor: dict[RoomId, int] = {}
        self._handler: Callable[[Envelope], Awaitable[None] | None] | None = None

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
