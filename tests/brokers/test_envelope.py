"""The envelope codec (``brokers/envelope.py``): every kind of envelope goes there and
back unchanged; anything that is not exactly one envelope decodes to None."""

from __future__ import annotations

import msgpack

from chatserver.brokers.envelope import MAX_ENVELOPE_BYTES, decode_envelope, encode_envelope
from chatserver.core.commands import Urgency
from chatserver.core.effects import (
    ALL_ROOMS,
    AlertRecord,
    Audience,
    CaseRecord,
    HeldDecided,
    HeldRecord,
    RoomRecord,
)
from chatserver.core.events import Encoded, Message, Notice, Person
from chatserver.core.ids import AlertId, CaseId, HeldId, MessageId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.sync import Sync
from chatserver.core.vocabulary import AlertStatus, CaseStatus, RoomKind
from chatserver.ports import Envelope

R = RoomId("room-1")
ALEX = Person(ParticipantId("p_alex"), "Alex", Role.PARTICIPANT)


def msg(seq: int, room: RoomId = R) -> Message:
    return Message(room, seq, MessageId(f"m{seq}"), ALEX, f"hello {seq}", 1000 + seq)


def test_envelopes_decode_strictly() -> None:
    env = Envelope(R, msg(1), Audience.MEMBERS, None, "n1")
    assert decode_envelope(encode_envelope(env)) == env
    held = HeldRecord(HeldId("h1"), R, ALEX, MessageId("m1"), "how old are you",
                      (("grooming.age", "grooming"),), 5)
    case = CaseRecord(CaseId("c1"), R, ALEX.id, "Alex", Urgency.URGENT, CaseStatus.CLAIMED,
                      "note", 6, "u_f",
                      ParticipantId("u_c"), RoomId("c1-room"), None, (msg(1),))
    room = RoomRecord(R, "Room", ("16-17",), "default", RoomKind.GROUP, True, 30, {"p_x": 99},
                      ("p_y",), True)
    alert = AlertRecord(AlertId("al_1"), R, "risk", ALEX.id, "Alex", "excerpt",
                        (("risk.intent", "risk"),), 7, 3, HeldId("h1"), MessageId("m1"),
                        AlertStatus.ACKNOWLEDGED, Person(ParticipantId("u_f"), "Sam",
                                                         Role.FACILITATOR), 8)
    sync = Sync((room, held, HeldDecided(HeldId("h1")), case, alert), ((R, (ALEX,)),), True,
                (R,), True)
    env = Envelope(ALL_ROOMS, sync, Audience.MEMBERS, None, "n2")
    assert decode_envelope(encode_envelope(env)) == env
    other = decode_envelope(encode_envelope(Envelope(R, Notice("x", "y"), Audience.STAFF)))
    assert other is not None and isinstance(other.event, Encoded)
    for bad in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"v": 2}),
                msgpack.packb({"v": 1, "room": 1, "node": "n", "aud": "members",
                               "target": None, "type": "x", "frame": b"{}", "msg": None}),
                msgpack.packb({"v": 1, "room": "r", "node": "n", "aud": "everyone",
                               "target": None, "type": "x", "frame": b"{}", "msg": None}),
                b"\x80" * 300_000,
                msgpack.packb({"v": 1, "room": "r", "node": "n", "aud": "members",
                               "target": None, "type": "sync", "frame": b"", "msg": None,
                               "sync": [[["room", "{}"]], [], False, [], False]}),
                msgpack.packb({"v": 1, "room": "r", "node": "n", "aud": "members",
                               "target": None, "type": "sync", "frame": b"", "msg": None,
                               "sync": [[], [["r", [[1, "n", "participant"]]]], True, [], False]}),
                msgpack.packb({"v": 1, "room": "r", "node": "n", "aud": "members",
                               "target": None, "type": "sync", "frame": b"", "msg": None,
                               "sync": [[], [], False, [], "yes"]})):
        assert decode_envelope(bad) is None



def test_an_envelope_over_the_size_limit_is_dropped_even_when_well_formed() -> None:
    big = Envelope(R, Message(R, 1, MessageId("m1"), ALEX, "x" * MAX_ENVELOPE_BYTES, 1),
                   Audience.MEMBERS, None, "n1")
    data = encode_envelope(big)
    assert len(data) > MAX_ENVELOPE_BYTES and decode_envelope(data) is None
