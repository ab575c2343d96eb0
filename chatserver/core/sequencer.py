"""Each room's messages reach local members in ``seq`` order, once (pure, no I/O).

The store assigns ``seq`` in the same transaction as the message, so two nodes sending
into one room may publish 8 before 7. A node holds 8 back until 7 arrives. A hole that
stays open (the node that stored 7 died before publishing it) is filled from the
store by the shell after a grace period; PostgreSQL's row lock on the room's counter
means 8 committed implies 7 committed, so the store always has it (or it was redacted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatserver.core.events import Message
from chatserver.core.ids import RoomId

__all__ = ["Hole", "Sequencer"]


@dataclass(frozen=True, slots=True)
class Hole:
    """Seqs ``after < seq < before`` of ``room`` have not arrived."""

    room: RoomId
    after: int
    before: int


@dataclass(slots=True)
class _Room:
    next: int
    waiting: dict[int, Message] = field(default_factory=dict)
    since: int | None = None
    """When the current hole opened (ms)."""


class Sequencer:
    def __init__(self) -> None:
        self._rooms: dict[RoomId, _Room] = {}
        self._waiting = 0
        """Messages held back in every room: checked per message, so kept, not summed."""

    def start_at(self, room: RoomId, last_seq: int) -> None:
        """The last seq this node's members have (from the store at start; 0 for a new
        room). Never moves backwards."""
        known = self._rooms.get(room)
        if known is None:
            self._rooms[room] = _Room(last_seq + 1)
        elif known.next <= last_seq:
            known.next = last_seq + 1

    def offer(self, msg: Message, now_ms: int) -> list[Message]:
        """What may be delivered now, in order: nothing for a duplicate or an early one."""
        state = self._rooms.get(msg.room)
        if state is None:  # a room this node never heard of: nobody here to order for
            state = self._rooms[msg.room] = _Room(msg.seq)
        if msg.seq < state.next or msg.seq in state.waiting:
            return []
        if msg.seq > state.next:
            state.waiting[msg.seq] = msg
            self._waiting += 1
            if state.since is None:
                state.since = now_ms
            return []
        out = [msg]
        state.next += 1
        out += self._drain(state, now_ms)
        return out

    def _drain(self, state: _Room, now_ms: int) -> list[Message]:
        out = []
        while state.next in state.waiting:
            out.append(state.waiting.pop(state.next))
            self._waiting -= 1
            state.next += 1
        state.since = now_ms if state.waiting else None
        return out

    def holes(self, now_ms: int, grace_ms: int) -> list[Hole]:
        """Holes open for at least ``grace_ms``: time to ask the store."""
        return [Hole(room, s.next - 1, min(s.waiting))
                for room, s in self._rooms.items()
                if s.since is not None and now_ms - s.since >= grace_ms]

    def skip(self, hole: Hole, now_ms: int) -> list[Message]:
        """The store had no more of the hole (redacted): deliver what waits behind it."""
        state = self._rooms[hole.room]
        if state.next < hole.before:
            state.next = hole.before
        return self._drain(state, now_ms)

    def pending(self) -> int:
        return self._waiting
