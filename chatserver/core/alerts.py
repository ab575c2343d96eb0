"""Stored alerts (issue 16): raised, kept until a facilitator resolves them, delivered as
a backlog at sign-in, acknowledged and resolved, and the risk signals that set the
urgency of a case a young person asks for themselves. Pure: no I/O, no clock.

``Alerting`` (``core/alerting.py``) owns one ``AlertBook`` and turns what it returns
into effects: the record is written (``Persist``) and the change published to the
room's facilitators.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Final

from chatserver.core.audit import AuditAction
from chatserver.core.commands import Urgency
from chatserver.core.effects import (
    ALL_ROOMS,
    AlertRecord,
    Audience,
    AuditEntry,
    Effect,
    Persist,
    Publish,
)
from chatserver.core.errors import ChatError, ErrorCode
from chatserver.core.events import Alert, AlertChange, AlertUpdate, Event, Person, RuleRef
from chatserver.core.ids import (
    AlertId,
    ConnId,
    HeldId,
    IdFactory,
    MessageId,
    ParticipantId,
    RoomId,
)
from chatserver.core.tokens import AlertUndo, AlertWritten
from chatserver.core.vocabulary import AlertStatus, RoomKind

__all__ = ["STORED_KINDS", "AlertBook", "AlertUndo", "AlertWritten", "audience", "decided",
           "writes_last"]

STORED_KINDS: Final = frozenset({
    "risk", "grooming", "contact", "abuse", "report", "flood", "evasion"})
"""Alerts about one person's message or behaviour are stored. ``unanswered`` (each node
raises it for its own staff, and a reply makes it moot) and the unclaimed-emergency
re-alert (the case is the record) are not."""
_EMERGENCY: Final = frozenset({"method"})
"""Signals that make a self-requested case an emergency: method or means detail."""
_URGENT: Final = frozenset({"risk", "grooming"})
"""... urgent: a risk disclosure, or grooming signals that added up."""


class AlertBook:
    """Unresolved alerts of every room on this node, and the signals seen per person."""

    def __init__(self, ids: IdFactory, coalesce_ms: int = 0) -> None:
        self.ids = ids
        self.coalesce_ms = coalesce_ms
        """Issue 14: an alert of the same kind about the same participant in the same
        room, within this long of an unresolved one, is counted into it (0: never)."""
        self.open: dict[AlertId, AlertRecord] = {}
        """Unresolved alerts by id (resolved ones leave; the store keeps them)."""
        self._signals: dict[tuple[RoomId, ParticipantId], set[str]] = {}
        self._unwritten: set[AlertId] = set()
        """Raised but not yet written: a change meanwhile waits for that write."""

    # ------------------------------------------------------------ records in
    def apply(self, record: AlertRecord) -> None:
        """A record written here, loaded from the store or made durable by another
        node: the book follows it."""
        seen = self._signals.setdefault((record.room, record.participant), set())
        seen.add(record.kind)
        seen.update(category for _, category in record.rules)
        if record.status == AlertStatus.RESOLVED:
            self.open.pop(record.id, None)
        else:
            self.open[record.id] = record

    def load(self, records: Iterable[AlertRecord], fresh: bool = False) -> None:
        """Records from the store; ``fresh``: they are all that is still open."""
        if fresh:
            self.open.clear()
        for record in records:
            self.apply(record)

    def raise_alert(self, room: RoomId, kind: str, person: Person, excerpt: str,
                    rules: tuple[RuleRef, ...], now_ms: int, *, seq: int | None = None,
                    held: HeldId | None = None, message: MessageId | None = None
                    ) -> tuple[AlertRecord, bool]:
        """A new alert, or an occurrence counted into an unresolved one of the same
        kind, room and participant raised within ``coalesce_ms`` (issue 14: one
        participant's report spam raised 267 alerts in 5 s). Remembered here; the
        caller writes and publishes it.

        Returns:
            The record, and whether it was coalesced (then publish ``repeated``, and
            write it unless ``pending_write`` says its first write is still queued).
        """
        same = self._coalescing(room, kind, person.id, now_ms)
        if same is not None:
            record = dataclasses.replace(same, count=same.count + 1, last_ts=now_ms)
            self.open[record.id] = record
            return record, True
        record = AlertRecord(AlertId(self.ids.new("al")), room, kind, person.id, person.name,
                             excerpt, tuple((r.id, r.category) for r in rules), now_ms, seq,
                             held, message)
        self.apply(record)
        self._unwritten.add(record.id)
        return record, False

    def _coalescing(self, room: RoomId, kind: str, pid: ParticipantId, now_ms: int
                    ) -> AlertRecord | None:
        if self.coalesce_ms <= 0:
            return None
        # Counted from the first occurrence: a steady trickle still raises a fresh alert
        # once per window, so a new event never hides for long behind an old one.
        return next((r for r in self.open.values()
                     if (r.room, r.kind, r.participant) == (room, kind, pid)
                     and 0 <= now_ms - r.ts < self.coalesce_ms), None)

    def pending_write(self, alert: AlertId) -> bool:
        """Its first write is still queued (``written`` writes the latest after it)."""
        return alert in self._unwritten

    def written(self, token: AlertWritten) -> AlertRecord | None:
        """The first write is done; returns the record to write again if it changed
        meanwhile (its message got a seq while the write was queued)."""
        self._unwritten.discard(token.record.id)
        now = self.open.get(token.record.id)
        return now if now is not None and now != token.record else None

    def delivered(self, pid: ParticipantId, msg_id: MessageId, seq: int) -> list[AlertRecord]:
        """A message an alert was raised about got its ``seq``: the stored alerts learn
        it, so the backlog links to the message. Returns the records to write now (one
        whose first write is still queued is written again after it: ``written``)."""
        changed = []
        for record in list(self.open.values()):
            if record.participant == pid and record.message == msg_id and record.seq is None:
                record = dataclasses.replace(record, seq=seq)
                self.open[record.id] = record
                if record.id not in self._unwritten:
                    changed.append(record)
        return changed

    # ----------------------------------------------------------- staff acts
    def _find(self, room: RoomId, alert: AlertId) -> AlertRecord:
        record = self.open.get(alert)
        if record is None or record.room != room:
            # Another room's alert looks like an unknown one (SEC-10: nothing leaks).
            raise ChatError(ErrorCode.NOT_FOUND, "No such open alert in this room.")
        return record

    def acknowledge(self, room: RoomId, alert: AlertId, by: Person, now_ms: int
                    ) -> tuple[AlertRecord, AlertRecord]:
        """Returns the record before and after. The caller times raised → acknowledged
        from ``before.ts``.

        Raises:
            ChatError: ``not_found`` (no such open alert in this room), ``conflict``
                (already acknowledged: the message names by whom).
        """
        before = self._find(room, alert)
        if before.acknowledged_by is not None:
            raise ChatError(ErrorCode.CONFLICT,
                            f"{before.acknowledged_by.name} has already acknowledged it.")
        after = dataclasses.replace(before, status=AlertStatus.ACKNOWLEDGED, acknowledged_by=by,
                                    acknowledged_ts=now_ms)
        self.apply(after)
        return before, after

    def resolve(self, room: RoomId, alert: AlertId, by: Person, now_ms: int
                ) -> tuple[AlertRecord, AlertRecord]:
        """Resolve an open or acknowledged alert; it leaves the backlog.

        Raises:
            ChatError: ``not_found`` (no such open alert in this room).
        """
        before = self._find(room, alert)
        after = dataclasses.replace(before, status=AlertStatus.RESOLVED, resolved_by=by,
                                    resolved_ts=now_ms)
        self.apply(after)
        return before, after

    def undo(self, token: AlertUndo) -> None:
        """Put back an alert whose acknowledge or resolve was not written."""
        self.open[token.record.id] = token.record

    # ----------------------------------------------------------------- views
    @staticmethod
    def view(record: AlertRecord, backlog: bool = False) -> Alert:
        return Alert(record.room, record.kind, record.participant, record.excerpt,
                     tuple(RuleRef(i, k) for i, k in record.rules), record.seq, record.held,
                     record.id, record.ts, record.name, record.message, record.status,
                     record.acknowledged_by, record.acknowledged_ts, backlog, record.count,
                     record.last_ts)

    @staticmethod
    def repeated(record: AlertRecord) -> AlertUpdate:
        """A coalesced occurrence: the alert's count moved (no new alert to sound)."""
        return AlertUpdate(record.room, record.id, AlertChange.REPEATED, None,
                           record.last_ts or record.ts, record.count)

    @staticmethod
    def update(record: AlertRecord) -> AlertUpdate:
        resolved = record.status == AlertStatus.RESOLVED
        by = record.resolved_by if resolved else record.acknowledged_by
        ts = record.resolved_ts if resolved else record.acknowledged_ts
        assert by is not None
        assert ts is not None
        change = AlertChange.RESOLVED if resolved else AlertChange.ACKNOWLEDGED
        return AlertUpdate(record.room, record.id, change, by, ts)

    def backlog(self, sees: Callable[[RoomId], bool]) -> list[Alert]:
        """Unresolved alerts of the rooms ``sees`` admits, oldest first."""
        return [self.view(r, backlog=True)
                for r in sorted(self.open.values(), key=lambda r: (r.ts, r.id)) if sees(r.room)]

    def urgency(self, room: RoomId, pid: ParticipantId) -> Urgency:
        """The urgency the signals already seen for this person in this room call for
        (resolved alerts count: what was seen was seen)."""
        seen = self._signals.get((room, pid), set())
        if seen & _EMERGENCY:
            return Urgency.EMERGENCY
        if seen & _URGENT:
            return Urgency.URGENT
        return Urgency.ROUTINE

    def forget(self, room: RoomId, pid: ParticipantId) -> None:
        """The room forgot this person (issue 14): their signals go too, unless an alert
        about them there is still open (what safety needs stays, and comes back from
        the store's open alerts after a restart anyway)."""
        if not any(r.room == room and r.participant == pid for r in self.open.values()):
            self._signals.pop((room, pid), None)

    def signals(self, room: RoomId, pid: ParticipantId) -> list[str]:
        return sorted(self._signals.get((room, pid), set()))


def audience(room_kind: RoomKind, room: RoomId, event: Event) -> Publish:
    """A group room's alerts (and their updates) reach every facilitator signed in, on
    every node: each holds the whole backlog, whichever room they have open. A
    one-to-one room's reach its staff (the counsellor)."""
    if room_kind == RoomKind.GROUP:
        return Publish(ALL_ROOMS, event, Audience.FACILITATORS)
    return Publish(room, event, Audience.STAFF)


def decided(conn: ConnId, actor: ParticipantId, room_kind: RoomKind, before: AlertRecord,
            after: AlertRecord, now_ms: int, version: str) -> list[Effect]:
    """An acknowledge or resolve: written with its audit entry before anyone is told
    (docs/architecture.md invariant 3), and undone (``AlertUndo``) if that write fails."""
    action = AuditAction.ALERT_ACK if after.status == AlertStatus.ACKNOWLEDGED \
        else AuditAction.ALERT_RESOLVE
    audit = AuditEntry(now_ms, after.room, actor, action, after.participant,
                       {"alert": after.id, "kind": after.kind, "raised": after.ts}, version)
    return [Persist((after, audit), conn=conn, undo=AlertUndo(before)),
            audience(room_kind, after.room, AlertBook.update(after))]


def writes_last(effects: list[Effect]) -> list[Effect]:
    """Alert records are written after everything else of their batch: a failed durable
    step stops the rest of a batch, and a lost backlog entry must not stop a reply, a
    redaction or another alert."""
    def alert_only(e: Effect) -> bool:
        return isinstance(e, Persist) and bool(e.ops) and \
            all(isinstance(op, AlertRecord) for op in e.ops)
    return [e for e in effects if not alert_only(e)] + [e for e in effects if alert_only(e)]
