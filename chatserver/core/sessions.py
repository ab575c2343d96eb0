"""Who is connected and where: this node's connections, who is in which room, and each
person's sockets (the cap on sockets is per person, SEC-19). Entering and leaving
rooms, the peer's own ``ignore`` list, and the fan-out of a published event to local
connections all read this state, so they live here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from chatserver.core import commands as c
from chatserver.core.audit import AuditAction
from chatserver.core.conversations import Conversations
from chatserver.core.effects import (
    ALL_ROOMS,
    Audience,
    AuditEntry,
    Close,
    Effect,
    Emit,
    History,
    Persist,
    Publish,
    Welcome,
)
from chatserver.core.errors import ChatError, CloseCode, ErrorCode
from chatserver.core.events import CaseView, Encoded, ErrorEvent, Event, HeldEvent, Message
from chatserver.core.ids import ConnId, ParticipantId, RoomId
from chatserver.core.notices import Notices
from chatserver.core.ratelimit import TokenBucket
from chatserver.core.roles import Role
from chatserver.core.room import Member, Room, held_view
from chatserver.core.rooms import Rooms
from chatserver.core.scopes import sees_case
from chatserver.core.session import Conn, Identity, State
from chatserver.core.vocabulary import CaseStatus
from chatserver.settings import LimitsConfig

__all__ = ["Sessions"]


class Sessions:
    """Connections, rooms and membership of one node."""

    def __init__(self, rooms: Rooms, limits: LimitsConfig, notices: Notices,
                 conversations: Conversations) -> None:
        self.rooms = rooms
        self.limits = limits
        self.notices = notices
        self.conversations = conversations
        self.conns: dict[ConnId, Conn] = {}
        self._sockets: dict[ParticipantId, set[ConnId]] = {}
        """Each signed-in person's connections here, kept until the node forgets them."""

    # --------------------------------------------------------------- lifecycle
    def connect(self, conn_id: ConnId) -> None:
        self.conns[conn_id] = Conn(conn_id, TokenBucket(self.limits.frame_rate,
                                                        self.limits.frame_burst))

    def hello(self, conn_id: ConnId, ident: Identity, resume: Mapping[RoomId, int],
              now_ms: int, elsewhere: int, private: Iterable[RoomId]
              ) -> tuple[bool, list[Effect]]:
        """Admit a connection into the rooms it may be in: a participant's own room and
        the one-to-one ``private`` rooms of their claimed cases; staff the ``resume``
        rooms they may still enter.

        Returns:
            Whether it was admitted (else the effects refuse it), and the effects.
        """
        conn = self.conns.get(conn_id)
        if conn is None or conn.state is not State.AWAIT_HELLO:
            return False, [Close(conn_id, CloseCode.NO_HELLO, "hello was already given")]
        sockets = self._sockets.setdefault(ident.id, set())
        if len(sockets) + elsewhere >= self.limits.max_sockets_per_token:
            return False, [Emit(conn_id, ErrorEvent(ErrorCode.RATE_LIMITED,
                                                    "Too many connections for this session.")),
                           Close(conn_id, CloseCode.POLICY, "too many sockets")]
        rooms: list[RoomId] = []
        if ident.role == Role.PARTICIPANT:
            assert ident.room is not None
            room = self.rooms.by_id.get(ident.room)
            if room is None or room.closed:
                return False, [Close(conn_id, CloseCode.BAD_TOKEN, "room no longer exists")]
            if ident.id in room.removed:
                return False, [Close(conn_id, CloseCode.REMOVED, "removed from this room")]
            rooms.append(room.id)
            rooms += private
        else:
            for rid in resume:
                room = self.rooms.by_id.get(rid)
                if room is not None and self.rooms.may_enter(ident, room):
                    rooms.append(rid)
        conn.state, conn.identity = State.READY, ident
        sockets.add(conn_id)
        effects: list[Effect] = []
        for rid in rooms:
            effects += self.enter(conn, ident, self.rooms.by_id[rid], now_ms, announce=False)
        states = tuple(self.rooms.by_id[rid].state(now_ms) for rid in rooms)
        effects.insert(0, Welcome(conn_id, ident.person(), states,
                                  {r: s for r, s in resume.items() if r in rooms}))
        for rid in rooms:
            effects.append(Publish(rid, self.rooms.by_id[rid].state(now_ms)))
            effects += self._held_for(conn, ident, self.rooms.by_id[rid])
        return True, effects

    def disconnect(self, conn_id: ConnId, now_ms: int) -> list[Effect]:
        conn = self.conns.pop(conn_id, None)
        if conn is None or conn.identity is None:
            return []
        conn.state = State.CLOSED
        self._sockets.get(conn.identity.id, set()).discard(conn_id)
        effects: list[Effect] = []
        for rid in sorted(conn.rooms):
            room = self.rooms.by_id.get(rid)
            member = room.members.get(conn.identity.id) if room else None
            if room is None or member is None:
                continue
            member.conns.discard(conn_id)
            if not member.conns:
                room.depart(conn.identity.id, now_ms)
                effects.append(Publish(rid, room.state(now_ms)))
        return effects

    def sockets(self, pid: ParticipantId) -> list[ConnId]:
        """A person's connections here, in a stable order."""
        return sorted(self._sockets.get(pid, ()))

    def forget_departed(self, room: Room, now_ms: int) -> list[ParticipantId]:
        """Issue 14: the room forgets who left long enough ago. Returns who it forgot."""
        return room.forget_departed(now_ms, self.limits.departed_keep_s * 1000,
                                    self.limits.departed_kept)

    def in_use(self, pid: ParticipantId) -> bool:
        """A socket of theirs is open or a room still knows them: the node keeps what it
        holds about them (their send and report windows, their streak)."""
        return bool(self._sockets.get(pid)) or any(
            pid in r.members or pid in r.departed for r in self.rooms.by_id.values())

    def forget(self, pid: ParticipantId) -> None:
        self._sockets.pop(pid, None)

    def remembers(self, pid: ParticipantId) -> bool:
        return pid in self._sockets

    # ------------------------------------------------------------------ rooms
    def enter(self, conn: Conn, ident: Identity, room: Room, now_ms: int,
              announce: bool = True) -> list[Effect]:
        room.departed.pop(ident.id, None)  # back (a resume): known as before
        member = room.members.setdefault(ident.id, Member(ident.person()))
        member.conns.add(conn.id)
        conn.rooms.add(room.id)
        return [Publish(room.id, room.state(now_ms))] if announce else []

    def enter_all(self, pid: ParticipantId, room: Room, now_ms: int) -> bool:
        """A person's connections here that are not in ``room`` yet enter it (a case
        claimed for them). Returns whether they have any connection here."""
        here = False
        for cid in self.sockets(pid):
            their = self.conns.get(cid)
            if their is not None and their.identity is not None:
                if room.id not in their.rooms:
                    self.enter(their, their.identity, room, now_ms, announce=False)
                here = True
        return here

    def _held_for(self, conn: Conn, ident: Identity, room: Room) -> list[Effect]:
        if ident.role not in (Role.FACILITATOR, Role.OPS):
            return []
        return [Emit(conn.id, HeldEvent(room.id, held_view(h)))
                for h in sorted(room.held.values(), key=lambda h: h.ts)]

    def join(self, conn: Conn, ident: Identity, cmd: c.Join, now_ms: int) -> list[Effect]:
        room = self.rooms.by_id.get(cmd.room)
        if room is None or not self.rooms.may_enter(ident, room):
            raise ChatError(ErrorCode.FORBIDDEN, "You can't join that room.")
        was_paused = room.paused_for_participants()
        effects = self.enter(conn, ident, room, now_ms)
        # The room's state, then what was said recently, so staff arrive in context.
        effects[:0] = [Emit(conn.id, room.state(now_ms)), History(conn.id, room.id)]
        effects += self._held_for(conn, ident, room)
        if was_paused and not room.paused_for_participants():
            effects.append(Persist((AuditEntry(now_ms, room.id, ident.id, AuditAction.JOIN),)))
        return effects

    def leave(self, conn: Conn, ident: Identity, cmd: c.Leave, now_ms: int) -> list[Effect]:
        room = self.rooms.of(conn, cmd.room)
        conn.rooms.discard(room.id)
        member = room.members.get(ident.id)
        if member is not None:
            member.conns.discard(conn.id)
            if not member.conns:
                room.depart(ident.id, now_ms)
                self.conversations.forget(ident.id)  # nothing of a sender who left is kept
        return [Publish(room.id, room.state(now_ms))]

    def evict(self, room: Room, pid: ParticipantId) -> list[Effect]:
        """Take a removed participant's local connections out of the room. Told directly
        on those connections: by the time a published event is fanned out, they are no
        longer members."""
        member = room.members.pop(pid, None)
        room.departed.pop(pid, None)
        self.conversations.forget(pid)
        if member is None:
            return []
        notice = self.notices.notice("removed", room.id)
        effects: list[Effect] = [Emit(cid, notice) for cid in sorted(member.conns)]
        for cid in sorted(member.conns):
            their = self.conns.get(cid)
            if their is not None:
                their.rooms.discard(room.id)
                if not their.rooms:
                    effects.append(Close(cid, CloseCode.REMOVED, "removed from the room"))
        return effects

    def close_locally(self, room: Room, now_ms: int) -> list[Effect]:
        """A closed case room: its local members are shown it closed and leave it."""
        closed = room.state(now_ms)
        effects: list[Effect] = []
        for member in room.members.values():
            for cid in sorted(member.conns):
                effects.append(Emit(cid, closed))
                their = self.conns.get(cid)
                if their is not None:
                    their.rooms.discard(room.id)
        room.members.clear()
        room.remote.clear()
        room.departed.clear()
        return effects

    # --------------------------------------------------------- peer safety
    def ignore(self, conn: Conn, ident: Identity, cmd: c.Ignore, now_ms: int) -> list[Effect]:
        room = self.rooms.of(conn, cmd.room)
        target = self.rooms.member(room, cmd.participant)
        if target.role != Role.PARTICIPANT:
            raise ChatError(ErrorCode.FORBIDDEN, "Staff can't be ignored.")
        room.ignores.setdefault(ident.id, set()).add(cmd.participant)
        return [Emit(conn.id, room.state(now_ms))]

    def unignore(self, conn: Conn, ident: Identity, cmd: c.Unignore, now_ms: int
                 ) -> list[Effect]:
        room = self.rooms.of(conn, cmd.room)
        room.ignores.get(ident.id, set()).discard(cmd.participant)
        return [Emit(conn.id, room.state(now_ms))]

    # -------------------------------------------------------------- fan-out
    def recipients(self, room_id: RoomId, event: Event, audience: Audience,
                   target: ParticipantId | None) -> list[ConnId]:
        """Local connections that get a published event (encoded once for all of them)."""
        if room_id == ALL_ROOMS:
            kind = event.kind if isinstance(event, Encoded) else event.TYPE
            if kind == CaseView.TYPE and (target is not None or
                                          audience == Audience.CASE_TAKEN):
                # A claimed or closed case (``Cases.publish``): the one rule decides who
                # sees it in full; the other counsellors get the brief.
                full = audience == Audience.COUNSELLORS
                return [cid for cid, conn in self.conns.items()
                        if (i := conn.identity) is not None and
                        i.role in (Role.COUNSELLOR, Role.OPS) and
                        sees_case(i.role, i.id, CaseStatus.CLAIMED, target) == full]
            want = {Audience.COUNSELLORS: {Role.COUNSELLOR, Role.OPS},
                    Audience.FACILITATORS: {Role.FACILITATOR, Role.OPS}}.get(audience, set())
            return [cid for cid, conn in self.conns.items()
                    if conn.identity is not None and conn.identity.role in want]
        room = self.rooms.by_id.get(room_id)
        if room is None:
            return []
        # Per published event: no sorting, fan-out order does not matter.
        if audience == Audience.STAFF:
            return list(room.staff_conns())
        if audience == Audience.PARTICIPANT:
            member = room.members.get(target) if target else None
            return list(member.conns) if member else []
        if isinstance(event, Message):
            sender = event.sender.id
            return [cid for pid, m in room.members.items()
                    if sender not in room.ignores.get(pid, ()) for cid in m.conns]
        return list(room.conns())
