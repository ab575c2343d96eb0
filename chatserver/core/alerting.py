"""What calls staff's attention, turned into effects: alerts raised (from a verdict, a
report, flooding, a conversation), acknowledged and resolved, and the backlog a member
of staff gets at sign-in. The alerts themselves are the ``AlertBook``'s (alerts.py);
the report windows (issue 14) are kept here, the only place reports are taken.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from chatserver.core import commands as c
from chatserver.core.alerts import STORED_KINDS, AlertBook, audience, decided
from chatserver.core.audit import AuditAction
from chatserver.core.effects import (
    Audience,
    AuditEntry,
    Effect,
    Emit,
    Measure,
    Measurement,
    Persist,
    Publish,
    elapsed_s,
)
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.events import Alert, Person, RuleRef
from chatserver.core.ids import ConnId, HeldId, IdFactory, MessageId, ParticipantId, RoomId
from chatserver.core.notices import Notices
from chatserver.core.ratelimit import SlidingWindow
from chatserver.core.roles import Role
from chatserver.core.room import Room
from chatserver.core.rooms import Rooms
from chatserver.core.screening import Screening
from chatserver.core.session import Conn, Identity
from chatserver.core.tokens import AlertWritten
from chatserver.moderation.engine import Verdict
from chatserver.settings import LimitsConfig

__all__ = ["EXCERPT_CHARS", "HIDDEN_CATEGORIES", "Alerting"]

EXCERPT_CHARS: Final = 80
"""SG-22: alert excerpts are truncated; method text is never shown, only its category."""
HIDDEN_CATEGORIES: Final = frozenset({"method"})
"""Categories whose text no alert excerpt shows, and no facilitator may approve."""


class Alerting:
    """Raises alerts and answers staff's acknowledge and resolve, and reports."""

    def __init__(self, rooms: Rooms, screening: Screening, notices: Notices,
                 limits: LimitsConfig, ids: IdFactory) -> None:
        self.rooms = rooms
        self.screening = screening
        self.notices = notices
        self.limits = limits
        self.book = AlertBook(ids, limits.alert_coalesce_s * 1000)
        """Issue 16: unresolved alerts (the backlog) and the signals seen per person."""
        self._reports: dict[ParticipantId, SlidingWindow] = {}
        """Issue 14: ``limits.reports_per_window`` per ``report_window_s``, per reporter."""

    def raise_alert(self, room: Room, kind: str, person: Person, excerpt: str,
                    rules: tuple[RuleRef, ...], now_ms: int, *, seq: int | None = None,
                    held: HeldId | None = None, message: MessageId | None = None
                    ) -> list[Effect]:
        """Raise an alert: published at once (invariant 2), stored for the backlog."""
        if kind not in STORED_KINDS:
            return [Publish(room.id, Alert(room.id, kind, person.id, excerpt, rules, seq, held),
                            Audience.STAFF)]
        record, coalesced = self.book.raise_alert(room.id, kind, person, excerpt, rules,
                                                  now_ms, seq=seq, held=held, message=message)
        if coalesced:
            # Counted into the open alert (issue 14): facilitators see its count move;
            # nothing new sounds. A first write still queued writes this after it.
            return [audience(room.kind, room.id, self.book.repeated(record)),
                    *([] if self.book.pending_write(record.id) else [Persist((record,))])]
        # The write goes last in its batch (``alerts.writes_last``): a store failure
        # then costs the backlog entry, never the live alert or what follows it.
        return [audience(room.kind, room.id, self.book.view(record)),
                Persist((record,), then=AlertWritten(record))]

    def for_verdict(self, room: Room, sender: Person, v: Verdict, text: str,
                    msg_id: MessageId, held: HeldId | None, now_ms: int) -> list[Effect]:
        """The alerts a message's verdict calls for."""
        if not v.alerts:
            return []
        hidden = set(v.categories) & HIDDEN_CATEGORIES
        excerpt = f"(not shown: {', '.join(sorted(hidden))} detail)" if hidden else \
            text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")
        rules = tuple(RuleRef(h.rule.id, h.rule.category) for h in v.hits)
        effects: list[Effect] = []
        for kind in v.alerts:
            effects += self.raise_alert(room, kind, sender, excerpt, rules, now_ms, held=held,
                                        message=msg_id)
        return effects

    def written(self, token: AlertWritten) -> list[Effect]:
        """A new alert's first write is done: write it again if it changed meanwhile."""
        again = self.book.written(token)
        return [Persist((again,))] if again is not None else []

    def backlog(self, conn_id: ConnId, sees: Callable[[RoomId], bool]) -> list[Effect]:
        """Issue 16: what was raised before this sign-in and is not yet resolved."""
        return [Emit(conn_id, a) for a in self.book.backlog(sees)]

    def forget(self, room: RoomId, pid: ParticipantId) -> None:
        """A room forgot this person: so do its signals (unless an alert is open)."""
        self.book.forget(room, pid)

    def forget_person(self, pid: ParticipantId) -> None:
        self._reports.pop(pid, None)

    def remembers(self, pid: ParticipantId) -> bool:
        return pid in self._reports

    # ---------------------------------------------------------------- commands
    def acknowledge(self, conn: Conn, ident: Identity, cmd: c.AlertAck, now_ms: int
                    ) -> list[Effect]:
        room = self.rooms.of(conn, cmd.room)  # a facilitator of another room: forbidden
        before, after = self.book.acknowledge(room.id, cmd.alert, ident.person(), now_ms)
        # After the acknowledgement's write (decided's effects), like every Measure.
        return [*decided(conn.id, ident.id, room.kind, before, after, now_ms,
                         self.screening.rules.version),
                Measure(Measurement.ALERT_ACKNOWLEDGED, room.profile,
                        elapsed_s(now_ms, before.ts))]

    def resolve(self, conn: Conn, ident: Identity, cmd: c.AlertResolve, now_ms: int
                ) -> list[Effect]:
        room = self.rooms.of(conn, cmd.room)
        before, after = self.book.resolve(room.id, cmd.alert, ident.person(), now_ms)
        return decided(conn.id, ident.id, room.kind, before, after, now_ms,
                       self.screening.rules.version)

    def report(self, conn: Conn, ident: Identity, cmd: c.Report, now_ms: int) -> list[Effect]:
        room = self.rooms.of(conn, cmd.room)
        msg = next((m for m in room.recent if m.seq == cmd.seq), None)
        if msg is None:
            raise ChatError(ErrorCode.NOT_FOUND, "That message isn't available to report.")
        window = self._reports.get(ident.id)
        if window is None:
            window = self._reports[ident.id] = SlidingWindow(
                self.limits.reports_per_window, self.limits.report_window_s * 1000)
        if not window.try_take(now_ms):
            # Issue 14: one participant's report spam raised 267 alerts in 5 s.
            raise ChatError(ErrorCode.RATE_LIMITED, "You've reported a lot just now. A "
                                                    "facilitator has your reports.")
        reason, masked, signpost = self.screening.free_text(cmd.reason)
        detail: dict[str, object] = {"seq": cmd.seq, "reason": reason}
        if masked:
            detail["reason_masked"] = masked
        effects: list[Effect] = []
        if signpost and ident.role == Role.PARTICIPANT:
            # docs/architecture.md invariant 2, wherever the young person writes it.
            effects += [Emit(conn.id, self.notices.notice("signpost", room.id, resources=True)),
                        Measure(Measurement.SIGNPOSTED, room.profile)]
        effects += [
            Persist((AuditEntry(now_ms, room.id, ident.id, AuditAction.REPORT, msg.sender.id,
                                detail, self.screening.rules.version,
                                cmd.reason if masked else None),)),
            Emit(conn.id, self.notices.notice("report_received", room.id)),
            *self.raise_alert(room, "report", msg.sender, msg.text[:EXCERPT_CHARS], (),
                              now_ms, seq=msg.seq, message=msg.id),
        ]
        return effects
