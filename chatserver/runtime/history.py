"""What a socket is sent first: the welcome's history (or a resume's missed messages),
and a newly joined room's recent messages. Read from the broker's history, from the
store while the broker is down; live frames are held back meanwhile (``Delivery.hold``)
so nothing arrives before its history or twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from chatserver.config import LimitsConfig
from chatserver.core.effects import History, Welcome
from chatserver.core.events import Message, Welcome as WelcomeEvent
from chatserver.core.ids import RoomId
from chatserver.core.wire import encode
from chatserver.ports import Broker, BrokerError, Store
from chatserver.runtime.delivery import Delivery

__all__ = ["HistoryReader"]

Track = Callable[[RoomId, bool], Awaitable[None]]
"""``Cluster.track``: hear a room's traffic before its history is read."""


class HistoryReader:
    def __init__(self, limits: LimitsConfig, store: Store, broker: Broker,
                 delivery: Delivery, track: Track, now: Callable[[], int]) -> None:
        self.config = limits
        self.store = store
        self.broker = broker
        self.delivery = delivery
        self._track = track
        self.now = now

    async def welcome(self, w: Welcome) -> None:
        limit = self.config
        window_ms = limit.resume_window_s * 1000
        history: dict[RoomId, tuple[Message, ...]] = {}
        rooms = []
        now = self.now()
        self.delivery.hold(w.conn)
        for state in w.rooms:  # subscribed before reading history: nothing falls between
            await self._track(state.room, True)
        budget = limit.welcome_bytes  # issue 14: a small hello cannot fetch megabytes
        for state in w.rooms:
            after = w.resume.get(state.room)
            msgs, gap = await self.read(state.room, after, limit.welcome_history
                                        if after is None else limit.history)
            if after is not None and msgs and msgs[0].ts < now - window_ms:
                gap = True  # docs/protocol.md § Limits: resume window 10 minutes
                msgs = msgs[-limit.welcome_history:]
            kept = _newest_within(msgs, budget)
            budget -= sum(size for _, size in kept)
            if len(kept) < len(msgs) and after is not None:
                gap = True  # cut short by limits.welcome_bytes: the client reloads
            msgs = [m for m, _ in kept]
            history[state.room] = tuple(msgs)
            rooms.append(state if not gap else type(state)(
                state.room, state.title, state.paused, state.slow_mode_s, state.members,
                state.closed, gap=True))
        self.delivery.emit(w.conn, WelcomeEvent(w.you, tuple(rooms), history))
        self.delivery.release(w.conn, history)

    async def recent(self, effect: History) -> None:
        """A room just joined: its recent messages, before anything live."""
        self.delivery.hold(effect.conn)
        await self._track(effect.room, True)
        messages, _ = await self.read(effect.room, None, self.config.welcome_history)
        for m in messages:
            self.delivery.emit(effect.conn, m)
        self.delivery.release(effect.conn, {effect.room: messages})

    async def read(self, room: RoomId, after: int | None, limit: int
                   ) -> tuple[list[Message], bool]:
        """From the broker; from the store (the record) while the broker is down."""
        try:
            return await self.broker.history(room, after, limit)
        except BrokerError:
            if after is None:
                return await self.store.recent_messages(room, limit), False
            msgs = await self.store.messages_between(room, after, 2**62)
            return msgs[-limit:], len(msgs) > limit


def _newest_within(msgs: Sequence[Message], budget: int) -> list[tuple[Message, int]]:
    """The newest messages whose encoded frames fit in ``budget`` bytes, oldest first."""
    kept: list[tuple[Message, int]] = []
    for m in reversed(msgs):
        size = len(encode(m))
        if size > budget:
            break
        budget -= size
        kept.append((m, size))
    kept.reverse()
    return kept
