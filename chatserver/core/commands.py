"""Client → server commands, already validated (docs/protocol.md § Client → server).

``core/wire.py`` is the only place that builds them from untrusted input.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from chatserver.core.ids import AlertId, CaseId, HeldId, MessageId, ParticipantId, RoomId

__all__ = [
    "AlertAck", "AlertResolve", "Approve", "Claim", "CloseCase", "Command", "Escalate",
    "Hello", "Ignore", "Join", "Leave", "Mute", "Pause", "Redact", "Reject", "Remove",
    "Report", "RequestSupport", "Resume", "Send", "SlowMode", "Unignore", "Unmute", "Urgency",
]


class Urgency(StrEnum):
    """Case urgency, most urgent last so that ``rank`` sorts a queue."""

    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        """0 for the most urgent: a queue sorts by (rank, ts)."""
        return [*reversed(Urgency)].index(self)  # the declaration order, read backwards


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every command; ``ref`` is the client's id for error replies."""


@dataclass(frozen=True, slots=True)
class Hello(Command):
    token: str
    resume: tuple[tuple[RoomId, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Join(Command):
    room: RoomId


@dataclass(frozen=True, slots=True)
class Leave(Command):
    room: RoomId


@dataclass(frozen=True, slots=True)
class Send(Command):
    room: RoomId
    id: MessageId
    text: str


@dataclass(frozen=True, slots=True)
class Report(Command):
    room: RoomId
    seq: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ignore(Command):
    room: RoomId
    participant: ParticipantId


@dataclass(frozen=True, slots=True)
class Unignore(Command):
    room: RoomId
    participant: ParticipantId


@dataclass(frozen=True, slots=True)
class Mute(Command):
    room: RoomId
    participant: ParticipantId
    minutes: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Unmute(Command):
    room: RoomId
    participant: ParticipantId


@dataclass(frozen=True, slots=True)
class Pause(Command):
    room: RoomId
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Resume(Command):
    room: RoomId


@dataclass(frozen=True, slots=True)
class SlowMode(Command):
    room: RoomId
    seconds: int


@dataclass(frozen=True, slots=True)
class Remove(Command):
    room: RoomId
    participant: ParticipantId
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Escalate(Command):
    room: RoomId
    participant: ParticipantId
    urgency: Urgency
    note: str = ""


@dataclass(frozen=True, slots=True)
class Claim(Command):
    case: CaseId


@dataclass(frozen=True, slots=True)
class CloseCase(Command):
    case: CaseId
    outcome: str


@dataclass(frozen=True, slots=True)
class Redact(Command):
    room: RoomId
    seq: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Approve(Command):
    room: RoomId
    held: HeldId


@dataclass(frozen=True, slots=True)
class Reject(Command):
    room: RoomId
    held: HeldId
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AlertAck(Command):
    """A facilitator in the room takes an alert on (issue 16)."""

    room: RoomId
    alert: AlertId


@dataclass(frozen=True, slots=True)
class AlertResolve(Command):
    """A facilitator in the room closes an alert: it leaves the backlog."""

    room: RoomId
    alert: AlertId


@dataclass(frozen=True, slots=True)
class RequestSupport(Command):
    """A young person asks for a one-to-one with a counsellor (issue 16)."""

    room: RoomId
    note: str = ""
