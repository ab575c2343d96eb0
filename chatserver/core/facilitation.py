"""Staff commands that change a room: mute, pause, slow mode, remove, redact, and the
decisions on held messages. Each is made at once and written with its audit entry;
if that write fails the room is put back (``RoomUndo``: invariant 3, no staff action
without its audit entry). Mute expiry is here too (``expire_mutes``).
"""

from __future__ import annotations

import dataclasses

from chatserver.core import commands as c
from chatserver.core.audit import AuditAction
from chatserver.core.effects import (
    Audience,
    AuditEntry,
    Deliver,
    Effect,
    HeldDecided,
    Measure,
    Measurement,
    Persist,
    Publish,
    RedactRecord,
    elapsed_s,
)
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.events import Notice, Redacted
from chatserver.core.messaging import Messaging
from chatserver.core.notices import Notices
from chatserver.core.room import Room
from chatserver.core.rooms import Rooms
from chatserver.core.screening import Screening
from chatserver.core.session import Conn, Identity
from chatserver.core.sessions import Sessions
from chatserver.core.tokens import RoomUndo

__all__ = ["Facilitation", "RoomCommand"]

RoomCommand = (c.Mute | c.Unmute | c.Pause | c.Resume | c.SlowMode | c.Remove | c.Redact
               | c.Approve | c.Reject)
"""Staff commands that change a room: undone if their audit write fails."""


