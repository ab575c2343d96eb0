"""ChatCore: ``handle(conn, command, now_ms) -> list[Effect]``. Pure: no I/O, no clock.

The transport calls it for every frame and timer tick and runs the effects in order
(STYLE.md example 1). Peer mistakes become ``ack rejected`` or ``error`` effects here
and never raise out of the core.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from chatserver.config import Config
from chatserver.core import commands as c
from chatserver.core.alerts import (
    STORED_KINDS,
    AlertBook,
    AlertWritten,
    audience,
    decided,
    writes_last,
)
from chatserver.core.effects import (
    ALL_ROOMS,
    AlertRecord,
    Audience,
    AuditEntry,
    CaseRecord,
    Close,
    Deliver,
    Effect,
    Emit,
    HeldDecided,
    HeldRecord,
    History,
    Measure,
    Measurement,
    OpsAlert,
    Persist,
    Publish,
    RedactRecord,
    RoomRecord,
    Welcome,
)
from chatserver.core.errors import ChatError, CloseCode, ErrorCode
from chatserver.core.events import (
    Ack,
    Alert,
    CaseView,
    Encoded,
    ErrorEvent,
    Event,
    HeldEvent,
    HeldView,
    Message,
    Notice,
    Person,
    Redacted,
    RuleRef,
)
from chatserver.core.ids import CaseId, ConnId, HeldId, IdFactory, MessageId, ParticipantId, RoomId
from chatserver.core.ratelimit import SlidingWindow, TokenBucket
from chatserver.core.roles import STAFF, Role, may
from chatserver.core.room import Member, Room
from chatserver.core.scopes import sees_case
from chatserver.core.session import Conn, Identity, State
from chatserver.core.summary import AuditSummary
from chatserver.core.sync import Sync, SyncRecord
from chatserver.moderation.context import MODEL_SIGNAL, Conversation, Fragment, Grooming
from chatserver.moderation.engine import MASK_CHAR, Hit, RuleSet, Verdict
from chatserver.moderation.pipeline import Moderator, describe
from chatserver.moderation.rules import Action, Rule

__all__ = ["ChatCore", "CoreStats", "Waiting"]

EXCERPT_CHARS: Final = 80
"""SG-22: alert excerpts are truncated; method text is never shown, only its category."""
HIDDEN_CATEGORIES: Final = frozenset({"method"})
STREAK_GAP_MS: Final = 10 * 60 * 1000
"""A pause this long ends a chatting streak (break reminders)."""
_REJECT_CODES: Final = frozenset({
    ErrorCode.MUTED, ErrorCode.PAUSED, ErrorCode.SLOW_MODE, ErrorCode.RATE_LIMITED,
    ErrorCode.TOO_LARGE, ErrorCode.FORBIDDEN, ErrorCode.INTERNAL,
})


_STATE_CHANGING: Final[frozenset[type[c.Command]]] = frozenset({
    c.Mute, c.Unmute, c.Pause, c.Resume, c.SlowMode, c.Remove, c.Redact, c.Approve, c.Reject,
})
"""Staff commands that change a room: undone if their audit write fails."""
_NEXT_WORD: Final = re.compile(r"\s*\S+")
_GROOMING_RULE: Final = Rule(
    id="context.grooming", category="grooming", action=Action.HOLD, file="context",
    alert="grooming")
"""Issue 13 § 2: grooming signals that add up over a conversation hold the line."""


@dataclass(frozen=True, slots=True)
class _InContext:
    """What a message's conversation adds to its own verdict (``ChatCore._in_context``)."""

    split: tuple[Hit, ...] = ()
    """Rule hits of the joined window that reach into this message (held or blocked)."""
    fragments: tuple[Fragment, ...] = ()
    """Earlier fragments those hits cover: redacted for everyone."""
    joined: str = ""
    grooming: Grooming | None = None

    def detail(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.split:
            out["split"] = {"rules": [h.rule.id for h in self.split],
                            "fragments": [f.msg_id for f in self.fragments]}
        g = self.grooming
        if g is not None and (g.reached or g.after):
            out["grooming"] = {"signals": list(g.signals), "after_alert": g.after}
        return {"context": out} if out else {}


@dataclass(frozen=True, slots=True)
class _SplitRedacted:
    """Redactions of a split detail's fragments are written."""

    room: RoomId
    sender: ParticipantId
    seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _RoomUndo:
    room: RoomId
    record: RoomRecord
    held: dict[HeldId, HeldRecord]
    members: dict[ParticipantId, Member]


@dataclass(frozen=True, slots=True)
class _ClaimWritten:
    """A claim is in the store: now the counsellor and the young person may enter."""

    conn: ConnId
    case: CaseRecord


@dataclass(slots=True)
class _Person:
    """Per-participant state shared by all their sockets (the limit is per participant)."""

    window: SlidingWindow
    reports: SlidingWindow
    """Issue 14: ``limits.reports_per_window`` per ``report_window_s``."""
    conns: set[ConnId] = field(default_factory=set)
    strikes: int = 0
    flood_alerted: bool = False
    streak_start: int | None = None
    last_send: int = 0
    reminded: bool = False


@dataclass(frozen=True, slots=True)
class CoreStats:
    """A snapshot for /metrics (Trio's ``statistics()``)."""

    connections: int
    rooms: int
    held: int
    open_cases: int


@dataclass(frozen=True, slots=True)
class Waiting:
    """What waits for staff at one moment, for /metrics: the gauges the alert rules in
    docs/ops/prometheus-alerts.yml read. Every node holds every held message and case
    (sync records), so each node reports the same; ops take the ``max`` over nodes."""

    held: Mapping[str, tuple[int, float]]
    """Room profile → (held messages undecided, age in seconds of the oldest; 0 if none)."""
    unclaimed: Mapping[tuple[str, str], tuple[int, float]]
    """(Profile of the room escalated from, urgency) → (open cases nobody has claimed,
    age in seconds of the oldest; 0 if none)."""


class ChatCore:
    """All chat state of one node, driven by commands and explicit time."""

    def __init__(self, config: Config, moderator: Moderator,
                 ids: IdFactory | None = None) -> None:
        self.config = config
        self.moderator = moderator
        """Both moderation stages (rules, then the learned heads): swapped whole."""
        self.ids = ids or IdFactory()
        mod = config.moderation
        self.context = Conversation(mod.window_messages, mod.window_s * 1000,
                                    mod.grooming_window_s * 1000, mod.grooming_signals,
                                    mod.context_senders)
        """Issue 13 § 2: each sender's recent messages and grooming signals (the only
        owner of this state)."""
        self.conns: dict[ConnId, Conn] = {}
        self.rooms: dict[RoomId, Room] = {}
        self.cases: dict[CaseId, CaseRecord] = {}
        self._people: dict[ParticipantId, _Person] = {}
        self._idem: OrderedDict[tuple[ParticipantId, MessageId], Ack | list[ConnId]] = \
            OrderedDict()
        self._alerted_emergencies: set[CaseId] = set()
        self._sent_here: OrderedDict[tuple[RoomId, ParticipantId, MessageId], None] = \
            OrderedDict()
        """Messages this node delivered, until it observes them: an unanswered post is
        counted by the node that delivered it, once for the cluster (every node that
        serves the room observes it)."""
        self.alerts = AlertBook(self.ids, config.limits.alert_coalesce_s * 1000)
        """Issue 16: unresolved alerts (the backlog) and the signals seen per person."""
        self.nodes: dict[str, int] = {}
        """Other nodes of a cluster, when each was last heard from (ms)."""
        self._denied = AuditSummary(config.limits.denied_audit_window_s * 1000)
        """Issue 14: forbidden commands, summarised per participant and room."""
        self._handlers: Mapping[type[c.Command], Callable[[Conn, Identity, Any, int],
                                                             list[Effect]]] = {
            c.Join: self._join, c.Leave: self._leave, c.Send: self._send,
            c.Report: self._report, c.Ignore: self._ignore, c.Unignore: self._unignore,
            c.Mute: self._mute, c.Unmute: self._unmute, c.Pause: self._pause,
            c.Resume: self._resume, c.SlowMode: self._slow_mode, c.Remove: self._remove,
            c.Escalate: self._escalate, c.Claim: self._claim, c.CloseCase: self._close_case,
            c.Redact: self._redact, c.Approve: self._approve, c.Reject: self._reject_held,
            c.AlertAck: self._alert_ack, c.AlertResolve: self._alert_resolve,
            c.RequestSupport: self._request_support,
        }

    # ----------------------------------------------------------------- loading
    def add_room(self, record: RoomRecord) -> Room:
        room = Room.from_record(record)
        self.rooms[room.id] = room
        return room

    def load_held(self, held: Iterable[HeldRecord]) -> None:
        for h in held:
            if h.room in self.rooms:
                self.rooms[h.room].held[h.id] = h

    def load_cases(self, cases: Iterable[CaseRecord]) -> None:
        for case in cases:
            self.cases[case.id] = case
            if case.status == "claimed" and case.private_room and case.counsellor:
                room = self.rooms.get(case.private_room)
                if room is not None:
                    room.case = case.id
                    room.allowed = {case.participant, case.counsellor}

    def load_alerts(self, alerts: Iterable[AlertRecord], fresh: bool = False) -> None:
        """Unresolved alerts from the store: the backlog survives a restart. ``fresh``:
        the store's list replaces ours (after missing other nodes' changes)."""
        self.alerts.load(alerts, fresh)

    @property
    def rules(self) -> RuleSet:
        """The running rule set (its version goes into every audit entry)."""
        return self.moderator.ruleset

    def set_rules(self, rules: RuleSet) -> None:
        """Swap the rule set atomically (hot reload); the learned heads stay."""
        self.moderator = self.moderator.with_rules(rules)

    def statistics(self) -> CoreStats:
        return CoreStats(
            connections=len(self.conns), rooms=len(self.rooms),
            held=sum(len(r.held) for r in self.rooms.values()),
            open_cases=sum(1 for k in self.cases.values() if k.status != "closed"))

    def waiting(self, now_ms: int) -> Waiting:
        """What waits for staff now (``Waiting``). Every profile of a known room and every
        urgency is listed, at 0 when nothing waits, so that an alert on it resolves."""
        profiles = {r.profile for r in self.rooms.values()}
        held = dict.fromkeys(profiles, (0, 0.0))
        for room in self.rooms.values():
            for h in room.held.values():
                count, oldest = held[room.profile]
                held[room.profile] = (count + 1, max(oldest, _seconds(now_ms, h.ts)))
        unclaimed = {(p, u.value): (0, 0.0) for p in profiles for u in c.Urgency}
        for case in self.cases.values():
            if case.status != "open":
                continue
            key = (self._profile(case.room), case.urgency)
            count, oldest = unclaimed.get(key, (0, 0.0))
            unclaimed[key] = (count + 1, max(oldest, _seconds(now_ms, case.ts)))
        return Waiting(held, unclaimed)

    def _profile(self, rid: RoomId) -> str:
        room = self.rooms.get(rid)
        return room.profile if room is not None else "unknown"

    # --------------------------------------------------------------- lifecycle
    def connect(self, conn_id: ConnId) -> None:
        lim = self.config.limits
        self.conns[conn_id] = Conn(conn_id, TokenBucket(lim.frame_rate, lim.frame_burst))

    def hello(self, conn_id: ConnId, ident: Identity, resume: Mapping[RoomId, int],
              now_ms: int, elsewhere: int = 0) -> list[Effect]:
        """Authenticate a connection whose token the shell has verified. ``elsewhere``:
        the same person's sockets on other nodes (the cap is per person, SEC-19)."""
        conn = self.conns.get(conn_id)
        if conn is None or conn.state is not State.AWAIT_HELLO:
            return [Close(conn_id, CloseCode.NO_HELLO, "hello was already given")]
        person = self._person(ident.id)
        if len(person.conns) + elsewhere >= self.config.limits.max_sockets_per_token:
            return [Emit(conn_id, ErrorEvent(ErrorCode.RATE_LIMITED,
                                             "Too many connections for this session.")),
                    Close(conn_id, CloseCode.POLICY, "too many sockets")]
        rooms: list[RoomId] = []
        if ident.role == Role.PARTICIPANT:
            assert ident.room is not None
            room = self.rooms.get(ident.room)
            if room is None or room.closed:
                return [Close(conn_id, CloseCode.BAD_TOKEN, "room no longer exists")]
            if ident.id in room.removed:
                return [Close(conn_id, CloseCode.REMOVED, "removed from this room")]
            rooms.append(room.id)
            rooms += [k.private_room for k in self.cases.values()
                      if k.participant == ident.id and k.status == "claimed" and k.private_room]
        else:
            for rid in resume:
                room = self.rooms.get(rid)
                if room is not None and self._staff_may_enter(ident, room):
                    rooms.append(rid)
        conn.state, conn.identity = State.READY, ident
        person.conns.add(conn_id)
        effects: list[Effect] = []
        for rid in rooms:
            effects += self._enter(conn, ident, self.rooms[rid], now_ms, announce=False)
        states = tuple(self.rooms[rid].state(now_ms) for rid in rooms)
        effects.insert(0, Welcome(conn_id, self._person_view(ident), states,
                                  {r: s for r, s in resume.items() if r in rooms}))
        for rid in rooms:
            effects.append(Publish(rid, self.rooms[rid].state(now_ms)))
            effects += self._held_for(conn, ident, self.rooms[rid])
        if ident.role in (Role.COUNSELLOR, Role.OPS):
            effects += [Emit(conn_id, self._case_view(k)) for k in self._case_queue()
                        if sees_case(ident.role, ident.id, k.status, k.counsellor)]
        # Issue 16: what was raised before this sign-in and is not yet resolved.
        effects += [Emit(conn_id, a) for a in self.alerts.backlog(
            lambda rid: rid in self.rooms and self._staff_may_enter(ident, self.rooms[rid]))]
        if resume:
            effects.append(Emit(conn_id, self._notice("welcome_back")))
        return effects

    def disconnect(self, conn_id: ConnId, now_ms: int) -> list[Effect]:
        conn = self.conns.pop(conn_id, None)
        if conn is None or conn.identity is None:
            return []
        conn.state = State.CLOSED
        person = self._people.get(conn.identity.id)
        if person is not None:
            person.conns.discard(conn_id)
        effects: list[Effect] = []
        for rid in sorted(conn.rooms):
            room = self.rooms.get(rid)
            member = room.members.get(conn.identity.id) if room else None
            if room is None or member is None:
                continue
            member.conns.discard(conn_id)
            if not member.conns:
                room.depart(conn.identity.id, now_ms)
                effects.append(Publish(rid, room.state(now_ms)))
        return effects

    # ------------------------------------------------------------------ frames
    def handle(self, conn_id: ConnId, command: c.Command, now_ms: int,
               over_budget: bool = False) -> list[Effect]:
        """Run one command from a connection; never raises for a peer's mistake.
        ``over_budget``: the shell found this send over the participant's budget shared
        by every node of a cluster (FL-03)."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return []
        if conn.state is not State.READY or conn.identity is None:
            return [Close(conn_id, CloseCode.NO_HELLO, "the first frame must be hello")]
        if not conn.frames.try_take(now_ms):
            return self._over_budget(conn, command)
        ident = conn.identity
        try:
            if isinstance(command, c.Hello):
                raise ChatError(ErrorCode.BAD_REQUEST, "This connection already said hello.")
            if not may(ident.role, type(command)):
                return [*self._denied_audit(ident, command, now_ms),
                        self._error(conn_id, command,
                                    ChatError(ErrorCode.FORBIDDEN, "Your role can't do that."))]
            if over_budget and isinstance(command, c.Send) and \
                    (ident.id, command.id) not in self._idem:  # a resend is answered as before
                return self._flooding(conn, ident, self._room_of(conn, command.room), command,
                                      now_ms)
            if type(command) in _STATE_CHANGING:
                return self._undoable(conn, ident, command, now_ms)
            return writes_last(self._handlers[type(command)](conn, ident, command, now_ms))
        except ChatError as e:
            return [self._error(conn_id, command, e)]

    def _denied_audit(self, ident: Identity, command: c.Command, now_ms: int
                      ) -> list[Effect]:
        """A command the role may not give: the window's first is audited ``denied``;
        the rest of the window is one ``denied_summary`` (issue 14: 100 forbidden staff
        commands were 100 rows), written when it ends (``tick``)."""
        room = getattr(command, "room", None)
        name = type(command).__name__.lower()
        effects = self._denied_summaries(now_ms)
        if self._denied.count((ident.id, room), "denied", name, now_ms):
            effects.append(Persist((AuditEntry(now_ms, room, ident.id, "denied", None,
                                               {"command": name,
                                                "role": ident.role.value}),)))
        return effects

    def _denied_summaries(self, now_ms: int, force: bool = False) -> list[Effect]:
        """``denied_summary`` entries of the windows that have ended (``force``: all)."""
        entries = []
        for s in self._denied.due(now_ms, force):
            if s.total > 1:  # a lone denial is already its own entry
                pid, room = cast(tuple[ParticipantId, RoomId | None], s.key)
                entries.append(AuditEntry(now_ms, room, pid, "denied_summary", None, {
                    "since": s.since, "denied": s.total, "commands": list(s.names)}))
        return [Persist(tuple(entries))] if entries else []

    def flush_audit(self, now_ms: int) -> list[Effect]:
        """Shutting down: every open summary window is written now."""
        return self._denied_summaries(now_ms, force=True)

    def _undoable(self, conn: Conn, ident: Identity, command: Any, now_ms: int
                  ) -> list[Effect]:
        """Run a staff command that changes a room, ready to be undone: the change is
        made now, but if its audit write fails the shell hands ``_RoomUndo`` back and the
        room is as it was (invariant 3: no staff action without its audit entry)."""
        room = self.rooms.get(command.room) if command.room in conn.rooms else None
        undo = _RoomUndo(room.id, room.record(), dict(room.held), dict(room.members)) \
            if room is not None else None
        effects = self._handlers[type(command)](conn, ident, command, now_ms)
        return [dataclasses.replace(e, conn=conn.id, undo=undo) if isinstance(e, Persist) else
                dataclasses.replace(e, actor=conn.id, undo=undo) if isinstance(e, Deliver) else e
                for e in effects]

    def undo(self, token: object) -> None:
        """The audit write of a staff command failed: put its room back as it was."""
        if self.alerts.undo(token) or not isinstance(token, _RoomUndo):
            return
        room = self.rooms.get(token.room)
        if room is None:
            return
        room.apply(token.record)
        room.held = dict(token.held)
        for pid, member in token.members.items():
            if pid not in room.members:  # a remove that did not happen
                room.members[pid] = member
                for cid in member.conns:
                    if cid in self.conns:
                        self.conns[cid].rooms.add(room.id)

    def reject_frame(self, conn_id: ConnId, error: ChatError, ref: str | None,
                     now_ms: int) -> list[Effect]:
        """A frame that did not parse: answer it, and count it against the frame budget."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return []
        if conn.state is not State.READY:
            return [Close(conn_id, CloseCode.NO_HELLO, "the first frame must be hello")]
        if not conn.frames.try_take(now_ms):
            return self._over_budget(conn, None)
        return [Emit(conn_id, ErrorEvent(error.code, error.message, ref))]

    def _over_budget(self, conn: Conn, command: c.Command | None) -> list[Effect]:
        """SEC-20: the first frame over budget is told `rate_limited`; the rest of the
        flood costs nothing but a count, and sustained flooding closes 1008."""
        conn.frame_strikes += 1
        if conn.frame_strikes >= self.config.limits.frame_close_after:
            return [Close(conn.id, CloseCode.POLICY, "too many frames")]
        if conn.frame_strikes > 1:
            return []
        error = ChatError(ErrorCode.RATE_LIMITED, "Slow down a little.")
        if command is None:
            return [Emit(conn.id, ErrorEvent(error.code, error.message))]
        return [self._error(conn.id, command, error)]

    def _error(self, conn_id: ConnId, command: c.Command, e: ChatError) -> Effect:
        if isinstance(command, c.Send) and e.code in _REJECT_CODES:
            return Emit(conn_id, Ack(command.id, "rejected", code=e.code.value,
                                     room=command.room))
        ref = command.id if isinstance(command, c.Send) else None
        return Emit(conn_id, ErrorEvent(e.code.value, e.message, ref))

    # ------------------------------------------------------------ room access
    def _room_of(self, conn: Conn, rid: RoomId) -> Room:
        """The room, if this connection is in it. Not being in it and the room not
        existing look the same from outside (SEC-10: nothing leaks)."""
        room = self.rooms.get(rid)
        if room is None or rid not in conn.rooms:
            raise ChatError(ErrorCode.FORBIDDEN, "You're not in that room.")
        return room

    def _member(self, room: Room, pid: ParticipantId) -> Person:
        """A member connected here or on another node (staff act on either alike)."""
        person = room.person(pid)
        if person is None:
            raise ChatError(ErrorCode.NOT_FOUND, "No such participant in this room.")
        return person

    def _staff_may_enter(self, ident: Identity, room: Room) -> bool:
        if room.closed:
            return False
        if room.kind == "case":
            return ident.role == Role.COUNSELLOR and ident.id in room.allowed
        return ident.role in (Role.FACILITATOR, Role.OPS)

    def _enter(self, conn: Conn, ident: Identity, room: Room, now_ms: int,
               announce: bool = True) -> list[Effect]:
        room.departed.pop(ident.id, None)  # back (a resume): known as before
        member = room.members.setdefault(ident.id, Member(self._person_view(ident)))
        member.conns.add(conn.id)
        conn.rooms.add(room.id)
        return [Publish(room.id, room.state(now_ms))] if announce else []

    def _held_for(self, conn: Conn, ident: Identity, room: Room) -> list[Effect]:
        if ident.role not in (Role.FACILITATOR, Role.OPS):
            return []
        return [Emit(conn.id, HeldEvent(room.id, self._held_view(h)))
                for h in sorted(room.held.values(), key=lambda h: h.ts)]

    def _join(self, conn: Conn, ident: Identity, cmd: c.Join, now_ms: int) -> list[Effect]:
        room = self.rooms.get(cmd.room)
        if room is None or not self._staff_may_enter(ident, room):
            raise ChatError(ErrorCode.FORBIDDEN, "You can't join that room.")
        was_paused = room.paused_for_participants()
        effects = self._enter(conn, ident, room, now_ms)
        # The room's state, then what was said recently, so staff arrive in context.
        effects[:0] = [Emit(conn.id, room.state(now_ms)), History(conn.id, room.id)]
        effects += self._held_for(conn, ident, room)
        if was_paused and not room.paused_for_participants():
            effects.append(Persist((AuditEntry(now_ms, room.id, ident.id, "join"),)))
        return effects

    def _leave(self, conn: Conn, ident: Identity, cmd: c.Leave, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        conn.rooms.discard(room.id)
        member = room.members.get(ident.id)
        if member is not None:
            member.conns.discard(conn.id)
            if not member.conns:
                room.depart(ident.id, now_ms)
                self.context.forget(ident.id)  # nothing of a sender who left is kept
        return [Publish(room.id, room.state(now_ms))]

    # -------------------------------------------------------------------- send
    def _send(self, conn: Conn, ident: Identity, cmd: c.Send, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        key = (ident.id, cmd.id)
        seen = self._idem.get(key)
        if isinstance(seen, Ack):
            return [Emit(conn.id, seen)]  # PROTOCOL.md: the original outcome, once in the room
        if isinstance(seen, list):
            seen.append(conn.id)  # in flight: answered when it completes
            return []
        text = cmd.text.strip()
        if not text:
            raise ChatError(ErrorCode.BAD_REQUEST, "A message can't be empty.")
        if len(text) > self.config.limits.max_text_chars:
            raise ChatError(ErrorCode.TOO_LARGE, "That message is too long to send.")
        staff = ident.role in STAFF
        person = self._person(ident.id)
        effects: list[Effect] = []
        if not staff:
            if room.is_muted(ident.id, now_ms):
                raise ChatError(ErrorCode.MUTED, "You're muted for now.")
            if not person.window.try_take(now_ms):
                return self._flooding(conn, ident, room, cmd, now_ms)
            person.strikes = 0
            last = room.last_send.get(ident.id)
            # 0 <= elapsed: a clock stepping back never extends slow mode (F-14).
            if room.slow_mode_s and last is not None and \
                    0 <= now_ms - last < room.slow_mode_s * 1000:
                raise ChatError(ErrorCode.SLOW_MODE, "The room is in slow mode.")
        verdict, failed = self._moderate(text, ident.role, room)
        context = _InContext()
        if not staff and not failed:
            verdict, context = self._in_context(room, ident.id, text, verdict, now_ms)
        if failed:
            effects.append(OpsAlert("moderation_failed", f"rules {self.rules.version}"))
        # A paused room still lets a young person at risk reach staff: risk is held and
        # alerted; anything else waits until the room resumes.
        if not staff and room.paused_for_participants() and verdict.action < Action.HOLD \
                and not verdict.signpost:
            raise ChatError(ErrorCode.PAUSED, "The room is paused for a moment.")
        if not staff:
            room.last_send[ident.id] = now_ms
            self._streak(person, now_ms)
        if verdict.signpost:
            # DESIGN.md invariant 2: crisis support at once, before anything durable.
            effects += [Emit(conn.id, self._notice("signpost", room.id, resources=True)),
                        Measure(Measurement.SIGNPOSTED, room.profile)]
        audit = AuditEntry(now_ms, room.id, ident.id, f"message.{verdict.action.label}",
                           cmd.id, {**self._verdict_detail(verdict, failed),
                                    **context.detail()}, verdict.version,
                           # Delivered text lives in the message record; what peers never
                           # saw is kept here, for the retention period only.
                           text if verdict.action >= Action.HOLD else None)
        sender = self._person_view(ident)
        if verdict.action <= Action.MASK:
            self._idem_put(key, [conn.id])
            self._delivering(room.id, ident.id, cmd.id)
            if not staff:
                self.context.add(room.id, ident.id, cmd.id, text, now_ms)
            effects.append(Deliver(room.id, sender, cmd.id, verdict.text_out, now_ms, audit,
                                   conn=conn.id, ref=cmd.id,
                                   masked=verdict.action == Action.MASK))
            effects += self._alerts(room, sender, verdict, text, cmd.id, None, now_ms)
            return effects
        if verdict.action == Action.HOLD:
            held = HeldRecord(HeldId(self.ids.new("h")), room.id, sender, cmd.id, text,
                              tuple((h.rule.id, h.rule.category) for h in verdict.hits), now_ms,
                              approvable=not (set(verdict.categories) & HIDDEN_CATEGORIES))
            ack = Ack(cmd.id, "held", held=held.id, room=room.id,
                      notice=verdict.notice or self._text("held"))
            room.held[held.id] = held
            self._idem_put(key, ack)
            effects += [Persist((held, audit), ref=cmd.id, conn=conn.id), Emit(conn.id, ack),
                        Publish(room.id, HeldEvent(room.id, self._held_view(held)),
                                Audience.STAFF)]
            effects += self._alerts(room, sender, verdict, text, cmd.id, held.id, now_ms)
            effects += self._context_effects(room, sender, context, now_ms, held.id, cmd.id)
            return effects
        ack = Ack(cmd.id, "blocked", room=room.id,
                  notice=f"{verdict.notice or self._text('blocked')} {self._text('complaints')}")
        self._idem_put(key, ack)
        effects += [Persist((audit,), ref=cmd.id, conn=conn.id), Emit(conn.id, ack)]
        effects += self._alerts(room, sender, verdict, text, cmd.id, None, now_ms)
        effects += self._context_effects(room, sender, context, now_ms, None, cmd.id)
        return effects

    def _moderate(self, text: str, role: Role, room: Room) -> tuple[Verdict, bool]:
        disabled = self.config.moderation.profiles.get(room.profile, frozenset())
        try:
            return self.moderator.check(text, role.value, disabled, room.profile), False
        except Exception:
            return Verdict(Action.HOLD, text, (), (), (), False, None, "", "", "error"), True

    def _in_context(self, room: Room, pid: ParticipantId, text: str, verdict: Verdict,
                    now_ms: int) -> tuple[Verdict, _InContext]:
        """Issue 13 § 2, a participant's message in its conversation: the sender's
        recent messages and this one checked as one text by the rules (a detail split
        over several messages is held or blocked as its rule says, and the fragments it
        covers are redacted), and their grooming signals added up."""
        joined = self.context.joined(room.id, pid, text, now_ms)
        split: list[Hit] = []
        fragments: list[Fragment] = []
        carried = {h.rule.signal for h in (*verdict.hits, *verdict.cleared) if h.rule.signal}
        if joined is not None:
            disabled = self.config.moderation.profiles.get(room.profile, frozenset())
            try:
                whole = self.rules.check(joined.text, Role.PARTICIPANT.value, disabled)
            except Exception:  # the message's own verdict (same rules) already stands
                whole = None
            supportive = bool(verdict.cleared)  # the model read this line as support
            for hit in whole.hits if whole is not None else ():
                covered = joined.crossing(hit.spans)
                if not covered:
                    continue
                if hit.rule.signal:
                    carried.add(hit.rule.signal)
                if hit.rule.action >= Action.HOLD and \
                        not (supportive and hit.rule.model_may_clear):
                    split.append(Hit(hit.rule, (0, len(text)), ((0, len(text)),),
                                     hit.evasive))
                    fragments += [f for f in covered if f not in fragments]
        if verdict.scores.get("grooming", 0.0) >= self.config.moderation.grooming_score:
            carried.add(MODEL_SIGNAL)
        grooming = self.context.grooming(pid, carried, now_ms)
        extra = list(split)
        if grooming.reached or grooming.after:
            extra.append(Hit(_GROOMING_RULE, (0, len(text)), ((0, len(text)),), False))
        if not extra:
            return verdict, _InContext(grooming=grooming)
        acting = max(h.rule.action for h in extra)
        if acting > verdict.action:
            notice = next((h.rule.notice for h in extra if h.rule.notice), None) \
                or (self._text("held") if acting == Action.HOLD else None)
            verdict = dataclasses.replace(verdict, action=acting, text_out=text,
                                          notice=notice, stage="context")
        verdict = dataclasses.replace(
            verdict, hits=verdict.hits + tuple(extra),
            signpost=verdict.signpost or any(h.rule.signpost for h in split))
        return verdict, _InContext(tuple(split), tuple(fragments),
                                   joined.text if joined is not None else "", grooming)

    def _context_effects(self, room: Room, sender: Person, ctx: _InContext,
                         now_ms: int, held: HeldId | None, msg_id: MessageId
                         ) -> list[Effect]:
        """Alerts for what the conversation showed, and redaction of a split detail's
        fragments for everyone (as the staff ``redact`` command does, audited
        ``message.redacted_split``)."""
        effects: list[Effect] = []
        if ctx.split:
            hidden = {h.rule.category for h in ctx.split} & HIDDEN_CATEGORIES
            n = len(ctx.fragments) + 1
            excerpt = f"(split over {n} messages; not shown: {', '.join(sorted(hidden))} " \
                "detail)" if hidden else f"(split over {n} messages) " + \
                ctx.joined[:EXCERPT_CHARS] + ("…" if len(ctx.joined) > EXCERPT_CHARS else "")
            rules = tuple(RuleRef(h.rule.id, h.rule.category) for h in ctx.split)
            kinds = sorted({h.rule.alert or h.rule.category for h in ctx.split})
            for kind in kinds:
                effects += self._raise(room, kind, sender, excerpt, rules, now_ms, held=held,
                                       message=msg_id)
            because = [h.rule.id for h in ctx.split]
            effects += self._redact_split(
                room, sender.id, self.context.to_redact(ctx.fragments, now_ms, because),
                because, now_ms)
        g = ctx.grooming
        if g is not None and (g.reached or g.after):
            window = self.config.moderation.grooming_window_s // 60
            excerpt = (f"Grooming signals together within {window} min: "
                       f"{', '.join(g.signals)}." if g.reached else
                       "Held: the line after a grooming alert.")
            effects += self._raise(
                room, "grooming", sender, excerpt,
                (RuleRef(_GROOMING_RULE.id, _GROOMING_RULE.category),), now_ms, held=held,
                message=msg_id)
        return effects

    def _redact_split(self, room: Room, pid: ParticipantId, seqs: tuple[int, ...],
                      rules: list[str], now_ms: int) -> list[Effect]:
        if not seqs:
            return []
        gone = set(seqs)
        for msg in [m for m in room.recent if m.seq in gone]:
            room.recent.remove(msg)
        ops: list[Any] = [RedactRecord(room.id, seq) for seq in seqs]
        ops.append(AuditEntry(now_ms, room.id, "system", "message.redacted_split", pid,
                              {"seqs": list(seqs), "rules": rules}, self.rules.version))
        return [Persist(tuple(ops), then=_SplitRedacted(room.id, pid, seqs)),
                *(Publish(room.id, Redacted(room.id, seq)) for seq in seqs)]

    def _verdict_detail(self, v: Verdict, failed: bool) -> dict[str, object]:
        detail: dict[str, object] = {
            "rules": [h.rule.id for h in v.hits],
            "shadow": [h.rule.id for h in v.shadow],
            **describe(v),
        }
        if failed:
            detail["error"] = "moderation failed: held (fail closed)"
        return detail

    def _alerts(self, room: Room, sender: Person, v: Verdict, text: str, msg_id: MessageId,
                held: HeldId | None, now_ms: int) -> list[Effect]:
        if not v.alerts:
            return []
        hidden = set(v.categories) & HIDDEN_CATEGORIES
        excerpt = f"(not shown: {', '.join(sorted(hidden))} detail)" if hidden else \
            text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")
        rules = tuple(RuleRef(h.rule.id, h.rule.category) for h in v.hits)
        effects: list[Effect] = []
        for kind in v.alerts:
            effects += self._raise(room, kind, sender, excerpt, rules, now_ms, held=held,
                                   message=msg_id)
        return effects

    # ------------------------------------------------------------------ alerts
    def _raise(self, room: Room, kind: str, person: Person, excerpt: str,
               rules: tuple[RuleRef, ...], now_ms: int, *, seq: int | None = None,
               held: HeldId | None = None, message: MessageId | None = None) -> list[Effect]:
        """Raise an alert: published at once (invariant 2), stored for the backlog."""
        if kind not in STORED_KINDS:
            return [Publish(room.id, Alert(room.id, kind, person.id, excerpt, rules, seq, held),
                            Audience.STAFF)]
        record, coalesced = self.alerts.raise_alert(room.id, kind, person, excerpt, rules,
                                                    now_ms, seq=seq, held=held,
                                                    message=message)
        if coalesced:
            # Counted into the open alert (issue 14): facilitators see its count move;
            # nothing new sounds. A first write still queued writes this after it.
            return [audience(room.kind, room.id, self.alerts.repeated(record)),
                    *([] if self.alerts.pending_write(record.id) else [Persist((record,))])]
        # The write goes last in its batch (``_alert_writes_last``): a store failure
        # then costs the backlog entry, never the live alert or what follows it.
        return [audience(room.kind, room.id, self.alerts.view(record)),
                Persist((record,), then=AlertWritten(record))]

    def _alert_ack(self, conn: Conn, ident: Identity, cmd: c.AlertAck, now_ms: int
                   ) -> list[Effect]:
        room = self._room_of(conn, cmd.room)  # a facilitator of another room: forbidden
        before, after = self.alerts.acknowledge(room.id, cmd.alert, self._person_view(ident),
                                                now_ms)
        # After the acknowledgement's write (decided's effects), like every Measure.
        return [*decided(conn.id, ident.id, room.kind, before, after, now_ms,
                         self.rules.version),
                Measure(Measurement.ALERT_ACKNOWLEDGED, room.profile,
                        _seconds(now_ms, before.ts))]

    def _alert_resolve(self, conn: Conn, ident: Identity, cmd: c.AlertResolve, now_ms: int
                       ) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        before, after = self.alerts.resolve(room.id, cmd.alert, self._person_view(ident),
                                            now_ms)
        return decided(conn.id, ident.id, room.kind, before, after, now_ms, self.rules.version)

    def _flooding(self, conn: Conn, ident: Identity, room: Room, cmd: c.Send,
                  now_ms: int) -> list[Effect]:
        person = self._people[ident.id]
        person.strikes += 1
        effects: list[Effect] = [Emit(conn.id, Ack(cmd.id, "rejected", room=room.id,
                                                   code=ErrorCode.RATE_LIMITED.value))]
        lim = self.config.limits
        if person.strikes >= lim.flood_alert_after and not person.flood_alerted:
            person.flood_alerted = True
            effects += [
                Persist((AuditEntry(now_ms, room.id, ident.id, "flood", ident.id,
                                    {"strikes": person.strikes}),)),
                *self._raise(room, "flood", self._person_view(ident),
                             "Sending very fast (rate limited).", (), now_ms)]
        if person.strikes >= lim.flood_close_after:
            person.strikes = 0
            effects.append(Close(conn.id, CloseCode.POLICY, "flooding"))
        return effects

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
            effects += [Persist((r,)) for r in self.alerts.delivered(pid, msg_id, ack.seq)]
        # A fragment of a split detail caught before its seq was known: redact it now.
        late = self.context.delivered(pid, msg_id, ack.seq if ack is not None else None)
        room = self.rooms.get(ack.room) if ack is not None and ack.room else None
        if late is not None and late.seq is not None and late.redact is not None and \
                room is not None:
            effects += self._redact_split(room, pid, (late.seq,), list(late.because),
                                          late.redact)
        if not isinstance(waiters, list):
            return effects
        out = ack or Ack(msg_id, "rejected", code=ErrorCode.INTERNAL.value)
        return effects + [Emit(w, out) for w in waiters[1:] if w in self.conns]

    def abort_send(self, conn_id: ConnId, msg_id: MessageId) -> None:
        """The durable write behind a held or blocked send failed: forget its outcome and
        its held record, so a retry with the same id is decided and audited afresh."""
        conn = self.conns.get(conn_id)
        if conn is None or conn.identity is None:
            return
        pid = conn.identity.id
        self._idem.pop((pid, msg_id), None)
        for room in self.rooms.values():
            for hid in [h.id for h in room.held.values()
                        if h.sender.id == pid and h.msg_id == msg_id]:
                del room.held[hid]

    def _idem_put(self, key: tuple[ParticipantId, MessageId], value: Ack | list[ConnId]) -> None:
        self._idem[key] = value
        while len(self._idem) > self.config.limits.idempotency_keys:
            self._idem.popitem(last=False)

    # ----------------------------------------------------------- delivery side
    def observe(self, msg: Message) -> None:
        """A message was delivered to the room (from any node): remember it."""
        room = self.rooms.get(msg.room)
        if room is None:
            return
        key = (msg.room, msg.sender.id, msg.id)
        here = key in self._sent_here
        self._sent_here.pop(key, None)
        room.recent.append(msg)
        if msg.sender.role == Role.PARTICIPANT:
            if room.unanswered is None:
                room.unanswered, room.unanswered_here = msg, here
            elif room.unanswered.sender.id != msg.sender.id:
                room.unanswered = None  # someone else spoke: answered
        else:
            room.unanswered = None

    def _delivering(self, rid: RoomId, pid: ParticipantId, msg_id: MessageId) -> None:
        self._sent_here[(rid, pid, msg_id)] = None
        while len(self._sent_here) > self.config.limits.idempotency_keys:
            self._sent_here.popitem(last=False)  # never observed (its write failed)

    def recipients(self, room_id: RoomId, event: Event, audience: Audience,
                   target: ParticipantId | None) -> list[ConnId]:
        """Local connections that get a published event (encoded once for all of them)."""
        if room_id == ALL_ROOMS:
            kind = event.kind if isinstance(event, Encoded) else event.TYPE
            if kind == CaseView.TYPE and (target is not None or
                                                audience == Audience.CASE_TAKEN):
                # A claimed or closed case (``_publish_case``): the one rule decides who
                # sees it in full; the other counsellors get the brief.
                full = audience == Audience.COUNSELLORS
                return [cid for cid, conn in self.conns.items()
                        if (i := conn.identity) is not None and
                        i.role in (Role.COUNSELLOR, Role.OPS) and
                        sees_case(i.role, i.id, "claimed", target) == full]
            want = {Audience.COUNSELLORS: {Role.COUNSELLOR, Role.OPS},
                    Audience.FACILITATORS: {Role.FACILITATOR, Role.OPS}}.get(audience, set())
            return [cid for cid, conn in self.conns.items()
                    if conn.identity is not None and conn.identity.role in want]
        room = self.rooms.get(room_id)
        if room is None:
            return []
        # Per published event: no sorting, fan-out order does not matter.
        if audience == Audience.STAFF:
            return list(room.staff_conns())
        if audience == Audience.PARTICIPANT:
            member = room.members.get(target) if target else None
            return list(member.conns) if member else []
        if isinstance(event, Message):
            sender = event.sender.id
            return [cid for pid, m in room.members.items()
                    if sender not in room.ignores.get(pid, ()) for cid in m.conns]
        return list(room.conns())

    # ------------------------------------------------------ peer safety tools
    def _report(self, conn: Conn, ident: Identity, cmd: c.Report, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        msg = next((m for m in room.recent if m.seq == cmd.seq), None)
        if msg is None:
            raise ChatError(ErrorCode.NOT_FOUND, "That message isn't available to report.")
        person = self._person(ident.id)
        if not person.reports.try_take(now_ms):
            # Issue 14: one participant's report spam raised 267 alerts in 5 s.
            raise ChatError(ErrorCode.RATE_LIMITED, "You've reported a lot just now. A "
                                                    "facilitator has your reports.")
        reason, masked, signpost = self._free_text(cmd.reason)
        detail: dict[str, object] = {"seq": cmd.seq, "reason": reason}
        if masked:
            detail["reason_masked"] = masked
        effects: list[Effect] = []
        if signpost and ident.role == Role.PARTICIPANT:
            # DESIGN.md invariant 2, wherever the young person writes it.
            effects += [Emit(conn.id, self._notice("signpost", room.id, resources=True)),
                        Measure(Measurement.SIGNPOSTED, room.profile)]
        effects += [
            Persist((AuditEntry(now_ms, room.id, ident.id, "report", msg.sender.id, detail,
                                self.rules.version, cmd.reason if masked else None),)),
            Emit(conn.id, self._notice("report_received", room.id)),
            *self._raise(room, "report", msg.sender, msg.text[:EXCERPT_CHARS], (), now_ms,
                         seq=msg.seq, message=msg.id),
        ]
        return effects

    def _free_text(self, text: str) -> tuple[str, list[str], bool]:
        """Issue 13 § 4: a reason or note that reaches another person (staff, the audit
        log, a counsellor's case) is read by the same rules as a participant's message.
        What a rule masks or blocks (contact details, method detail, abuse) is masked;
        what it holds (risk, grooming) stays readable, for staff must understand it.
        Nothing is refused: a report or an escalation always goes through.

        Returns:
            The text to store and show, the ids of the rules that masked it, and whether
            it discloses risk (the writer is shown crisis support).
        """
        if not text:
            return text, [], False
        try:
            v = self.rules.check(text, Role.PARTICIPANT.value)
        except Exception:  # fail closed: nothing unread travels
            return MASK_CHAR * len(text), ["error"], False
        acting = [h for h in v.hits if h.rule.action in (Action.MASK, Action.BLOCK)]
        chars = list(text)
        for h in acting:
            for start, end in h.spans:
                if h.rule.action == Action.BLOCK:
                    # A blocked detail may follow what named it ("add me on snap" +
                    # the handle): the next word goes too.
                    m = _NEXT_WORD.match(text, end)
                    end = m.end() if m else end
                chars[start:end] = MASK_CHAR * (end - start)
        return "".join(chars), sorted({h.rule.id for h in acting}), v.signpost

    def _ignore(self, conn: Conn, ident: Identity, cmd: c.Ignore, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        target = self._member(room, cmd.participant)
        if target.role != Role.PARTICIPANT:
            raise ChatError(ErrorCode.FORBIDDEN, "Staff can't be ignored.")
        room.ignores.setdefault(ident.id, set()).add(cmd.participant)
        return [Emit(conn.id, room.state(now_ms))]

    def _unignore(self, conn: Conn, ident: Identity, cmd: c.Unignore, now_ms: int
                  ) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        room.ignores.get(ident.id, set()).discard(cmd.participant)
        return [Emit(conn.id, room.state(now_ms))]

    # ------------------------------------------------------------ facilitation
    def _staff_action(self, room: Room, ident: Identity, action: str, now_ms: int,
                      target: str | None = None, **detail: object) -> Persist:
        original = None
        if isinstance(detail.get("reason"), str):
            reason, masked, _ = self._free_text(str(detail["reason"]))
            if masked:
                original = str(detail["reason"])
                detail = {**detail, "reason": reason, "reason_masked": masked}
        return Persist((room.record(), AuditEntry(now_ms, room.id, ident.id, action, target,
                                                  detail, self.rules.version, original)))

    def _participant(self, room: Room, pid: ParticipantId) -> Person:
        person = self._member(room, pid)
        if person.role != Role.PARTICIPANT:
            raise ChatError(ErrorCode.FORBIDDEN, "That's a member of staff.")
        return person

    def _mute(self, conn: Conn, ident: Identity, cmd: c.Mute, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        self._participant(room, cmd.participant)
        until = now_ms + cmd.minutes * 60_000 if cmd.minutes else None
        room.mutes[cmd.participant] = until
        return [self._staff_action(room, ident, "mute", now_ms, cmd.participant,
                                   minutes=cmd.minutes, reason=cmd.reason),
                Publish(room.id, self._notice("muted", room.id), Audience.PARTICIPANT,
                        cmd.participant),
                Publish(room.id, room.state(now_ms))]

    def _unmute(self, conn: Conn, ident: Identity, cmd: c.Unmute, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        self._member(room, cmd.participant)
        room.mutes.pop(cmd.participant, None)
        return [self._staff_action(room, ident, "unmute", now_ms, cmd.participant),
                Publish(room.id, self._notice("unmuted", room.id), Audience.PARTICIPANT,
                        cmd.participant),
                Publish(room.id, room.state(now_ms))]

    def _pause(self, conn: Conn, ident: Identity, cmd: c.Pause, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        room.paused = True
        return [self._staff_action(room, ident, "pause", now_ms, reason=cmd.reason),
                Publish(room.id, room.state(now_ms)),
                Publish(room.id, self._notice("paused", room.id))]

    def _resume(self, conn: Conn, ident: Identity, cmd: c.Resume, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        room.paused = False
        return [self._staff_action(room, ident, "resume", now_ms),
                Publish(room.id, room.state(now_ms))]

    def _slow_mode(self, conn: Conn, ident: Identity, cmd: c.SlowMode, now_ms: int
                   ) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        room.slow_mode_s = cmd.seconds
        return [self._staff_action(room, ident, "slow_mode", now_ms, seconds=cmd.seconds),
                Publish(room.id, room.state(now_ms))]

    def _remove(self, conn: Conn, ident: Identity, cmd: c.Remove, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        self._participant(room, cmd.participant)
        room.remove(cmd.participant)  # the identity and its name, for the room's life
        effects: list[Effect] = [
            self._staff_action(room, ident, "remove", now_ms, cmd.participant,
                               reason=cmd.reason)]
        effects += self._evict(room, cmd.participant)
        # Gone from the list here at once; the node holding them says so too.
        room.remote = {n: tuple(p for p in g if p.id != cmd.participant)
                       for n, g in room.remote.items()}
        effects.append(Publish(room.id, room.state(now_ms)))
        return effects

    def _evict(self, room: Room, pid: ParticipantId) -> list[Effect]:
        """Take a removed participant's local connections out of the room. Told directly
        on those connections: by the time a published event is fanned out, they are no
        longer members."""
        member = room.members.pop(pid, None)
        room.departed.pop(pid, None)
        self.context.forget(pid)
        if member is None:
            return []
        notice = self._notice("removed", room.id)
        effects: list[Effect] = [Emit(cid, notice) for cid in sorted(member.conns)]
        for cid in sorted(member.conns):
            their = self.conns.get(cid)
            if their is not None:
                their.rooms.discard(room.id)
                if not their.rooms:
                    effects.append(Close(cid, CloseCode.REMOVED, "removed from the room"))
        return effects

    def _redact(self, conn: Conn, ident: Identity, cmd: c.Redact, now_ms: int) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        msg = next((m for m in room.recent if m.seq == cmd.seq), None)
        if msg is not None:
            room.recent.remove(msg)
        reason, masked, _ = self._free_text(cmd.reason)
        return [Persist((RedactRecord(room.id, cmd.seq),
                         AuditEntry(now_ms, room.id, ident.id, "redact",
                                    msg.sender.id if msg else None,
                                    {"seq": cmd.seq, "reason": reason,
                                     **({"reason_masked": masked} if masked else {})},
                                    self.rules.version, cmd.reason if masked else None))),
                Publish(room.id, Redacted(room.id, cmd.seq))]

    def _approve(self, conn: Conn, ident: Identity, cmd: c.Approve, now_ms: int
                 ) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        held = room.held.get(cmd.held)
        if held is None or not held.approvable:
            # SG-08: method detail can never be approved; it looks like any unknown id.
            raise ChatError(ErrorCode.NOT_FOUND, "No such held message.")
        del room.held[held.id]
        audit = AuditEntry(now_ms, room.id, ident.id, "approve", held.sender.id,
                           {"held": held.id, "rules": [r for r, _ in held.rules]},
                           self.rules.version)
        self._delivering(room.id, held.sender.id, held.msg_id)
        # One transaction: decided, delivered and audited together, or none of them.
        return [Deliver(room.id, held.sender, held.msg_id, held.text, now_ms, audit,
                        also=(HeldDecided(held.id),)),
                Measure(Measurement.HELD_DECIDED, room.profile, _seconds(now_ms, held.ts),
                        "approve")]

    def _reject_held(self, conn: Conn, ident: Identity, cmd: c.Reject, now_ms: int
                     ) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        held = room.held.pop(cmd.held, None)
        if held is None:
            raise ChatError(ErrorCode.NOT_FOUND, "No such held message.")
        reason, masked, _ = self._free_text(cmd.reason)
        return [Persist((HeldDecided(held.id),
                         AuditEntry(now_ms, room.id, ident.id, "reject", held.sender.id,
                                    {"held": held.id, "reason": reason,
                                     **({"reason_masked": masked} if masked else {})},
                                    self.rules.version, cmd.reason if masked else None))),
                Measure(Measurement.HELD_DECIDED, room.profile, _seconds(now_ms, held.ts),
                        "reject"),
                Publish(room.id, Notice("held_rejected", self._text("held_rejected"), room.id,
                                        held=held.id), Audience.PARTICIPANT, held.sender.id)]

    # ------------------------------------------------------------------- cases
    def _case_queue(self) -> list[CaseRecord]:
        rank = {"emergency": 0, "urgent": 1, "routine": 2}
        return sorted((k for k in self.cases.values() if k.status != "closed"),
                      key=lambda k: (rank.get(k.urgency, 3), k.ts))

    def _publish_case(self, case: CaseRecord) -> list[Effect]:
        """A case that left the queue: in full to its counsellor (and ops), as a brief
        "taken" to every other counsellor (``scopes.sees_case``: one rule on every path).
        The counsellor travels as the envelope's ``target``, so every node applies the
        same rule to the already-encoded frame."""
        view = self._case_view(case)
        return [Publish(ALL_ROOMS, view, Audience.COUNSELLORS, case.counsellor),
                Publish(ALL_ROOMS, view.brief_view(), Audience.CASE_TAKEN, case.counsellor)]

    def _case_view(self, k: CaseRecord) -> CaseView:
        return CaseView(k.id, k.room, k.participant, k.urgency, k.status, k.note, k.ts,
                        k.counsellor, k.private_room, k.context, k.participant_name,
                        tuple(self._held_view(h) for h in k.held))

    def _open_case(self, room: Room, person: Person, urgency: c.Urgency, note: str,
                   opened_by: ParticipantId, now_ms: int) -> CaseRecord:
        context = tuple(list(room.recent)[-self.config.rooms.case_context:])
        # Issue 16: a disclosure still waiting in the review queue is part of what the
        # counsellor must know; the room's recent messages alone would leave it out.
        held = tuple(sorted((h for h in room.held.values() if h.sender.id == person.id),
                            key=lambda h: h.ts))
        case = CaseRecord(CaseId(self.ids.new("case")), room.id, person.id, person.name,
                          urgency.value, "open", note, now_ms, opened_by, context=context,
                          held=held)
        self.cases[case.id] = case
        return case

    def _escalate(self, conn: Conn, ident: Identity, cmd: c.Escalate, now_ms: int
                  ) -> list[Effect]:
        room = self._room_of(conn, cmd.room)
        person = self._participant(room, cmd.participant)
        note, masked, _ = self._free_text(cmd.note)  # the counsellor reads it
        case = self._open_case(room, person, cmd.urgency, note, ident.id, now_ms)
        effects: list[Effect] = [
            Persist((case, AuditEntry(now_ms, room.id, ident.id, "escalate", cmd.participant,
                                      {"case": case.id, "urgency": case.urgency,
                                       "note": note,
                                       **({"note_masked": masked} if masked else {})},
                                      self.rules.version, cmd.note if masked else None))),
            Publish(ALL_ROOMS, self._case_view(case), Audience.COUNSELLORS),
            # PROTOCOL.md: `escalated` carries `room` only once a counsellor claims it.
            Publish(room.id, self._notice("escalated", None, case=case.id),
                    Audience.PARTICIPANT, cmd.participant)]
        if cmd.urgency == c.Urgency.EMERGENCY:
            effects.append(Emit(conn.id, Notice("emergency_procedure",
                                                self.config.emergency_procedure, room.id,
                                                case=case.id)))
        return effects

    def _request_support(self, conn: Conn, ident: Identity, cmd: c.RequestSupport,
                         now_ms: int) -> list[Effect]:
        """Issue 16: a young person asks for a one-to-one themselves. The case's urgency
        follows the risk signals already seen for them in this room; a repeat while a
        case is open opens nothing (``support_pending``)."""
        room = self._room_of(conn, cmd.room)
        if room.kind != "group":
            raise ChatError(ErrorCode.FORBIDDEN, "You're already talking with a counsellor.")
        if len(cmd.note) > self.config.rooms.support_note_chars:
            raise ChatError(ErrorCode.TOO_LARGE, "That note is too long; a few words is plenty.")
        mine = [k for k in self._case_queue() if k.participant == ident.id and k.room == room.id]
        if mine:
            case = mine[0]
            return [Emit(conn.id, Notice("support_pending", self._text("support_pending"),
                                         case.private_room or room.id, case=case.id))]
        note, masked, signpost = self._free_text(cmd.note)
        urgency = self.alerts.urgency(room.id, ident.id)
        effects: list[Effect] = []
        sender = self._person_view(ident)
        if signpost:
            # DESIGN.md invariant 2, wherever the young person writes it.
            effects.append(Emit(conn.id, self._notice("signpost", room.id, resources=True)))
            effects += self._raise(room, "risk", sender, note[:EXCERPT_CHARS], (), now_ms)
            urgency = min(urgency, c.Urgency.URGENT, key=lambda u: u.rank)
        case = self._open_case(room, sender, urgency, note, ident.id, now_ms)
        detail: dict[str, object] = {"case": case.id, "urgency": case.urgency, "note": note,
                                     "signals": self.alerts.signals(room.id, ident.id)}
        if masked:
            detail["note_masked"] = masked
        return [
            *effects,
            Persist((case, AuditEntry(now_ms, room.id, ident.id, "request_support", ident.id,
                                      detail, self.rules.version,
                                      cmd.note if masked else None)), conn=conn.id),
            Publish(ALL_ROOMS, self._case_view(case), Audience.COUNSELLORS),
            Emit(conn.id, self._notice("support_requested", room.id, case=case.id))]

    def _claim(self, conn: Conn, ident: Identity, cmd: c.Claim, now_ms: int) -> list[Effect]:
        """Write the claim first; nothing changes here until it is in the store, where a
        case can be claimed once (two counsellors on two nodes: one wins, the other is
        told ``conflict``)."""
        case = self.cases.get(cmd.case)
        if case is None or case.status != "open":
            raise ChatError(ErrorCode.NOT_FOUND, "That case isn't open.")
        private = RoomId(f"{case.id}-room")
        case = CaseRecord(**{**_fields(case), "status": "claimed", "counsellor": ident.id,
                             "private_room": private})
        room = Room(private, "One-to-one with a counsellor", (), kind="case",
                    require_facilitator=False)
        return [Persist((room.record(), case,
                         AuditEntry(now_ms, case.room, ident.id, "claim", case.participant,
                                    {"case": case.id, "private_room": private},
                                    self.rules.version)),
                        conn=conn.id, then=_ClaimWritten(conn.id, case))]

    def complete(self, token: object, now_ms: int) -> list[Effect]:
        """A ``Persist`` with ``then`` was written: carry out what it recorded."""
        if isinstance(token, _ClaimWritten):
            return self._claimed(token, now_ms)
        if isinstance(token, _SplitRedacted):
            self.context.redacted(token.sender, token.seqs)
        if isinstance(token, AlertWritten):
            again = self.alerts.written(token)
            return [Persist((again,))] if again is not None else []
        return []

    def _claimed(self, token: _ClaimWritten, now_ms: int) -> list[Effect]:
        case = token.case
        assert case.private_room is not None
        assert case.counsellor is not None
        self.cases[case.id] = case
        room = self.rooms.get(case.private_room)
        if room is None:
            room = self.rooms[case.private_room] = Room(
                case.private_room, "One-to-one with a counsellor", (), kind="case",
                require_facilitator=False)
        room.case, room.allowed = case.id, {case.participant, case.counsellor}
        effects: list[Effect] = []
        conn = self.conns.get(token.conn)
        if conn is not None and conn.identity is not None:
            effects += self._enter(conn, conn.identity, room, now_ms, announce=False)
        person = self._people.get(case.participant)
        for cid in sorted(person.conns if person else ()):
            their = self.conns.get(cid)
            if their is not None and their.identity is not None:
                self._enter(their, their.identity, room, now_ms, announce=False)
        if conn is not None:
            effects.append(Emit(conn.id, room.state(now_ms)))
        effects += [
            # Only the node whose claim was written gets here: counted once.
            Measure(Measurement.CASE_CLAIMED, self._profile(case.room),
                    _seconds(now_ms, case.ts), case.urgency),
            Publish(case.room, self._notice("escalated", room.id, case=case.id),
                    Audience.PARTICIPANT, case.participant),
            Publish(room.id, room.state(now_ms)),
            *self._publish_case(case)]
        return effects

    def _close_case(self, conn: Conn, ident: Identity, cmd: c.CloseCase, now_ms: int
                    ) -> list[Effect]:
        case = self.cases.get(cmd.case)
        if case is None or case.counsellor != ident.id or case.status != "claimed":
            raise ChatError(ErrorCode.NOT_FOUND, "That case isn't yours to close.")
        outcome, masked, _ = self._free_text(cmd.outcome)
        case = CaseRecord(**{**_fields(case), "status": "closed", "outcome": outcome})
        self.cases[case.id] = case
        effects: list[Effect] = []
        room = self.rooms.get(case.private_room) if case.private_room else None
        ops: list[Any] = [case, AuditEntry(now_ms, case.room, ident.id, "close_case",
                                           case.participant,
                                           {"case": case.id, "outcome": outcome,
                                            **({"outcome_masked": masked} if masked else {})},
                                           self.rules.version,
                                           cmd.outcome if masked else None)]
        if room is not None:
            room.closed = True
            ops.insert(0, room.record())
        effects.append(Persist(tuple(ops)))
        if room is not None:
            effects += self._close_locally(room, now_ms)
        effects += self._publish_case(case)
        return effects

    def _close_locally(self, room: Room, now_ms: int) -> list[Effect]:
        """A closed case room: its local members are shown it closed and leave it."""
        closed = room.state(now_ms)
        effects: list[Effect] = []
        for member in room.members.values():
            for cid in sorted(member.conns):
                effects.append(Emit(cid, closed))
                their = self.conns.get(cid)
                if their is not None:
                    their.rooms.discard(room.id)
        room.members.clear()
        room.remote.clear()
        room.departed.clear()
        return effects

    # ----------------------------------------------------------------- cluster
    def presence(self, rooms: Iterable[RoomId] | None = None
                 ) -> tuple[tuple[RoomId, tuple[Person, ...]], ...]:
        """Who is connected to these rooms on this node; None: every room with anyone
        (a heartbeat)."""
        if rooms is None:
            return tuple((r.id, people) for r in self.rooms.values()
                         if (people := r.local_people()))
        return tuple((rid, self.rooms[rid].local_people() if rid in self.rooms else ())
                     for rid in rooms)

    def leads(self, me: str) -> bool:
        """Room timers run on one node (the lowest id alive) so that a mute expiry or an
        unclaimed-emergency alert happens once, not once per node."""
        return all(me <= node for node in self.nodes)

    def apply_sync(self, node: str, sync: Sync, now_ms: int
                   ) -> tuple[list[Effect], set[RoomId]]:
        """Another node's durable changes and its presence. Returns effects for local
        connections, and the rooms whose member list changed here."""
        self.nodes[node] = now_ms
        effects = self.apply_records(sync.records, now_ms)
        changed: set[RoomId] = set()
        self._apply_presence(node, sync, changed)
        return effects, changed

    def apply_records(self, records: Iterable[SyncRecord], now_ms: int) -> list[Effect]:
        """Durable room state made elsewhere: by another node, or read back from the store
        after this node was cut off from the others."""
        effects: list[Effect] = []
        for rec in records:
            if isinstance(rec, RoomRecord):
                effects += self._sync_room(rec, now_ms)
            elif isinstance(rec, HeldRecord):
                room = self.rooms.get(rec.room)
                if room is not None:
                    room.held[rec.id] = rec
                    # A resend of the same id to this node is answered as it was there.
                    self._idem_put((rec.sender.id, rec.msg_id), Ack(
                        rec.msg_id, "held", held=rec.id, room=rec.room,
                        notice=self._text("held")))
            elif isinstance(rec, HeldDecided):
                for room in self.rooms.values():
                    room.held.pop(rec.id, None)
            elif isinstance(rec, AlertRecord):
                self.alerts.apply(rec)
            else:
                effects += self._sync_case(rec, now_ms)
        return effects

    def _apply_presence(self, node: str, sync: Sync, changed: set[RoomId]) -> None:
        for rid, people in sync.presence:
            room = self.rooms.get(rid)
            if room is not None and room.remote.get(node, ()) != people:
                changed.add(rid)
                if people:
                    room.remote[node] = people
                else:
                    del room.remote[node]
        if sync.full:
            listed = {rid for rid, _ in sync.presence}
            for room in self.rooms.values():
                if node in room.remote and room.id not in listed:
                    del room.remote[node]
                    changed.add(room.id)

    def _sync_room(self, rec: RoomRecord, now_ms: int) -> list[Effect]:
        room = self.rooms.get(rec.id)
        if room is None:
            self.add_room(rec)
            return []
        was_closed, removed_before = room.closed, set(room.removed)
        room.apply(rec)
        effects: list[Effect] = []
        for pid in sorted(room.removed - removed_before):
            effects += self._evict(room, pid)
        if room.closed and not was_closed:
            effects += self._close_locally(room, now_ms)
        elif effects:  # who is here changed: every node must hear it
            effects.append(Publish(room.id, room.state(now_ms)))
        return effects

    def _sync_case(self, case: CaseRecord, now_ms: int) -> list[Effect]:
        """A counsellor on another node claimed a case: the young person's connections
        here enter the one-to-one room, as they would on the counsellor's node."""
        self.cases[case.id] = case
        room = self.rooms.get(case.private_room) if case.private_room else None
        if case.status != "claimed" or room is None or case.counsellor is None:
            return []
        room.case, room.allowed = case.id, {case.participant, case.counsellor}
        person = self._people.get(case.participant)
        here = False
        for cid in sorted(person.conns if person else ()):
            their = self.conns.get(cid)
            if their is not None and their.identity is not None:
                if room.id not in their.rooms:
                    self._enter(their, their.identity, room, now_ms, announce=False)
                here = True
        # Announced even if they were already in it (a claim made here that lost the
        # race): this node must hear the room, and everyone see who is in it.
        return [Publish(room.id, room.state(now_ms))] if here else []

    def expire_nodes(self, now_ms: int, expiry_ms: int) -> list[Effect]:
        """A node not heard from (killed): its members leave every member list here."""
        effects: list[Effect] = []
        for node in [n for n, seen in self.nodes.items() if now_ms - seen >= expiry_ms]:
            del self.nodes[node]
            for room in self.rooms.values():
                if room.remote.pop(node, None) is not None:
                    state = room.state(now_ms)
                    effects += [Emit(cid, state) for cid in sorted(room.conns())]
        return effects

    # ------------------------------------------------------------------ timers
    def tick(self, now_ms: int, leader: bool = True) -> list[Effect]:
        """Timers, driven by the shell once a second: mute expiry, unanswered messages,
        break reminders and unclaimed emergencies. Mute expiry and emergencies run on the
        ``leader`` only; unanswered alerts and break reminders go to this node's own
        connections."""
        effects: list[Effect] = self._denied_summaries(now_ms)
        self.context.prune(now_ms)
        wb = self.config.rooms
        for room in self.rooms.values():
            self._forget_departed(room, now_ms)
            msg = room.unanswered
            if msg is not None and now_ms - msg.ts >= wb.unanswered_s * 1000:
                room.unanswered = None
                if room.unanswered_here and room.kind == "group":
                    # docs/ops/metrics.md § Unanswered posts: counted whether or not a
                    # facilitator is there to be alerted (most of all when none is).
                    effects.append(Measure(Measurement.UNANSWERED, room.profile))
                # To this node's staff in the room: each node that has some alerts its
                # own, so the alert comes once per person whichever node they are on.
                alert = Alert(room.id, "unanswered", msg.sender.id, msg.text[:EXCERPT_CHARS],
                              (), msg.seq)
                if room.has_facilitator():
                    effects += [Emit(cid, alert) for cid in sorted(room.staff_conns())]
            if not leader:
                continue
            expired = [p for p, until in room.mutes.items() if until is not None and
                       until <= now_ms]
            for pid in expired:
                del room.mutes[pid]
                effects += [Persist((room.record(), AuditEntry(now_ms, room.id, "system",
                                                               "mute_expired", pid),)),
                            Publish(room.id, self._notice("unmuted", room.id),
                                    Audience.PARTICIPANT, pid)]
            if expired:
                effects.append(Publish(room.id, room.state(now_ms)))
        for person in self._people.values():
            if person.streak_start is None or person.reminded:
                continue
            if now_ms - person.last_send >= STREAK_GAP_MS:
                person.streak_start = None
            elif now_ms - person.streak_start >= wb.break_after_min * 60_000:
                person.reminded = True
                effects += [Emit(cid, self._notice("break_reminder")) for cid in
                            sorted(person.conns)]
        for case in self._case_queue() if leader else ():
            if case.urgency == "emergency" and case.status == "open" and \
                    case.id not in self._alerted_emergencies and \
                    now_ms - case.ts >= wb.emergency_unclaimed_s * 1000:
                self._alerted_emergencies.add(case.id)
                alert = Alert(case.room, "risk", case.participant,
                              f"Emergency case {case.id} has not been claimed yet.")
                effects += [Publish(ALL_ROOMS, alert, Audience.FACILITATORS),
                            Publish(ALL_ROOMS, alert, Audience.COUNSELLORS),
                            OpsAlert("emergency_unclaimed", case.id)]
        return effects

    def _forget_departed(self, room: Room, now_ms: int) -> None:
        """Issue 14: the room forgets who left long enough ago; so does this node, once
        no room knows them and no socket of theirs is open (their send and report
        windows have long ended). Risk signals stay while an alert about them is open."""
        lim = self.config.limits
        for pid in room.forget_departed(now_ms, lim.departed_keep_s * 1000,
                                        lim.departed_kept):
            self.alerts.forget(room.id, pid)
            person = self._people.get(pid)
            if person is not None and not person.conns and not any(
                    pid in r.members or pid in r.departed for r in self.rooms.values()):
                del self._people[pid]

    def _streak(self, person: _Person, now_ms: int) -> None:
        if person.streak_start is None or now_ms - person.last_send >= STREAK_GAP_MS:
            person.streak_start, person.reminded = now_ms, False
        person.last_send = now_ms

    # ----------------------------------------------------------------- helpers
    def _person(self, pid: ParticipantId) -> _Person:
        """Per-participant state, made on first use (not on every send)."""
        person = self._people.get(pid)
        if person is None:
            lim = self.config.limits
            person = self._people[pid] = _Person(
                SlidingWindow(lim.rate_messages, lim.rate_window_s * 1000),
                SlidingWindow(lim.reports_per_window, lim.report_window_s * 1000))
        return person

    def _person_view(self, ident: Identity) -> Person:
        return Person(ident.id, ident.name, ident.role.value)

    def _held_view(self, h: HeldRecord) -> HeldView:
        return HeldView(h.id, h.sender, h.text, tuple(RuleRef(r, k) for r, k in h.rules), h.ts)

    def _text(self, kind: str) -> str:
        return self.config.notices.get(kind, "")

    def _notice(self, kind: str, room: RoomId | None = None, *, resources: bool = False,
                case: CaseId | None = None) -> Notice:
        return Notice(kind, self._text(kind), room,
                      self.config.resources if resources else None, case)


def _seconds(now_ms: int, then_ms: int) -> float:
    """Seconds from ``then_ms`` to ``now_ms``; 0 if the clock stepped back (F-14)."""
    return max(0, now_ms - then_ms) / 1000


def _fields(obj: CaseRecord) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}
