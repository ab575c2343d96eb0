"""Records ↔ JSON for the stores (orjson encodes dataclasses natively)."""

from __future__ import annotations

from typing import Any

import orjson

from chatserver.core.effects import AlertRecord, CaseRecord, HeldRecord, RoomRecord
from chatserver.core.events import Message, Person
from chatserver.core.ids import AlertId, CaseId, HeldId, MessageId, ParticipantId, RoomId

__all__ = ["alert_from", "case_from", "dumps", "held_from", "message_from", "room_from"]


def dumps(record: object) -> str:
    return orjson.dumps(record).decode()


def _person(d: dict[str, Any]) -> Person:
    return Person(ParticipantId(d["id"]), d["name"], d["role"])


def message_from(d: dict[str, Any]) -> Message:
    return Message(RoomId(d["room"]), d["seq"], MessageId(d["id"]), _person(d["sender"]),
                   d["text"], d["ts"])


def room_from(raw: str) -> RoomRecord:
    d = orjson.loads(raw)
    return RoomRecord(
        id=RoomId(d["id"]), title=d["title"], age_bands=tuple(d["age_bands"]),
        profile=d["profile"], kind=d["kind"], paused=d["paused"], slow_mode_s=d["slow_mode_s"],
        mutes=d["mutes"], removed=tuple(d["removed"]),
        require_facilitator=d["require_facilitator"], closed=d.get("closed", False))


def held_from(raw: str) -> HeldRecord:
    return _held(orjson.loads(raw))


def _held(d: dict[str, Any]) -> HeldRecord:
    return HeldRecord(HeldId(d["id"]), RoomId(d["room"]), _person(d["sender"]),
                      MessageId(d["msg_id"]), d["text"],
                      tuple((r[0], r[1]) for r in d["rules"]), d["ts"], d["approvable"])


def case_from(raw: str) -> CaseRecord:
    d = orjson.loads(raw)
    return CaseRecord(
        id=CaseId(d["id"]), room=RoomId(d["room"]), participant=ParticipantId(d["participant"]),
        participant_name=d["participant_name"], urgency=d["urgency"], status=d["status"],
        note=d["note"], ts=d["ts"], opened_by=d["opened_by"], counsellor=d["counsellor"],
        private_room=d["private_room"], outcome=d["outcome"],
        context=tuple(message_from(m) for m in d["context"]),
        # Cases stored before issue 16 have no held messages in their hand-over.
        held=tuple(_held(h) for h in d.get("held", ())))


def _maybe_person(d: dict[str, Any] | None) -> Person | None:
    return _person(d) if d is not None else None


def alert_from(raw: str) -> AlertRecord:
    d = orjson.loads(raw)
    return AlertRecord(
        id=AlertId(d["id"]), room=RoomId(d["room"]), kind=d["kind"],
        participant=ParticipantId(d["participant"]), name=d["name"], excerpt=d["excerpt"],
        rules=tuple((r[0], r[1]) for r in d["rules"]), ts=d["ts"], seq=d["seq"],
        held=HeldId(d["held"]) if d["held"] is not None else None,
        message=MessageId(d["message"]) if d["message"] is not None else None,
        status=d["status"], acknowledged_by=_maybe_person(d["acknowledged_by"]),
        acknowledged_ts=d["acknowledged_ts"], resolved_by=_maybe_person(d["resolved_by"]),
        resolved_ts=d["resolved_ts"], count=d.get("count", 1), last_ts=d.get("last_ts"))
