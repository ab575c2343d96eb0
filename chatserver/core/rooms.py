"""The rooms this node serves, and the one way a connection reaches one (SEC-10: a
room it is not in and a room that does not exist look the same)."""

from __future__ import annotations

from chatserver.core.effects import RoomRecord
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.events import Person
from chatserver.core.ids import ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.room import Room
from chatserver.core.session import Conn, Identity
from chatserver.core.vocabulary import RoomKind

__all__ = ["Rooms"]


class Rooms:
    """Every room by id: group rooms from the store, one-to-one rooms of claimed cases."""

    def __init__(self) -> None:
        self.by_id: dict[RoomId, Room] = {}

    def add(self, record: RoomRecord) -> Room:
        room = Room.from_record(record)
        self.by_id[room.id] = room
        return room

    def profile(self, rid: RoomId) -> str:
        """A room's profile, for a measurement's label."""
        room = self.by_id.get(rid)
        return room.profile if room is not None else "unknown"

    def of(self, conn: Conn, rid: RoomId) -> Room:
        """The room, if this connection is in it. Not being in it and the room not
        existing look the same from outside (SEC-10: nothing leaks).

        Raises:
            ChatError: ``forbidden``.
        """
        room = self.by_id.get(rid)
        if room is None or rid not in conn.rooms:
            raise ChatError(ErrorCode.FORBIDDEN, "You're not in that room.")
        return room

    @staticmethod
    def member(room: Room, pid: ParticipantId) -> Person:
        """A member connected here or on another node (staff act on either alike)."""
        person = room.person(pid)
        if person is None:
            raise ChatError(ErrorCode.NOT_FOUND, "No such participant in this room.")
        return person

    @classmethod
    def participant(cls, room: Room, pid: ParticipantId) -> Person:
        """A member who is a participant (staff are not muted, removed or escalated)."""
        person = cls.member(room, pid)
        if person.role != Role.PARTICIPANT:
            raise ChatError(ErrorCode.FORBIDDEN, "That's a member of staff.")
        return person

    @staticmethod
    def may_enter(ident: Identity, room: Room) -> bool:
        """Whether staff may enter (and see the alerts of) a room."""
        if room.closed:
            return False
        if room.kind == RoomKind.CASE:
            return ident.role == Role.COUNSELLOR and ident.id in room.allowed
        return ident.role in (Role.FACILITATOR, Role.OPS)
