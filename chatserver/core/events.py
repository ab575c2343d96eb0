"""Server → client events (docs/protocol.md § Server → client), typed.

Each event knows its wire shape (``to_wire``); ``core/wire.py`` encodes it once per
event, never once per recipient. Optional fields that are ``None`` are left out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from chatserver.core.commands import Urgency
from chatserver.core.ids import AlertId, CaseId, HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.vocabulary import AlertStatus, CaseStatus

__all__ = [
    "Ack",
    "AckStatus",
    "Alert",
    "AlertChange",
    "AlertUpdate",
    "CaseView",
    "ErrorEvent",
    "Event",
    "HeldEvent",
    "HeldView",
    "MemberView",
    "Message",
    "Notice",
    "Person",
    "Redacted",
    "Resource",
    "RoomState",
    "RuleRef",
    "Welcome",
    "Wire",
    "public_id",
]

Wire = dict[str, object]
"""A JSON-ready object: only ``wire.py`` and the ``to_wire`` methods build these."""


class AckStatus(StrEnum):
    """What became of a ``send`` (docs/protocol.md § ack)."""

    SENT = "sent"
    HELD = "held"
    """Waiting for a facilitator's decision; peers see it only once approved."""
    BLOCKED = "blocked"
    REJECTED = "rejected"
    """Refused before moderation (muted, paused, too fast...): ``code`` says why."""


class AlertChange(StrEnum):
    """What an ``alert_update`` tells every facilitator's list."""

    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    REPEATED = "repeated"
    """Happened again, counted into the open alert (issue 14)."""


def public_id(pid: str, role: Role) -> str:
    """The id a room shows for someone (issue 14): a participant's own id; for staff a
    stable pseudonym, never the internal account id the audit log and cases use (the
    member list showed young people staff account ids). One-way: nothing on the wire
    leads back to an account."""
    if role == Role.PARTICIPANT:
        return pid
    return "staff-" + hashlib.blake2s(pid.encode(), digest_size=6,
                                      person=b"chatstaf").hexdigest()


def _drop_none(d: Wire) -> Wire:
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Person:
    """What a peer may see of someone: display name and role only (invariant 5)."""

    id: ParticipantId
    name: str
    role: Role

    def to_wire(self) -> Wire:
        return {"id": self.id, "name": self.name, "role": self.role}


@dataclass(frozen=True, slots=True)
class MemberView:
    id: ParticipantId
    name: str
    role: Role
    muted: bool

    def to_wire(self) -> Wire:
        return {"id": public_id(self.id, self.role), "name": self.name, "role": self.role,
                "muted": self.muted}


@dataclass(frozen=True, slots=True)
class RuleRef:
    """A rule that matched, as staff see it (no span: spans are for ops tools)."""

    id: str
    category: str

    def to_wire(self) -> Wire:
        return {"id": self.id, "category": self.category}


@dataclass(frozen=True, slots=True)
class Resource:
    """A crisis or support service from config (``GET /api/resources``)."""

    name: str
    phone: str | None = None
    text: str | None = None
    url: str | None = None
    hours: str | None = None

    def to_wire(self) -> Wire:
        return _drop_none(
            {"name": self.name, "phone": self.phone, "text": self.text, "url": self.url,
             "hours": self.hours}
        )


class Event:
    """Base of server → client events."""

    TYPE: ClassVar[str] = ""

    def to_wire(self) -> Wire:
        raise NotImplementedError  # pragma: no cover - every subclass defines it


