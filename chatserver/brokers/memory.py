"""The embedded broker: one process, so publishing is a direct call.

It keeps the Redis broker's semantics (``Broker`` in ``ports.py``): per-room history
capped by seq, delivery once each in publish order, and a message published again (same
seq) is neither kept nor delivered again.

What one process does not need, and why (the only place it is said):

- ``ready``, ``ping``: there is no link to another node to lose, so always True.
- ``follow``, ``unfollow``: every envelope is published by this process and handed to
  its own handler, so every room is heard already: ``follow`` never newly hears one
  (False) and ``unfollow`` stops nothing.
- ``resubscribe``: there is no subscription that could go silent.
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Awaitable, Callable, Sequence

from chatserver.core.events import Message
from chatserver.core.ids import RoomId
from chatserver.ports import Envelope

__all__ = ["MemoryBroker"]


def _seq(message: Message) -> int:
    return message.seq


class MemoryBroker:
    shared = False
    """One node: nobody else to tell about room state."""

    def __init__(self, history: int = 200, node: str = "local") -> None:
        self.node = node
        self._cap = history
        self._history: dict[RoomId, list[Message]] = {}
        """Per room, the newest ``history`` messages, by seq."""
        self._floor: dict[RoomId, int] = {}
        """Per room, the newest seq evicted from history: a resume older is a gap."""
        self._handler: Callable[[Envelope], Awaitable[None] | None] | None = None

    async def start(self, on_envelope: Callable[[Envelope], Awaitable[None] | None]) -> None:
        self._handler = on_envelope

    async def close(self) -> None:
        self._handler = None

    def ready(self) -> bool:
        return True

    async def ping(self) -> bool:
        return True

    async def follow(self, room: RoomId) -> bool:
        return False

    async def unfollow(self, room: RoomId) -> None:
        return None

    async def resubscribe(self) -> None:
        return None

    async def publish(self, envelope: Envelope) -> None:
        """Hand the envelope to the handler, inline: delivered when this returns."""
        if self._handler is None:
            raise RuntimeError("broker is not started")
        if isinstance(envelope.event, Message) and not self._add(envelope.event):
            return  # already published: idempotent by seq, as the Redis script is
        result = self._handler(envelope)
        if inspect.isawaitable(result):
            await result

    def _add(self, message: Message) -> bool:
        """Into history by seq, as ``publish.lua`` does; False when it is not taken (a
        seq already there, or older than all of a full history)."""
        hist = self._history.setdefault(message.room, [])
        at = bisect.bisect_left(hist, message.seq, key=_seq)
        if at < len(hist) and hist[at].seq == message.seq:
            return False
        if len(hist) >= self._cap and hist and message.seq < hist[0].seq:
            return False
        hist.insert(at, message)
        if len(hist) > self._cap:
            evicted = hist.pop(0)
            self._floor[message.room] = max(self._floor.get(message.room, 0), evicted.seq)
        return True

    async def history(self, room: RoomId, after: int | None, limit: int
                      ) -> tuple[list[Message], bool]:
        hist = self._history.get(room, [])
        if after is None:
            return hist[-limit:], False
        missed = [m for m in hist if m.seq > after]
        # A hole: the client's point is older than what is kept (evicted messages).
        gap = after < self._floor.get(room, 0)
        return missed[-limit:] if gap else missed, gap

    async def redact(self, room: RoomId, seq: int) -> None:
        hist = self._history.get(room)
        if hist is not None:
            hist[:] = [m for m in hist if m.seq != seq]

    async def seed(self, room: RoomId, messages: Sequence[Message]) -> None:
        for m in messages:
            self._add(m)