class Facilitation:
    """The facilitator's tools on a room and its review queue."""

    def __init__(self, rooms: Rooms, sessions: Sessions, messaging: Messaging,
                 screening: Screening, notices: Notices) -> None:
        self.rooms = rooms
        self.sessions = sessions
        self.messaging = messaging
        self.screening = screening
        self.notices = notices

    def handle(self, conn: Conn, ident: Identity, cmd: RoomCommand, now_ms: int
               ) -> list[Effect]:
        """Run a staff command that changes a room, ready to be undone: the change is
        made now, but if its audit write fails the shell hands the ``RoomUndo`` back
        (``undo``) and the room is as it was."""
        room = self.rooms.by_id.get(cmd.room) if cmd.room in conn.rooms else None
        undo = RoomUndo(room.id, room.record(), dict(room.held), dict(room.members)) \
            if room is not None else None
        effects = self._run(conn, ident, cmd, now_ms)
        return [dataclasses.replace(e, conn=conn.id, undo=undo) if isinstance(e, Persist) else
                dataclasses.replace(e, actor=conn.id, undo=undo) if isinstance(e, Deliver) else e
                for e in effects]

    def _run(self, conn: Conn, ident: Identity, cmd: RoomCommand, now_ms: int
             ) -> list[Effect]:
        room = self.rooms.of(conn, cmd.room)
        match cmd:
            case c.Mute():
                return self._mute(room, ident, cmd, now_ms)
            case c.Unmute():
                return self._unmute(room, ident, cmd, now_ms)
            case c.Pause():
                room.paused = True
                return [self._staff_action(room, ident, AuditAction.PAUSE, now_ms,
                                           reason=cmd.reason),
                        Publish(room.id, room.state(now_ms)),
                        Publish(room.id, self.notices.notice("paused", room.id))]
            case c.Resume():
                room.paused = False
                return [self._staff_action(room, ident, AuditAction.RESUME, now_ms),
                        Publish(room.id, room.state(now_ms))]
            case c.SlowMode():
                room.slow_mode_s = cmd.seconds
                return [self._staff_action(room, ident, AuditAction.SLOW_MODE, now_ms,
                                           seconds=cmd.seconds),
                        Publish(room.id, room.state(now_ms))]
            case c.Remove():
                return self._remove(room, ident, cmd, now_ms)
            case c.Redact():
                return self._redact(room, ident, cmd, now_ms)
            case c.Approve():
                return self._approve(room, ident, cmd, now_ms)
            case c.Reject():
                return self._reject(room, ident, cmd, now_ms)

    def undo(self, token: RoomUndo) -> None:
        """The audit write of a staff command failed: put its room back as it was."""
        room = self.rooms.by_id.get(token.room)
        if room is None:
            return
        room.apply(token.record)
        room.held = dict(token.held)
        for pid, member in token.members.items():
            if pid not in room.members:  # a remove that did not happen
                room.members[pid] = member
                for cid in member.conns:
                    if cid in self.sessions.conns:
                        self.sessions.conns[cid].rooms.add(room.id)

    def expire_mutes(self, room: Room, now_ms: int) -> list[Effect]:
        """Mutes whose time is up (run on one node: ``ChatCore.tick``'s leader)."""
        expired = [p for p, until in room.mutes.items() if until is not None and
                   until <= now_ms]
        effects: list[Effect] = []
        for pid in expired:
            del room.mutes[pid]
            effects += [Persist((room.record(), AuditEntry(now_ms, room.id, "system",
                                                           AuditAction.MUTE_EXPIRED, pid),)),
                        Publish(room.id, self.notices.notice("unmuted", room.id),
                                Audience.PARTICIPANT, pid)]
        if expired:
            effects.append(Publish(room.id, room.state(now_ms)))
        return effects

    def _staff_action(self, room: Room, ident: Identity, action: AuditAction, now_ms: int,
                      target: str | None = None, **detail: object) -> Persist:
        original = None
        if isinstance(detail.get("reason"), str):
            reason, masked, _ = self.screening.free_text(str(detail["reason"]))
            if masked:
                original = str(detail["reason"])
                detail = {**detail, "reason": reason, "reason_masked": masked}
        return Persist((room.record(), AuditEntry(now_ms, room.id, ident.id, action, target,
                                                  detail, self.screening.rules.version,
                                                  original)))

    def _mute(self, room: Room, ident: Identity, cmd: c.Mute, now_ms: int) -> list[Effect]:
        self.rooms.participant(room, cmd.participant)
        until = now_ms + cmd.minutes * 60_000 if cmd.minutes else None
        room.mutes[cmd.participant] = until
        return [self._staff_action(room, ident, AuditAction.MUTE, now_ms, cmd.participant,
                                   minutes=cmd.minutes, reason=cmd.reason),
                Publish(room.id, self.notices.notice("muted", room.id), Audience.PARTICIPANT,
                        cmd.participant),
                Publish(room.id, room.state(now_ms))]

    def _unmute(self, room: Room, ident: Identity, cmd: c.Unmute, now_ms: int
                ) -> list[Effect]:
        self.rooms.member(room, cmd.participant)
        room.mutes.pop(cmd.participant, None)
        return [self._staff_action(room, ident, AuditAction.UNMUTE, now_ms, cmd.participant),
                Publish(room.id, self.notices.notice("unmuted", room.id),
                        Audience.PARTICIPANT, cmd.participant),
                Publish(room.id, room.state(now_ms))]

    def _remove(self, room: Room, ident: Identity, cmd: c.Remove, now_ms: int
                ) -> list[Effect]:
        self.rooms.participant(room, cmd.participant)
        room.remove(cmd.participant)  # the identity and its name, for the room's life
        effects: list[Effect] = [
            self._staff_action(room, ident, AuditAction.REMOVE, now_ms, cmd.participant,
                               reason=cmd.reason)]
        effects += self.sessions.evict(room, cmd.participant)
        # Gone from the list here at once; the node holding them says so too.
        room.remote = {n: tuple(p for p in g if p.id != cmd.participant)
                       for n, g in room.remote.items()}
        effects.append(Publish(room.id, room.state(now_ms)))
        return effects

    def _redact(self, room: Room, ident: Identity, cmd: c.Redact, now_ms: int
                ) -> list[Effect]:
        msg = next((m for m in room.recent if m.seq == cmd.seq), None)
        if msg is not None:
            room.recent.remove(msg)
        reason, masked, _ = self.screening.free_text(cmd.reason)
        return [Persist((RedactRecord(room.id, cmd.seq),
                         AuditEntry(now_ms, room.id, ident.id, AuditAction.REDACT,
                                    msg.sender.id if msg else None,
                                    {"seq": cmd.seq, "reason": reason,
                                     **({"reason_masked": masked} if masked else {})},
                                    self.screening.rules.version,
                                    cmd.reason if masked else None))),
                Publish(room.id, Redacted(room.id, cmd.seq))]

    def _approve(self, room: Room, ident: Identity, cmd: c.Approve, now_ms: int
                 ) -> list[Effect]:
        held = room.held.get(cmd.held)
        if held is None or not held.approvable:
            # SG-08: method detail can never be approved; it looks like any unknown id.
            raise ChatError(ErrorCode.NOT_FOUND, "No such held message.")
        del room.held[held.id]
        audit = AuditEntry(now_ms, room.id, ident.id, AuditAction.APPROVE, held.sender.id,
                           {"held": held.id, "rules": [r for r, _ in held.rules]},
                           self.screening.rules.version)
        self.messaging.delivering(room.id, held.sender.id, held.msg_id)
        # One transaction: decided, delivered and audited together, or none of them.
        return [Deliver(room.id, held.sender, held.msg_id, held.text, now_ms, audit,
                        also=(HeldDecided(held.id),)),
                Measure(Measurement.HELD_DECIDED, room.profile, elapsed_s(now_ms, held.ts),
                        "approve")]

    def _reject(self, room: Room, ident: Identity, cmd: c.Reject, now_ms: int
                ) -> list[Effect]:
        held = room.held.pop(cmd.held, None)
        if held is None:
            raise ChatError(ErrorCode.NOT_FOUND, "No such held message.")
        reason, masked, _ = self.screening.free_text(cmd.reason)
        return [Persist((HeldDecided(held.id),
                         AuditEntry(now_ms, room.id, ident.id, AuditAction.REJECT, held.sender.id,
                                    {"held": held.id, "reason": reason,
                                     **({"reason_masked": masked} if masked else {})},
                                    self.screening.rules.version,
                                    cmd.reason if masked else None))),
                Measure(Measurement.HELD_DECIDED, room.profile, elapsed_s(now_ms, held.ts),
                        "reject"),
                Publish(room.id, Notice("held_rejected", self.notices.text("held_rejected"),
                                        room.id, held=held.id),
                        Audience.PARTICIPANT, held.sender.id)]