@dataclass(frozen=True, slots=True)
class Message(Event):
    TYPE: ClassVar[str] = "message"
    room: RoomId
    seq: int
    id: MessageId
    sender: Person
    text: str
    ts: int

    def to_wire(self) -> Wire:
        return {"type": "message", "room": self.room, "seq": self.seq, "id": self.id,
                "from": {"id": public_id(self.sender.id, self.sender.role),
                         "name": self.sender.name, "role": self.sender.role},
                "text": self.text, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class RoomState(Event):
    TYPE: ClassVar[str] = "room"
    room: RoomId
    title: str
    paused: bool
    slow_mode_s: int
    members: tuple[MemberView, ...]
    closed: bool = False
    gap: bool = False

    def to_wire(self) -> Wire:
        d: Wire = {"type": "room", "room": self.room, "title": self.title,
                   "paused": self.paused, "slow_mode_s": self.slow_mode_s,
                   "members": [m.to_wire() for m in self.members]}
        if self.closed:
            d["closed"] = True
        if self.gap:
            d["gap"] = True
        return d


@dataclass(frozen=True, slots=True)
class Welcome(Event):
    TYPE: ClassVar[str] = "welcome"
    you: Person
    rooms: tuple[RoomState, ...]
    history: Mapping[RoomId, tuple[Message, ...]] = field(default_factory=dict)

    def to_wire(self) -> Wire:
        rooms = []
        for r in self.rooms:
            d = r.to_wire()
            del d["type"]
            rooms.append(d)
        return {"type": "welcome", "you": self.you.to_wire(), "rooms": rooms,
                "history": {room: [m.to_wire() for m in msgs]
                            for room, msgs in self.history.items()}}


@dataclass(frozen=True, slots=True)
class Redacted(Event):
    TYPE: ClassVar[str] = "redact"
    room: RoomId
    seq: int

    def to_wire(self) -> Wire:
        return {"type": "redact", "room": self.room, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class Ack(Event):
    TYPE: ClassVar[str] = "ack"
    ref: str
    status: AckStatus
    seq: int | None = None
    text: str | None = None
    held: HeldId | None = None
    notice: str | None = None
    code: str | None = None
    room: RoomId | None = None

    def to_wire(self) -> Wire:
        return _drop_none({"type": "ack", "ref": self.ref, "status": self.status,
                           "seq": self.seq, "text": self.text, "held": self.held,
                           "notice": self.notice, "code": self.code, "room": self.room})


@dataclass(frozen=True, slots=True)
class Notice(Event):
    TYPE: ClassVar[str] = "notice"
    kind: str
    text: str
    room: RoomId | None = None
    resources: tuple[Resource, ...] | None = None
    case: CaseId | None = None
    held: HeldId | None = None
    """``held_rejected``: which of the young person's held messages (their ``ack held``)."""

    def to_wire(self) -> Wire:
        d = _drop_none({"type": "notice", "kind": self.kind, "text": self.text,
                        "room": self.room, "case": self.case, "held": self.held})
        if self.resources is not None:
            d["resources"] = [r.to_wire() for r in self.resources]
        return d


@dataclass(frozen=True, slots=True)
class HeldView:
    id: HeldId
    sender: Person
    text: str
    rules: tuple[RuleRef, ...]
    ts: int

    def to_wire(self) -> Wire:
        return {"id": self.id, "from": self.sender.to_wire(), "text": self.text,
                "rules": [r.to_wire() for r in self.rules], "ts": self.ts}


@dataclass(frozen=True, slots=True)
class HeldEvent(Event):
    TYPE: ClassVar[str] = "held"
    room: RoomId
    held: HeldView

    def to_wire(self) -> Wire:
        return {"type": "held", "room": self.room, "held": self.held.to_wire()}


@dataclass(frozen=True, slots=True)
class Alert(Event):
    TYPE: ClassVar[str] = "alert"
    room: RoomId
    kind: str
    participant: ParticipantId
    excerpt: str
    rules: tuple[RuleRef, ...] = ()
    seq: int | None = None
    held: HeldId | None = None
    id: AlertId | None = None
    """Stored alerts only (docs/protocol.md § Alerts): what ``alert_ack`` names."""
    ts: int | None = None
    name: str | None = None
    """The participant's display name."""
    message: MessageId | None = None
    status: AlertStatus | None = None
    acknowledged_by: Person | None = None
    acknowledged_ts: int | None = None
    backlog: bool = False
    """Raised before this connection signed in (sent with the welcome)."""
    count: int = 1
    """Occurrences coalesced into it (issue 14); on the wire only when over 1."""
    last_ts: int | None = None

    def to_wire(self) -> Wire:
        d = _drop_none({"type": "alert", "room": self.room, "kind": self.kind,
                        "participant": self.participant, "seq": self.seq,
                        "held": self.held, "excerpt": self.excerpt,
                        "rules": [r.to_wire() for r in self.rules], "id": self.id,
                        "ts": self.ts, "name": self.name, "message": self.message,
                        "status": self.status, "acknowledged_ts": self.acknowledged_ts,
                        "last_ts": self.last_ts})
        if self.count > 1:
            d["count"] = self.count
        if self.acknowledged_by is not None:
            d["acknowledged_by"] = self.acknowledged_by.to_wire()
        if self.backlog:
            d["backlog"] = True
        return d


@dataclass(frozen=True, slots=True)
class AlertUpdate(Event):
    """A stored alert was acknowledged or resolved, or happened again (coalesced):
    every facilitator's list follows."""

    TYPE: ClassVar[str] = "alert_update"
    room: RoomId
    alert: AlertId
    status: AlertChange
    by: Person | None
    """Who acknowledged or resolved it; None for ``repeated``."""
    ts: int
    count: int | None = None
    """``repeated``: the occurrences now coalesced into the alert."""

    def to_wire(self) -> Wire:
        d: Wire = {"type": "alert_update", "room": self.room, "alert": self.alert,
                   "status": self.status, "ts": self.ts}
        if self.by is not None:
            d["by"] = self.by.to_wire()
        if self.count is not None:
            d["count"] = self.count
        return d


@dataclass(frozen=True, slots=True)
class CaseView(Event):
    """A counselling case; as an event it is the ``case`` frame."""

    TYPE: ClassVar[str] = "case"
    id: CaseId
    room: RoomId
    participant: ParticipantId
    urgency: Urgency
    status: CaseStatus
    note: str
    ts: int
    counsellor: ParticipantId | None = None
    private_room: RoomId | None = None
    context: tuple[Message, ...] = ()
    name: str | None = None
    """The young person's display name (counsellors never need the internal id)."""
    held: tuple[HeldView, ...] = ()
    """Their messages still held when the case opened (docs/protocol.md § Cases)."""
    brief: bool = False
    """Only that the case left the queue (``scopes.sees_case``): id, room, urgency,
    status and ts, for counsellors who may not see it in full."""

    def brief_view(self) -> CaseView:
        return CaseView(self.id, self.room, ParticipantId(""), self.urgency, self.status, "",
                        self.ts, brief=True)

    def body(self) -> Wire:
        """The case object as ``GET /api/cases`` and the ``case`` frame show it."""
        if self.brief:
            return {"id": self.id, "room": self.room, "urgency": self.urgency,
                    "status": self.status, "ts": self.ts}
        d = _drop_none({"id": self.id, "room": self.room, "participant": self.participant,
                        "name": self.name, "urgency": self.urgency, "status": self.status,
                        "note": self.note, "ts": self.ts, "counsellor": self.counsellor,
                        "private_room": self.private_room})
        d["context"] = [m.to_wire() for m in self.context]
        d["held"] = [h.to_wire() for h in self.held]
        return d

    def to_wire(self) -> Wire:
        return {"type": "case", "case": self.body()}


@dataclass(frozen=True, slots=True)
class Encoded(Event):
    """An event that arrived already encoded from another node: fanned out as is."""

    kind: str
    frame: bytes

    def to_wire(self) -> Wire:
        import orjson
        value: Wire = orjson.loads(self.frame)
        return value


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    ref: str | None = None

    def to_wire(self) -> Wire:
        return _drop_none({"type": "error", "code": self.code, "message": self.message,
                           "ref": self.ref})
