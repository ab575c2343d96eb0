"""Timers that look after people rather than rules: a young person's post nobody has
answered (staff are alerted, and it is counted), and a long chatting streak (a break
reminder). Driven by ``ChatCore.tick`` once a second; time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from chatserver.core.alerting import EXCERPT_CHARS
from chatserver.core.effects import Effect, Emit, Measure, Measurement
from chatserver.core.events import Alert, Message
from chatserver.core.ids import ParticipantId
from chatserver.core.notices import Notices
from chatserver.core.roles import Role
from chatserver.core.room import Room
from chatserver.core.sessions import Sessions
from chatserver.core.vocabulary import RoomKind
from chatserver.settings import RoomsConfig

__all__ = ["STREAK_GAP_MS", "Wellbeing"]

STREAK_GAP_MS: Final = 10 * 60 * 1000
"""A pause this long ends a chatting streak (break reminders)."""


@dataclass(slots=True)
class _Streak:
    start: int | None = None
    last_send: int = 0
    reminded: bool = False


class Wellbeing:
    """Unanswered posts (per room) and chatting streaks (per person)."""

    def __init__(self, config: RoomsConfig, sessions: Sessions, notices: Notices) -> None:
        self.config = config
        self.sessions = sessions
        self.notices = notices
        self._streaks: dict[ParticipantId, _Streak] = {}

    def sent(self, pid: ParticipantId, now_ms: int) -> None:
        """A participant's message got past the room's checks: their streak goes on."""
        streak = self._streaks.setdefault(pid, _Streak())
        if streak.start is None or now_ms - streak.last_send >= STREAK_GAP_MS:
            streak.start, streak.reminded = now_ms, False
        streak.last_send = now_ms

    def observed(self, room: Room, msg: Message, here: bool) -> None:
        """A message reached the room (from any node); ``here``: this node delivered it."""
        if msg.sender.role == Role.PARTICIPANT:
            if room.unanswered is None:
                room.unanswered, room.unanswered_here = msg, here
            elif room.unanswered.sender.id != msg.sender.id:
                room.unanswered = None  # someone else spoke: answered
        else:
            room.unanswered = None

    def unanswered(self, room: Room, now_ms: int) -> list[Effect]:
        """A young person's post that nobody answered for ``rooms.unanswered_s``."""
        msg = room.unanswered
        if msg is None or now_ms - msg.ts < self.config.unanswered_s * 1000:
            return []
        room.unanswered = None
        effects: list[Effect] = []
        if room.unanswered_here and room.kind == RoomKind.GROUP:
            # docs/ops/metrics.md § Unanswered posts: counted whether or not a
            # facilitator is there to be alerted (most of all when none is).
            effects.append(Measure(Measurement.UNANSWERED, room.profile))
        # To this node's staff in the room: each node that has some alerts its own, so
        # the alert comes once per person whichever node they are on.
        alert = Alert(room.id, "unanswered", msg.sender.id, msg.text[:EXCERPT_CHARS], (),
                      msg.seq)
        if room.has_facilitator():
            effects += [Emit(cid, alert) for cid in sorted(room.staff_conns())]
        return effects

    def reminders(self, now_ms: int) -> list[Effect]:
        """Break reminders, to this node's connections of whoever has chatted long."""
        effects: list[Effect] = []
        for pid, streak in self._streaks.items():
            if streak.start is None or streak.reminded:
                continue
            if now_ms - streak.last_send >= STREAK_GAP_MS:
                streak.start = None
            elif now_ms - streak.start >= self.config.break_after_min * 60_000:
                streak.reminded = True
                effects += [Emit(cid, self.notices.notice("break_reminder"))
                            for cid in self.sessions.sockets(pid)]
        return effects

    def forget(self, pid: ParticipantId) -> None:
        self._streaks.pop(pid, None)

    def remembers(self, pid: ParticipantId) -> bool:
        return pid in self._streaks
