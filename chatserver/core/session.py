"""A connection's life: await hello → ready → closed (fail closed in between)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from chatserver.core.events import Person
from chatserver.core.ids import ConnId, ParticipantId, RoomId
from chatserver.core.ratelimit import TokenBucket
from chatserver.core.roles import Role

__all__ = ["Conn", "Identity", "State"]


class State(Enum):
    AWAIT_HELLO = "await_hello"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token says the client is. Built only by ``transport/auth.py``."""

    id: ParticipantId
    name: str
    role: Role
    room: RoomId | None = None
    """A participant's token is scoped to the room it joined."""
    age_band: str | None = None
    version: int = 0
    """Staff: the account version the token was issued under (``ver``); refused once
    the account's version moves (logout, password reset, disable)."""

    def person(self) -> Person:
        """How others see them: in member lists, on their messages and alerts."""
        return Person(self.id, self.name, self.role)


@dataclass(slots=True)
class Conn:
    id: ConnId
    frames: TokenBucket
    state: State = State.AWAIT_HELLO
    identity: Identity | None = None
    rooms: set[RoomId] = field(default_factory=set)
    frame_strikes: int = 0
