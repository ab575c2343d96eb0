"""A message from ``send`` to the room: the room's checks (muted, rate, slow mode,
paused), moderation alone and in its conversation, then delivered, held or blocked.
An outcome is remembered per (sender, id) so that a resend is answered as before
(docs/protocol.md § Idempotency); the shell reports back when the durable step is done
(``complete_send``) or failed (``abort_send``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from chatserver.core import commands as c
from chatserver.core.alerting import HIDDEN_CATEGORIES, Alerting
from chatserver.core.audit import MESSAGE_ACTIONS, AuditAction
from chatserver.core.conversations import Conversations, InContext
from chatserver.core.effects import (
    Audience,
    AuditEntry,
    Close,
    Deliver,
    Effect,
    Emit,
    HeldRecord,
    Measure,
    Measurement,
    OpsAlert,
    Persist,
    Publish,
)
from chatserver.core.errors import ChatError, CloseCode, ErrorCode
from chatserver.core.events import Ack, AckStatus, HeldEvent, Message
from chatserver.core.ids import ConnId, HeldId, IdFactory, MessageId, ParticipantId, RoomId
from chatserver.core.notices import Notices
from chatserver.core.ratelimit import SlidingWindow
from chatserver.core.roles import STAFF
from chatserver.core.room import Room, held_view
from chatserver.core.rooms import Rooms
from chatserver.core.screening import Screening
from chatserver.core.session import Conn, Identity
from chatserver.core.sessions import Sessions
from chatserver.core.wellbeing import Wellbeing
from chatserver.moderation.engine import Verdict
from chatserver.moderation.pipeline import describe
from chatserver.moderation.rules import Action
from chatserver.settings import LimitsConfig

__all__ = ["Messaging"]


@dataclass(slots=True)
class _Sender:
    """Per-participant send state, shared by all their sockets (the limit is per
    participant)."""

    window: SlidingWindow
    strikes: int = 0
    """Rate-limited sends in a row."""
    flood_alerted: bool = False


class Messaging:
    """The send path, its outcomes by id, and messages on their way to the room."""

    def __init__(self, rooms: Rooms, sessions: Sessions, screening: Screening,
                 conversations: Conversations, alerting: Alerting, wellbeing: Wellbeing,
                 notices: Notices, limits: LimitsConfig, ids: IdFactory) -> None:
        self.rooms = rooms
        self.sessions = sessions
        self.screening = screening
        self.conversations = conversations
        self.alerting = alerting
        self.wellbeing = wellbeing
        self.notices = notices
        self.limits = limits
        self.ids = ids
        self._senders: dict[ParticipantId, _Sender] = {}
        self._idem: OrderedDict[tuple[ParticipantId, MessageId], Ack | list[ConnId]] = \
            OrderedDict()
        """A send's outcome, or the connections waiting for it while it is in flight."""
        self._sent_here: OrderedDict[tuple[RoomId, ParticipantId, MessageId], None] = \
            OrderedDict()
        """Messages this node delivered, until it observes them: an unanswered post is
        counted by the node that delivered it, once for the cluster (every node that
        serves the room observes it)."""

    def _sender(self, pid: ParticipantId) -> _Sender:
        """Per-participant state, made on first use (not on every send)."""
        sender = self._senders.get(pid)
        if sender is None:
            sender = self._senders[pid] = _Sender(
                SlidingWindow(self.limits.rate_messages, self.limits.rate_window_s * 1000))
        return sender

    def answered(self, pid: ParticipantId, msg_id: MessageId) -> bool:
        """Whether a send with this id has an outcome or is in flight (a resend)."""
        return (pid, msg_id) in self._idem

    # -------------------------------------------------------------------- send
    def send(self, conn: Conn, ident: Identity, cmd: c.Send, now_ms: int) -> list[Effect]:
        room = self.rooms.of(conn, cmd.room)
        key = (ident.id, cmd.id)
        seen = self._idem.get(key)
        if isinstance(seen, Ack):
            return [Emit(conn.id, seen)]  # docs/protocol.md: the original outcome, once in the room
        if isinstance(seen, list):
            seen.append(conn.id)  # in flight: answered when it completes
            return []
        text = cmd.text.strip()
        if not text:
            raise ChatError(ErrorCode.BAD_REQUEST, "A message can't be empty.")
        if len(text) > self.limits.max_text_chars:
            raise ChatError(ErrorCode.TOO_LARGE, "That message is too long to send.")
        staff = ident.role in STAFF
        sender_state = self._sender(ident.id)
        effects: list[Effect] = []
        if not staff:
            if room.is_muted(ident.id, now_ms):
                raise ChatError(ErrorCode.MUTED, "You're muted for now.")
            if not sender_state.window.try_take(now_ms):
                return self.flooding(conn, ident, room, cmd, now_ms)
            sender_state.strikes = 0
            last = room.last_send.get(ident.id)
            # 0 <= elapsed: a clock stepping back never extends slow mode (F-14).
            if room.slow_mode_s and last is not None and \
                    0 <= now_ms - last < room.slow_mode_s * 1000:
                raise ChatError(ErrorCode.SLOW_MODE, "The room is in slow mode.")
        verdict, failed = self.screening.message(text, ident.role, room)
        context = InContext()
        if not staff and not failed:
            verdict, context = self.conversations.read(room, ident.id, text, verdict, now_ms)
        if failed:
            effects.append(OpsAlert("moderation_failed",
                                    f"rules {self.screening.rules.version}"))
        # A paused room still lets a young person at risk reach staff: risk is held and
        # alerted; anything else waits until the room resumes.
        if not staff and room.paused_for_participants() and verdict.action < Action.HOLD \
                and not verdict.signpost:
            raise ChatError(ErrorCode.PAUSED, "The room is paused for a moment.")
        if not staff:
            room.last_send[ident.id] = now_ms
            self.wellbeing.sent(ident.id, now_ms)
        if verdict.signpost:
            # docs/architecture.md invariant 2: crisis support at once, before anything durable.
            effects += [Emit(conn.id, self.notices.notice("signpost", room.id, resources=True)),
                        Measure(Measurement.SIGNPOSTED, room.profile)]
        audit = AuditEntry(now_ms, room.id, ident.id, MESSAGE_ACTIONS[verdict.action],
                           cmd.id, {**_verdict_detail(verdict, failed), **context.detail()},
                           verdict.version,
                           # Delivered text lives in the message record; what peers never
                           # saw is kept here, for the retention period only.
                           text if verdict.action >= Action.HOLD else None)
        sender = ident.person()
        if verdict.action <= Action.MASK:
            self._idem_put(key, [conn.id])
            self.delivering(room.id, ident.id, cmd.id)
            if not staff:
                self.conversations.add(room.id, ident.id, cmd.id, text, now_ms)
            effects.append(Deliver(room.id, sender, cmd.id, verdict.text_out, now_ms, audit,
                                   conn=conn.id, ref=cmd.id,
                                   masked=verdict.action == Action.MASK))
            effects += self.alerting.for_verdict(room, sender, verdict, text, cmd.id, None,
                                                 now_ms)
            return effects
        if verdict.action == Action.HOLD:
            held = HeldRecord(HeldId(self.ids.new("h")), room.id, sender, cmd.id, text,
                              tuple((h.rule.id, h.rule.category) for h in verdict.hits), now_ms,
                              approvable=not (set(verdict.categories) & HIDDEN_CATEGORIES))
            ack = Ack(cmd.id, AckStatus.HELD, held=held.id, room=room.id,
                      notice=verdict.notice or self.notices.text("held"))
            room.held[held.id] = held
            self._idem_put(key, ack)
            effects += [Persist((held, audit), ref=cmd.id, conn=conn.id), Emit(conn.id, ack),
                        Publish(room.id, HeldEvent(room.id, held_view(held)), Audience.STAFF)]
            effects += self.alerting.for_verdict(room, sender, verdict, text, cmd.id, held.id,
                                                 now_ms)
            effects += self.conversations.effects(room, sender, context, now_ms, held.id,
                                                  cmd.id)
            return effects
        ack = Ack(cmd.id, AckStatus.BLOCKED, room=room.id,
                  notice=f"{verdict.notice or self.notices.text('blocked')} "
                         f"{self.notices.text('complaints')}")
        self._idem_put(key, ack)
        effects += [Persist((audit,), ref=cmd.id, conn=conn.id), Emit(conn.id, ack)]
        effects += self.alerting.for_verdict(room, sender, verdict, text, cmd.id, None, now_ms)
        effects += self.conversations.effects(room, sender, context, now_ms, None, cmd.id)
        return effects

    def flooding(self, conn: Conn, ident: Identity, room: Room, cmd: c.Send,
                 now_ms: int) -> list[Effect]:
        """A send over the rate limit (this node's, or the cluster's: FL-03)."""
        sender = self._sender(ident.id)
        sender.strikes += 1
        effects: list[Effect] = [Emit(conn.id, Ack(cmd.id, AckStatus.REJECTED, room=room.id,
                                                   code=ErrorCode.RATE_LIMITED.value))]
        if sender.strikes >= self.limits.flood_alert_after and not sender.flood_alerted:
            sender.flood_alerted = True
            effects += [
                Persist((AuditEntry(now_ms, room.id, ident.id, AuditAction.FLOOD, ident.id,
                                    {"strikes": sender.strikes}),)),
                *self.alerting.raise_alert(room, "flood", ident.person(),
                                           "Sending very fast (rate limited).", (), now_ms)]
        if sender.strikes >= self.limits.flood_close_after:
            sender.strikes = 0
            effects.append(Close(conn.id, CloseCode.POLICY, "flooding"))
        return effects

    # ----------------------------------------------------------- the shell's word
    def complete_send(self, pid: ParticipantId, msg_id: MessageId, ack: Ack | None
                      ) -> list[Effect]:
        """The shell finished a ``Deliver``: ``ack`` is the outcome, None if it failed
        (then a retry with the same id runs again)."""
        waiters = self._idem.pop((pid, msg_id), None)
        if ack is not None:
            self._idem_put((pid, msg_id), ack)
        effects: list[Effect] = []
        if ack is not None and ack.seq is not None:
            # Stored alerts about this message now link to it by seq (issue 16).
            effects += [Persist((r,)) for r in
                        self.alerting.book.delivered(pid, msg_id, ack.seq)]
        # A fragment of a split detail caught before its seq was known: redact it now.
        room = self.rooms.by_id.get(ack.room) if ack is not None and ack.room else None
        effects += self.conversations.delivered(room, pid, msg_id,
                                                ack.seq if ack is not None else None)
        if not isinstance(waiters, list):
            return effects
        out = ack or Ack(msg_id, AckStatus.REJECTED, code=ErrorCode.INTERNAL.value)
        return effects + [Emit(w, out) for w in waiters[1:] if w in self.sessions.conns]

    def abort_send(self, conn_id: ConnId, msg_id: MessageId) -> None:
        """The durable write behind a held or blocked send failed: forget its outcome and
        its held record, so a retry with the same id is decided and audited afresh."""
        conn = self.sessions.conns.get(conn_id)
        if conn is None or conn.identity is None:
            return
        pid = conn.identity.id
        self._idem.pop((pid, msg_id), None)
        for room in self.rooms.by_id.values():
            for hid in [h.id for h in room.held.values()
                        if h.sender.id == pid and h.msg_id == msg_id]:
                del room.held[hid]

    def held_elsewhere(self, rec: HeldRecord) -> None:
        """Another node held a message: a resend of the same id to this node is answered
        as it was there."""
        self._idem_put((rec.sender.id, rec.msg_id), Ack(
            rec.msg_id, AckStatus.HELD, held=rec.id, room=rec.room,
            notice=self.notices.text("held")))

    def _idem_put(self, key: tuple[ParticipantId, MessageId], value: Ack | list[ConnId]) -> None:
        self._idem[key] = value
        while len(self._idem) > self.limits.idempotency_keys:
            self._idem.popitem(last=False)

    # ----------------------------------------------------------- delivery side
    def delivering(self, rid: RoomId, pid: ParticipantId, msg_id: MessageId) -> None:
        """A message this node is about to deliver (sent, or approved by staff)."""
        self._sent_here[(rid, pid, msg_id)] = None
        while len(self._sent_here) > self.limits.idempotency_keys:
            self._sent_here.popitem(last=False)  # never observed (its write failed)

    def observe(self, msg: Message) -> None:
        """A message was delivered to the room (from any node): remember it."""
        room = self.rooms.by_id.get(msg.room)
        if room is None:
            return
        key = (msg.room, msg.sender.id, msg.id)
        here = key in self._sent_here
        self._sent_here.pop(key, None)
        room.recent.append(msg)
        self.wellbeing.observed(room, msg, here)

    def forget(self, pid: ParticipantId) -> None:
        self._senders.pop(pid, None)

    def remembers(self, pid: ParticipantId) -> bool:
        return pid in self._senders


def _verdict_detail(v: Verdict, failed: bool) -> dict[str, object]:
    detail: dict[str, object] = {
        "rules": [h.rule.id for h in v.hits],
        "shadow": [h.rule.id for h in v.shadow],
        **describe(v),
    }
    if failed:
        detail["error"] = "moderation failed: held (fail closed)"
    return detail
