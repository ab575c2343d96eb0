"""Cases: a young person handed to a counsellor. Opened by a facilitator's
``escalate`` or the young person's own ``request_support``, claimed by one counsellor
(the write decides: two claims on two nodes, one wins), talked through in a one-to-one
room, and closed with an outcome. Unclaimed emergencies are alerted again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from chatserver.core import commands as c
from chatserver.core.alerting import EXCERPT_CHARS, Alerting
from chatserver.core.audit import AuditAction
from chatserver.core.effects import (
    ALL_ROOMS,
    Audience,
    AuditEntry,
    CaseRecord,
    Effect,
    Emit,
    Measure,
    Measurement,
    OpsAlert,
    Persist,
    Publish,
    StoreOp,
    elapsed_s,
)
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.events import Alert, CaseView, Notice, Person
from chatserver.core.ids import CaseId, ConnId, IdFactory, ParticipantId, RoomId
from chatserver.core.notices import Notices
from chatserver.core.roles import Role
from chatserver.core.room import Room, held_view
from chatserver.core.rooms import Rooms
from chatserver.core.scopes import sees_case
from chatserver.core.screening import Screening
from chatserver.core.session import Conn, Identity
from chatserver.core.sessions import Sessions
from chatserver.core.tokens import ClaimWritten
from chatserver.core.vocabulary import CaseStatus, RoomKind
from chatserver.settings import Config

__all__ = ["Cases", "case_view"]

def case_view(k: CaseRecord) -> CaseView:
    """A case as a counsellor (or ops) sees it in full."""
    return CaseView(k.id, k.room, k.participant, k.urgency, k.status, k.note, k.ts,
                    k.counsellor, k.private_room, k.context, k.participant_name,
                    tuple(held_view(h) for h in k.held))


class Cases:
    """Every case of the cluster (sync records keep each node's copy whole)."""

    def __init__(self, config: Config, rooms: Rooms, sessions: Sessions, alerting: Alerting,
                 screening: Screening, notices: Notices, ids: IdFactory) -> None:
        self.config = config
        self.rooms = rooms
        self.sessions = sessions
        self.alerting = alerting
        self.screening = screening
        self.notices = notices
        self.ids = ids
        self.by_id: dict[CaseId, CaseRecord] = {}
        self._alerted_emergencies: set[CaseId] = set()

    def load(self, cases: Iterable[CaseRecord]) -> None:
        """Cases from the store: a claimed one's room admits its two people again."""
        for case in cases:
            self.by_id[case.id] = case
            if case.status == CaseStatus.CLAIMED and case.private_room and case.counsellor:
                room = self.rooms.by_id.get(case.private_room)
                if room is not None:
                    room.case = case.id
                    room.allowed = {case.participant, case.counsellor}

    def queue(self) -> list[CaseRecord]:
        """Cases not closed, most urgent first, then oldest first."""
        return sorted((k for k in self.by_id.values() if k.status != CaseStatus.CLOSED),
                      key=lambda k: (k.urgency.rank, k.ts))

    def private_rooms(self, pid: ParticipantId) -> list[RoomId]:
        """The one-to-one rooms of a young person's claimed cases."""
        return [k.private_room for k in self.by_id.values()
                if k.participant == pid and k.status == CaseStatus.CLAIMED and k.private_room]

    def queue_for(self, conn_id: ConnId, ident: Identity) -> list[Effect]:
        """The queue a counsellor (or ops) gets at sign-in, as ``scopes`` allows."""
        if ident.role not in (Role.COUNSELLOR, Role.OPS):
            return []
        return [Emit(conn_id, case_view(k)) for k in self.queue()
                if sees_case(ident.role, ident.id, k.status, k.counsellor)]

    def _publish(self, case: CaseRecord) -> list[Effect]:
        """A case that left the queue: in full to its counsellor (and ops), as a brief
        "taken" to every other counsellor (``scopes.sees_case``: one rule on every path).
        The counsellor travels as the envelope's ``target``, so every node applies the
        same rule to the already-encoded frame."""
        view = case_view(case)
        return [Publish(ALL_ROOMS, view, Audience.COUNSELLORS, case.counsellor),
                Publish(ALL_ROOMS, view.brief_view(), Audience.CASE_TAKEN, case.counsellor)]

    def _open(self, room: Room, person: Person, urgency: c.Urgency, note: str,
              opened_by: ParticipantId, now_ms: int) -> CaseRecord:
        context = tuple(list(room.recent)[-self.config.rooms.case_context:])
        # Issue 16: a disclosure still waiting in the review queue is part of what the
        # counsellor must know; the room's recent messages alone would leave it out.
        held = tuple(sorted((h for h in room.held.values() if h.sender.id == person.id),
                            key=lambda h: h.ts))
        case = CaseRecord(CaseId(self.ids.new("case")), room.id, person.id, person.name,
                          urgency, CaseStatus.OPEN, note, now_ms, opened_by, context=context,
                          held=held)
        self.by_id[case.id] = case
        return case

    # ---------------------------------------------------------------- commands
    def escalate(self, conn: Conn, ident: Identity, cmd: c.Escalate, now_ms: int
                 ) -> list[Effect]:
        room = self.rooms.of(conn, cmd.room)
        person = self.rooms.participant(room, cmd.participant)
        note, masked, _ = self.screening.free_text(cmd.note)  # the counsellor reads it
        case = self._open(room, person, cmd.urgency, note, ident.id, now_ms)
        effects: list[Effect] = [
            Persist((case, AuditEntry(now_ms, room.id, ident.id, AuditAction.ESCALATE,
                                      cmd.participant,
                                      {"case": case.id, "urgency": case.urgency,
                                       "note": note,
                                       **({"note_masked": masked} if masked else {})},
                                      self.screening.rules.version,
                                      cmd.note if masked else None))),
            Publish(ALL_ROOMS, case_view(case), Audience.COUNSELLORS),
            # docs/protocol.md: `escalated` carries `room` only once a counsellor claims it.
            Publish(room.id, self.notices.notice("escalated", None, case=case.id),
                    Audience.PARTICIPANT, cmd.participant)]
        if cmd.urgency == c.Urgency.EMERGENCY:
            effects.append(Emit(conn.id, Notice("emergency_procedure",
                                                self.config.emergency_procedure, room.id,
                                                case=case.id)))
        return effects

    def request_support(self, conn: Conn, ident: Identity, cmd: c.RequestSupport,
                        now_ms: int) -> list[Effect]:
        """Issue 16: a young person asks for a one-to-one themselves. The case's urgency
        follows the risk signals already seen for them in this room; a repeat while a
        case is open opens nothing (``support_pending``)."""
        room = self.rooms.of(conn, cmd.room)
        if room.kind != RoomKind.GROUP:
            raise ChatError(ErrorCode.FORBIDDEN, "You're already talking with a counsellor.")
        if len(cmd.note) > self.config.rooms.support_note_chars:
            raise ChatError(ErrorCode.TOO_LARGE, "That note is too long; a few words is plenty.")
        mine = [k for k in self.queue() if k.participant == ident.id and k.room == room.id]
        if mine:
            case = mine[0]
            return [Emit(conn.id, Notice("support_pending",
                                         self.notices.text("support_pending"),
                                         case.private_room or room.id, case=case.id))]
        note, masked, signpost = self.screening.free_text(cmd.note)
        book = self.alerting.book
        urgency = book.urgency(room.id, ident.id)
        effects: list[Effect] = []
        sender = ident.person()
        if signpost:
            # docs/architecture.md invariant 2, wherever the young person writes it.
            effects.append(Emit(conn.id, self.notices.notice("signpost", room.id,
                                                             resources=True)))
            effects += self.alerting.raise_alert(room, "risk", sender, note[:EXCERPT_CHARS],
                                                 (), now_ms)
            urgency = min(urgency, c.Urgency.URGENT, key=lambda u: u.rank)
        case = self._open(room, sender, urgency, note, ident.id, now_ms)
        detail: dict[str, object] = {"case": case.id, "urgency": case.urgency, "note": note,
                                     "signals": book.signals(room.id, ident.id)}
        if masked:
            detail["note_masked"] = masked
        return [
            *effects,
            Persist((case, AuditEntry(now_ms, room.id, ident.id,
                                      AuditAction.REQUEST_SUPPORT, ident.id,
                                      detail, self.screening.rules.version,
                                      cmd.note if masked else None)), conn=conn.id),
            Publish(ALL_ROOMS, case_view(case), Audience.COUNSELLORS),
            Emit(conn.id, self.notices.notice("support_requested", room.id, case=case.id))]

    def claim(self, conn: Conn, ident: Identity, cmd: c.Claim, now_ms: int) -> list[Effect]:
        """Write the claim first; nothing changes here until it is in the store, where a
        case can be claimed once (two counsellors on two nodes: one wins, the other is
        told ``conflict``): then ``claimed``."""
        case = self.by_id.get(cmd.case)
        if case is None or case.status != CaseStatus.OPEN:
            raise ChatError(ErrorCode.NOT_FOUND, "That case isn't open.")
        private = RoomId(f"{case.id}-room")
        case = dataclasses.replace(case, status=CaseStatus.CLAIMED, counsellor=ident.id,
                                   private_room=private)
        room = Room(private, "One-to-one with a counsellor", (), kind=RoomKind.CASE,
                    require_facilitator=False)
        return [Persist((room.record(), case,
                         AuditEntry(now_ms, case.room, ident.id, AuditAction.CLAIM,
                                    case.participant,
                                    {"case": case.id, "private_room": private},
                                    self.screening.rules.version)),
                        conn=conn.id, then=ClaimWritten(conn.id, case))]

    def claimed(self, token: ClaimWritten, now_ms: int) -> list[Effect]:
        """The claim is written: the counsellor and the young person enter its room."""
        case = token.case
        assert case.private_room is not None
        assert case.counsellor is not None
        self.by_id[case.id] = case
        room = self.rooms.by_id.get(case.private_room)
        if room is None:
            room = self.rooms.by_id[case.private_room] = Room(
                case.private_room, "One-to-one with a counsellor", (), kind=RoomKind.CASE,
                require_facilitator=False)
        room.case, room.allowed = case.id, {case.participant, case.counsellor}
        effects: list[Effect] = []
        conn = self.sessions.conns.get(token.conn)
        if conn is not None and conn.identity is not None:
            effects += self.sessions.enter(conn, conn.identity, room, now_ms, announce=False)
        self.sessions.enter_all(case.participant, room, now_ms)
        if conn is not None:
            effects.append(Emit(conn.id, room.state(now_ms)))
        effects += [
            # Only the node whose claim was written gets here: counted once.
            Measure(Measurement.CASE_CLAIMED, self.rooms.profile(case.room),
                    elapsed_s(now_ms, case.ts), case.urgency),
            Publish(case.room, self.notices.notice("escalated", room.id, case=case.id),
                    Audience.PARTICIPANT, case.participant),
            Publish(room.id, room.state(now_ms)),
            *self._publish(case)]
        return effects

    def close(self, conn: Conn, ident: Identity, cmd: c.CloseCase, now_ms: int
              ) -> list[Effect]:
        case = self.by_id.get(cmd.case)
        if case is None or case.counsellor != ident.id or \
                case.status != CaseStatus.CLAIMED:
            raise ChatError(ErrorCode.NOT_FOUND, "That case isn't yours to close.")
        outcome, masked, _ = self.screening.free_text(cmd.outcome)
        case = dataclasses.replace(case, status=CaseStatus.CLOSED, outcome=outcome)
        self.by_id[case.id] = case
        effects: list[Effect] = []
        room = self.rooms.by_id.get(case.private_room) if case.private_room else None
        ops: list[StoreOp] = [case, AuditEntry(now_ms, case.room, ident.id,
                                               AuditAction.CLOSE_CASE,
                                               case.participant,
                                               {"case": case.id, "outcome": outcome,
                                                **({"outcome_masked": masked}
                                                   if masked else {})},
                                               self.screening.rules.version,
                                               cmd.outcome if masked else None)]
        if room is not None:
            room.closed = True
            ops.insert(0, room.record())
        effects.append(Persist(tuple(ops)))
        if room is not None:
            effects += self.sessions.close_locally(room, now_ms)
        effects += self._publish(case)
        return effects

    # ---------------------------------------------------------------- cluster
    def apply(self, case: CaseRecord, now_ms: int) -> list[Effect]:
        """A counsellor on another node claimed a case: the young person's connections
        here enter the one-to-one room, as they would on the counsellor's node."""
        self.by_id[case.id] = case
        room = self.rooms.by_id.get(case.private_room) if case.private_room else None
        if case.status != CaseStatus.CLAIMED or room is None or case.counsellor is None:
            return []
        room.case, room.allowed = case.id, {case.participant, case.counsellor}
        here = self.sessions.enter_all(case.participant, room, now_ms)
        # Announced even if they were already in it (a claim made here that lost the
        # race): this node must hear the room, and everyone see who is in it.
        return [Publish(room.id, room.state(now_ms))] if here else []

    # ------------------------------------------------------------------ timers
    def emergencies(self, now_ms: int) -> list[Effect]:
        """Emergency cases unclaimed for ``rooms.emergency_unclaimed_s``: alerted again
        to every facilitator and counsellor, and to ops (run on one node)."""
        effects: list[Effect] = []
        for case in self.queue():
            if case.urgency == c.Urgency.EMERGENCY and case.status == CaseStatus.OPEN and \
                    case.id not in self._alerted_emergencies and \
                    now_ms - case.ts >= self.config.rooms.emergency_unclaimed_s * 1000:
                self._alerted_emergencies.add(case.id)
                alert = Alert(case.room, "risk", case.participant,
                              f"Emergency case {case.id} has not been claimed yet.")
                effects += [Publish(ALL_ROOMS, alert, Audience.FACILITATORS),
                            Publish(ALL_ROOMS, alert, Audience.COUNSELLORS),
                            OpsAlert("emergency_unclaimed", case.id)]
        return effects
