"""The envelope codec: what one node sends the others, as bytes, and back.

Envelopes are msgpack maps tagged with the sending node (never pickle); decoding is
strict and size-limited, and anything that is not exactly one typed envelope decodes to
``None`` for the caller to log and drop (CONTRIBUTING.md § Style, SECURITY.md F-05). Room
state records travel in the JSON form the stores keep them in (``stores/records.py``),
so there is one encoding of each record, not two that could drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgpack
import orjson

from chatserver.core.effects import (
    AlertRecord,
    Audience,
    CaseRecord,
    HeldDecided,
    HeldRecord,
    RoomRecord,
)
from chatserver.core.events import Encoded, Message, Person
from chatserver.core.ids import HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.sync import Sync, SyncRecord
from chatserver.core.wire import encode
from chatserver.ports import Envelope
from chatserver.stores.records import alert_from, case_from, dumps, held_from, room_from

__all__ = ["MAX_ENVELOPE_BYTES", "decode_envelope", "encode_envelope"]

MAX_ENVELOPE_BYTES: Final = 256 * 1024
"""A frame is at most 32 KiB; an envelope far beyond that is not ours."""


def _decided_from(raw: str) -> HeldDecided:
    return HeldDecided(HeldId(orjson.loads(raw)["id"]))


_RECORD_KINDS: Final[dict[str, Callable[[str], SyncRecord]]] = {
    "room": room_from, "held": held_from, "case": case_from, "decided": _decided_from,
    "alert": alert_from}


def _record_kind(record: SyncRecord) -> str:
    return {RoomRecord: "room", HeldRecord: "held", CaseRecord: "case",
            HeldDecided: "decided", AlertRecord: "alert"}[type(record)]


def _encode_sync(sync: Sync) -> list[object]:
    return [[[_record_kind(r), dumps(r)] for r in sync.records],
            [[room, [[p.id, p.name, p.role] for p in people]] for room, people in sync.presence],
            sync.full, list(sync.announce), sync.reload_rules]


def _decode_sync(body: object) -> Sync:
    if not (isinstance(body, list) and len(body) == 5):
        raise ValueError("bad sync")
    records, presence, full, announce, reload_rules = body
    strings = list(announce) + [x for _, people in presence for p in people for x in p]
    strings += [room for room, _ in presence] + [x for r in records for x in r]
    if not (isinstance(full, bool) and isinstance(reload_rules, bool)
            and all(isinstance(x, str) for x in strings)):
        raise ValueError("bad sync")
    return Sync(
        tuple(_RECORD_KINDS[kind](raw) for kind, raw in records),
        tuple((RoomId(room), tuple(Person(ParticipantId(i), n, Role(r)) for i, n, r in people))
              for room, people in presence),
        full, tuple(RoomId(r) for r in announce), reload_rules)


def encode_envelope(env: Envelope) -> bytes:
    """The envelope as one msgpack map (``decode_envelope`` gives it back)."""
    body: dict[str, object] = {"v": 1, "node": env.node, "room": env.room,
                               "aud": env.audience.value, "target": env.target,
                               "type": env.event.TYPE, "frame": b"", "msg": None}
    if isinstance(env.event, Sync):
        body["sync"] = _encode_sync(env.event)
    else:
        body["frame"] = encode(env.event)
    if isinstance(env.event, Message):
        m = env.event
        body["msg"] = [m.seq, m.id, m.sender.id, m.sender.name, m.sender.role, m.text, m.ts]
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode_envelope(data: bytes) -> Envelope | None:
    """The typed envelope, or None for anything that is not exactly one."""
    if len(data) > MAX_ENVELOPE_BYTES:
        return None
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True,
                               max_bin_len=MAX_ENVELOPE_BYTES, max_str_len=MAX_ENVELOPE_BYTES)
        if not isinstance(body, dict) or body.get("v") != 1:
            return None
        room, node, aud = body["room"], body["node"], Audience(body["aud"])
        target, frame, kind = body["target"], body["frame"], body["type"]
        if not (isinstance(room, str) and isinstance(node, str) and isinstance(frame, bytes)
                and isinstance(kind, str) and (target is None or isinstance(target, str))):
            return None
        msg = body["msg"]
        if kind == Sync.TYPE:
            event: Message | Encoded | Sync = _decode_sync(body["sync"])
        elif msg is not None:
            seq, mid, sid, name, role, text, ts = msg
            if not (isinstance(seq, int) and isinstance(ts, int) and
                    all(isinstance(x, str) for x in (mid, sid, name, role, text))):
                return None
            event = Message(
                RoomId(room), seq, MessageId(mid), Person(ParticipantId(sid), name, Role(role)),
                text, ts)
        else:
            event = Encoded(kind, frame)
        return Envelope(RoomId(room), event, aud,
                        ParticipantId(target) if target else None, node)
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException,
            orjson.JSONDecodeError):
        return None
