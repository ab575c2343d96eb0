"""Records ↔ JSON for the stores (orjson encodes dataclasses natively).

Decoding is typed by the JSON shape each record is kept in (the ``TypedDict``s below,
the fields of the dataclass as orjson writes them); the closed words in it (a role, a
case's status, a room's kind...) become their enums here, so nothing past the store
holds a bare string for them.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import orjson

from chatserver.core.commands import Urgency
from chatserver.core.effects import AlertRecord, CaseRecord, HeldRecord, RoomRecord
from chatserver.core.events import Message, Person
from chatserver.core.ids import AlertId, CaseId, HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.vocabulary import AlertStatus, CaseStatus, RoomKind

__all__ = ["MessageJson", "alert_from", "case_from", "dumps", "held_from", "message_from",
           "room_from"]


class PersonJson(TypedDict):
    id: str
    name: str
    role: str


class MessageJson(TypedDict):
    room: str
    seq: int
    id: str
    sender: PersonJson
    text: str
    ts: int


class _RoomJson(TypedDict):
    id: str
    title: str
    age_bands: list[str]
    profile: str
    kind: str
    paused: bool
    slow_mode_s: int
    mutes: dict[str, int | None]
    removed: list[str]
    require_facilitator: bool
    closed: NotRequired[bool]


class _HeldJson(TypedDict):
    id: str
    room: str
    sender: PersonJson
    msg_id: str
    text: str
    rules: list[list[str]]
    ts: int
    approvable: bool


class _CaseJson(TypedDict):
    id: str
    room: str
    participant: str
    participant_name: str
    urgency: str
    status: str
    note: str
    ts: int
    opened_by: str
    counsellor: str | None
    private_room: str | None
    outcome: str | None
    context: list[MessageJson]
    held: NotRequired[list[_HeldJson]]


class _AlertJson(TypedDict):
    id: str
    room: str
    kind: str
    participant: str
    name: str
    excerpt: str
    rules: list[list[str]]
    ts: int
    seq: int | None
    held: str | None
    message: str | None
    status: str
    acknowledged_by: PersonJson | None
    acknowledged_ts: int | None
    resolved_by: PersonJson | None
    resolved_ts: int | None
    count: NotRequired[int]
    last_ts: NotRequired[int | None]


def dumps(record: object) -> str:
    return orjson.dumps(record).decode()


def _person(d: PersonJson) -> Person:
    return Person(ParticipantId(d["id"]), d["name"], Role(d["role"]))


def message_from(d: MessageJson) -> Message:
    return Message(RoomId(d["room"]), d["seq"], MessageId(d["id"]), _person(d["sender"]),
                   d["text"], d["ts"])


def room_from(raw: str) -> RoomRecord:
    d: _RoomJson = orjson.loads(raw)
    return RoomRecord(
        id=RoomId(d["id"]), title=d["title"], age_bands=tuple(d["age_bands"]),
        profile=d["profile"], kind=RoomKind(d["kind"]), paused=d["paused"],
        slow_mode_s=d["slow_mode_s"], mutes=d["mutes"], removed=tuple(d["removed"]),
        require_facilitator=d["require_facilitator"], closed=d.get("closed", False))


def held_from(raw: str) -> HeldRecord:
    return _held(orjson.loads(raw))


def _held(d: _HeldJson) -> HeldRecord:
    return HeldRecord(HeldId(d["id"]), RoomId(d["room"]), _person(d["sender"]),
                      MessageId(d["msg_id"]), d["text"],
                      tuple((r[0], r[1]) for r in d["rules"]), d["ts"], d["approvable"])


def case_from(raw: str) -> CaseRecord:
    d: _CaseJson = orjson.loads(raw)
    return CaseRecord(
        id=CaseId(d["id"]), room=RoomId(d["room"]), participant=ParticipantId(d["participant"]),
        participant_name=d["participant_name"], urgency=Urgency(d["urgency"]),
        status=CaseStatus(d["status"]), note=d["note"], ts=d["ts"], opened_by=d["opened_by"],
        counsellor=_maybe_pid(d["counsellor"]), private_room=_maybe_room(d["private_room"]),
        outcome=d["outcome"], context=tuple(message_from(m) for m in d["context"]),
        # Cases stored before issue 16 have no held messages in their hand-over.
        held=tuple(_held(h) for h in d.get("held", ())))


def _maybe_pid(v: str | None) -> ParticipantId | None:
    return ParticipantId(v) if v is not None else None


def _maybe_room(v: str | None) -> RoomId | None:
    return RoomId(v) if v is not None else None


def _maybe_person(d: PersonJson | None) -> Person | None:
    return _person(d) if d is not None else None


def alert_from(raw: str) -> AlertRecord:
    d: _AlertJson = orjson.loads(raw)
    return AlertRecord(
        id=AlertId(d["id"]), room=RoomId(d["room"]), kind=d["kind"],
        participant=ParticipantId(d["participant"]), name=d["name"], excerpt=d["excerpt"],
        rules=tuple((r[0], r[1]) for r in d["rules"]), ts=d["ts"], seq=d["seq"],
        held=HeldId(d["held"]) if d["held"] is not None else None,
        message=MessageId(d["message"]) if d["message"] is not None else None,
        status=AlertStatus(d["status"]), acknowledged_by=_maybe_person(d["acknowledged_by"]),
        acknowledged_ts=d["acknowledged_ts"], resolved_by=_maybe_person(d["resolved_by"]),
        resolved_ts=d["resolved_ts"], count=d.get("count", 1), last_ts=d.get("last_ts"))
