"""RoomHarness: several sessions on one pure core (h11's ConnectionPair idea).

It plays the shell synchronously: ``Deliver`` gets the next seq, ``Publish`` goes to
``core.recipients``, ``Persist`` is recorded. Tests read what each connection got.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from chatserver.config import Config, RoomsConfig
from chatserver.core import commands as c
from chatserver.core.effects import (
    Audience,
    AuditEntry,
    Close,
    Deliver,
    Effect,
    Emit,
    History,
    Measure,
    OpsAlert,
    Persist,
    Publish,
    RoomRecord,
    Welcome,
)
from chatserver.core.events import Ack, AckStatus, Message
from chatserver.core.ids import ConnId, IdFactory, MessageId, ParticipantId, RoomId
from chatserver.core.node import ChatCore
from chatserver.core.roles import Role
from chatserver.core.session import Identity
from chatserver.core.vocabulary import RoomKind
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.pipeline import Moderator

Frame = dict[str, Any]


class RoomHarness:
    def __init__(self, rules: RuleSet, **rooms_config: Any) -> None:
        counter = iter(range(1, 10**9))
        self.core = ChatCore(
            Config(rooms=dataclasses.replace(RoomsConfig(require_facilitator=False),
                                             **rooms_config)),
            Moderator(rules), IdFactory(lambda n: f"{next(counter):0{n}d}"))
        self.core.add_room(RoomRecord(RoomId("r"), "Room", ("16-17",), "default", RoomKind.GROUP,
                                      False, 0, {}, (), bool(rooms_config.get(
                                          "require_facilitator", False))))
        self.got: dict[ConnId, list[Frame]] = defaultdict(list)
        self.closed: dict[ConnId, int] = {}
        self.audit: list[AuditEntry] = []
        self.stored: list[object] = []
        """Every other record written (rooms, held messages, cases, alerts), in order."""
        self.ops_alerts: list[str] = []
        self.measured: list[Measure] = []
        self.seq: dict[RoomId, int] = defaultdict(int)
        self._next = 0
        self.now = 0

    def connect(self, name: str, role: Role = Role.PARTICIPANT, now: int = 0) -> ConnId:
        self._next += 1
        conn = ConnId(self._next)
        ident = Identity(ParticipantId(f"id-{name}"), name, role,
                         RoomId("r") if role == Role.PARTICIPANT else None, "16-17")
        self.core.connect(conn)
        self.run(self.core.hello(conn, ident, {}, now))
        if role != Role.PARTICIPANT and role != Role.COUNSELLOR:
            self.send(conn, c.Join(RoomId("r")), now)
        return conn

    def send(self, conn: ConnId, command: c.Command, now: int = 0) -> None:
        self.now = now
        self.run(self.core.handle(conn, command, now))

    def say(self, conn: ConnId, text: str, msg_id: str, now: int = 0) -> Frame:
        self.send(conn, c.Send(RoomId("r"), MessageId(msg_id), text), now)
        return self.ack(conn, msg_id)

    def tick(self, now: int) -> None:
        self.run(self.core.tick(now))

    def run(self, effects: Sequence[Effect]) -> None:
        for e in effects:
            if isinstance(e, Emit):
                self.got[e.conn].append(e.event.to_wire())
            elif isinstance(e, Welcome):
                self.got[e.conn].append({"type": "welcome", "rooms": [r.room for r in e.rooms]})
            elif isinstance(e, Publish):
                for cid in self.core.recipients(e.room, e.event, e.audience, e.target):
                    self.got[cid].append(e.event.to_wire())
            elif isinstance(e, Persist):
                self.audit += [op for op in e.ops if isinstance(op, AuditEntry)]
                self.stored += [op for op in e.ops if not isinstance(op, AuditEntry)]
                if e.then is not None:
                    self.run(self.core.complete(e.then, self.now))
            elif isinstance(e, Deliver):
                self.seq[e.room] += 1
                msg = Message(e.room, self.seq[e.room], e.msg_id, e.sender, e.text, e.ts)
                self.audit.append(e.audit)
                self.core.observe(msg)
                for cid in self.core.recipients(e.room, msg, Audience.MEMBERS, None):
                    self.got[cid].append(msg.to_wire())
                if e.conn is not None and e.ref is not None:
                    ack = Ack(e.ref, AckStatus.SENT, seq=msg.seq, room=e.room)
                    self.got[e.conn].append(ack.to_wire())
                    self.run(self.core.complete_send(e.sender.id, e.msg_id, ack))
            elif isinstance(e, Close):
                self.closed[e.conn] = int(e.code)
            elif isinstance(e, History):
                pass  # the broker's history: transport tests cover it
            elif isinstance(e, OpsAlert):
                self.ops_alerts.append(e.kind)
            elif isinstance(e, Measure):
                self.measured.append(e)

    def of(self, conn: ConnId, kind: str) -> list[Frame]:
        return [f for f in self.got[conn] if f.get("type") == kind]

    def ack(self, conn: ConnId, ref: str) -> Frame:
        acks = [f for f in self.of(conn, "ack") if f["ref"] == ref]
        assert len(acks) >= 1, f"no ack for {ref}: {self.got[conn]}"
        return acks[-1]

    def texts(self, conn: ConnId) -> list[object]:
        return [f["text"] for f in self.of(conn, "message")]

    def notices(self, conn: ConnId) -> list[object]:
        return [f["kind"] for f in self.of(conn, "notice")]
