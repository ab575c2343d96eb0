"""ChatCore: ``handle(conn, command, now_ms) -> list[Effect]``. Pure: no I/O, no clock.

The transport calls it for every frame and timer tick and runs the effects in order
(CONTRIBUTING.md § Style). Peer mistakes become ``ack rejected`` or ``error`` effects here
and never raise out of the core.

``ChatCore`` owns no chat state itself: it routes each command to the part that owns
what the command changes, and keeps the API the shell uses. The parts, each the only
owner of its state:

- ``Rooms`` (rooms.py): the rooms by id; ``Sessions`` (sessions.py): connections,
  each person's sockets, who is in which room, ignore lists and fan-out;
- ``Messaging`` (messaging.py): the send path, outcomes by id, rate and flood state;
  ``Conversations`` (conversations.py): each sender's recent messages read together;
- ``Facilitation`` (facilitation.py): staff commands on a room and its held messages;
- ``Alerting`` (alerting.py, with the ``AlertBook``): alerts, reports and the backlog;
- ``Cases`` (cases.py): escalation, support requests, claims, closing;
- ``Wellbeing`` (wellbeing.py): unanswered posts and break reminders;
- ``Cluster`` (cluster.py): other nodes, their presence and their records (the shell
  talks to it directly: ``ChatCore.cluster``);
- ``Guard`` (guard.py): frame budgets, denied commands, error answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from chatserver.core import commands as c
from chatserver.core.alerting import Alerting
from chatserver.core.alerts import AlertBook, writes_last
from chatserver.core.cases import Cases
from chatserver.core.cluster import Cluster
from chatserver.core.conversations import Conversations
from chatserver.core.effects import (
    Audience,
    CaseRecord,
    Close,
    Effect,
    Emit,
    HeldRecord,
    RoomRecord,
    elapsed_s,
)
from chatserver.core.errors import ChatError, CloseCode, ErrorCode
from chatserver.core.events import Ack, ErrorEvent, Event, Message
from chatserver.core.facilitation import Facilitation
from chatserver.core.guard import Guard
from chatserver.core.ids import ConnId, IdFactory, MessageId, ParticipantId, RoomId
from chatserver.core.messaging import Messaging
from chatserver.core.notices import Notices
from chatserver.core.roles import may
from chatserver.core.room import Room
from chatserver.core.rooms import Rooms
from chatserver.core.screening import Screening
from chatserver.core.session import Conn, Identity, State
from chatserver.core.sessions import Sessions
from chatserver.core.tokens import (
    AlertUndo,
    AlertWritten,
    ClaimWritten,
    RoomUndo,
    SplitRedacted,
    Then,
    Undo,
)
from chatserver.core.vocabulary import CaseStatus
from chatserver.core.wellbeing import Wellbeing
from chatserver.moderation.context import Conversation
from chatserver.moderation.engine import RuleSet
from chatserver.moderation.pipeline import Moderator
from chatserver.settings import Config

__all__ = ["ChatCore", "CoreStats", "Waiting"]


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
        self.ids = ids or IdFactory()
        lim = config.limits
        notices = Notices(config)
        self._screening = Screening(moderator, config.moderation)
        self._rooms = Rooms()
        self._alerting = Alerting(self._rooms, self._screening, notices, lim, self.ids)
        self._conversations = Conversations(config.moderation, self._screening, notices,
                                            self._alerting)
        self._sessions = Sessions(self._rooms, lim, notices, self._conversations)
        self._wellbeing = Wellbeing(config.rooms, self._sessions, notices)
        self._messaging = Messaging(self._rooms, self._sessions, self._screening,
                                    self._conversations, self._alerting, self._wellbeing,
                                    notices, lim, self.ids)
        self._facilitation = Facilitation(self._rooms, self._sessions, self._messaging,
                                          self._screening, notices)
        self._cases = Cases(config, self._rooms, self._sessions, self._alerting,
                            self._screening, notices, self.ids)
        self.cluster = Cluster(self._rooms, self._sessions, self._messaging, self._alerting,
                               self._cases)
        """Other nodes: the shell hands it what they say (``apply_sync``, ``apply_records``,
        ``expire_nodes``) and asks it who is here (``presence``) and who leads."""
        self._guard = Guard(lim)
        self._notices = notices
        # Read-only views for the shell (and tests); each part keeps the only copy.
        self.rooms = self._rooms.by_id
        self.conns = self._sessions.conns
        self.cases = self._cases.by_id
        self.alerts: AlertBook = self._alerting.book
        """Issue 16: unresolved alerts (the backlog) and the signals seen per person; the
        shell loads the store's into it (``AlertBook.load``): the backlog survives a
        restart."""
        self.context: Conversation = self._conversations.context
        """Issue 13 § 2: each sender's recent messages and grooming signals."""

    # ----------------------------------------------------------------- loading
    def add_room(self, record: RoomRecord) -> Room:
        return self._rooms.add(record)

    def load_held(self, held: Iterable[HeldRecord]) -> None:
        for h in held:
            if h.room in self.rooms:
                self.rooms[h.room].held[h.id] = h

    def load_cases(self, cases: Iterable[CaseRecord]) -> None:
        self._cases.load(cases)

    @property
    def moderator(self) -> Moderator:
        """Both moderation stages (rules, then the learned heads): swapped whole."""
        return self._screening.moderator

    @moderator.setter
    def moderator(self, moderator: Moderator) -> None:
        self._screening.moderator = moderator

    @property
    def rules(self) -> RuleSet:
        """The running rule set (its version goes into every audit entry)."""
        return self._screening.rules

    def set_rules(self, rules: RuleSet) -> None:
        """Swap the rule set atomically (hot reload); the learned heads stay."""
        self._screening.set_rules(rules)

    def statistics(self) -> CoreStats:
        return CoreStats(
            connections=len(self.conns), rooms=len(self.rooms),
            held=sum(len(r.held) for r in self.rooms.values()),
            open_cases=sum(1 for k in self.cases.values() if k.status != CaseStatus.CLOSED))

    def waiting(self, now_ms: int) -> Waiting:
        """What waits for staff now (``Waiting``). Every profile of a known room and every
        urgency is listed, at 0 when nothing waits, so that an alert on it resolves."""
        profiles = {r.profile for r in self.rooms.values()}
        held = dict.fromkeys(profiles, (0, 0.0))
        for room in self.rooms.values():
            for h in room.held.values():
                count, oldest = held[room.profile]
                held[room.profile] = (count + 1, max(oldest, elapsed_s(now_ms, h.ts)))
        unclaimed = {(p, u.value): (0, 0.0) for p in profiles for u in c.Urgency}
        for case in self.cases.values():
            if case.status != CaseStatus.OPEN:
                continue
            key = (self._rooms.profile(case.room), case.urgency)
            count, oldest = unclaimed.get(key, (0, 0.0))
            unclaimed[key] = (count + 1, max(oldest, elapsed_s(now_ms, case.ts)))
        return Waiting(held, unclaimed)

    def remembers(self, pid: ParticipantId) -> bool:
        """Whether this node still holds anything about a person (issue 14: it forgets
        those who left long ago)."""
        return any(part.remembers(pid) for part in (
            self._sessions, self._messaging, self._alerting, self._wellbeing))

    # --------------------------------------------------------------- lifecycle
    def connect(self, conn_id: ConnId) -> None:
        self._sessions.connect(conn_id)

    def hello(self, conn_id: ConnId, ident: Identity, resume: Mapping[RoomId, int],
              now_ms: int, elsewhere: int = 0) -> list[Effect]:
        """Authenticate a connection whose token the shell has verified. ``elsewhere``:
        the same person's sockets on other nodes (the cap is per person, SEC-19)."""
        admitted, effects = self._sessions.hello(conn_id, ident, resume, now_ms, elsewhere,
                                                 self._cases.private_rooms(ident.id))
        if not admitted:
            return effects
        effects += self._cases.queue_for(conn_id, ident)
        # Issue 16: what was raised before this sign-in and is not yet resolved.
        effects += self._alerting.backlog(conn_id, lambda rid: rid in self.rooms and
                                          self._rooms.may_enter(ident, self.rooms[rid]))
        if resume:
            effects.append(Emit(conn_id, self._notices.notice("welcome_back")))
        return effects

    def disconnect(self, conn_id: ConnId, now_ms: int) -> list[Effect]:
        return self._sessions.disconnect(conn_id, now_ms)

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
            return self._guard.over_budget(conn, command)
        ident = conn.identity
        try:
            if isinstance(command, c.Hello):
                raise ChatError(ErrorCode.BAD_REQUEST, "This connection already said hello.")
            if not may(ident.role, type(command)):
                return [*self._guard.denied(ident, command, now_ms),
                        self._guard.answer(conn_id, command,
                                           ChatError(ErrorCode.FORBIDDEN,
                                                     "Your role can't do that."))]
            if over_budget and isinstance(command, c.Send) and \
                    not self._messaging.answered(ident.id, command.id):  # resend: as before
                return self._messaging.flooding(
                    conn, ident, self._rooms.of(conn, command.room), command, now_ms)
            return self._route(conn, ident, command, now_ms)
        except ChatError as e:
            return [self._guard.answer(conn_id, command, e)]

    def _route(self, conn: Conn, ident: Identity, command: c.Command, now_ms: int
               ) -> list[Effect]:
        """The part that owns what the command changes."""
        match command:
            case (c.Mute() | c.Unmute() | c.Pause() | c.Resume() | c.SlowMode() | c.Remove()
                  | c.Redact() | c.Approve() | c.Reject()):
                # Undone if their audit write fails; their one Persist is not reordered.
                return self._facilitation.handle(conn, ident, command, now_ms)
            case c.Send():
                effects = self._messaging.send(conn, ident, command, now_ms)
            case c.Join():
                effects = self._sessions.join(conn, ident, command, now_ms)
            case c.Leave():
                effects = self._sessions.leave(conn, ident, command, now_ms)
            case c.Ignore():
                effects = self._sessions.ignore(conn, ident, command, now_ms)
            case c.Unignore():
                effects = self._sessions.unignore(conn, ident, command, now_ms)
            case c.Report():
                effects = self._alerting.report(conn, ident, command, now_ms)
            case c.AlertAck():
                effects = self._alerting.acknowledge(conn, ident, command, now_ms)
            case c.AlertResolve():
                effects = self._alerting.resolve(conn, ident, command, now_ms)
            case c.Escalate():
                effects = self._cases.escalate(conn, ident, command, now_ms)
            case c.RequestSupport():
                effects = self._cases.request_support(conn, ident, command, now_ms)
            case c.Claim():
                effects = self._cases.claim(conn, ident, command, now_ms)
            case c.CloseCase():
                effects = self._cases.close(conn, ident, command, now_ms)
            case _:  # every command is listed above; fail closed on one that is not
                raise ChatError(ErrorCode.BAD_REQUEST, "Unknown command.")
        return writes_last(effects)

    def reject_frame(self, conn_id: ConnId, error: ChatError, ref: str | None,
                     now_ms: int) -> list[Effect]:
        """A frame that did not parse: answer it, and count it against the frame budget."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return []
        if conn.state is not State.READY:
            return [Close(conn_id, CloseCode.NO_HELLO, "the first frame must be hello")]
        if not conn.frames.try_take(now_ms):
            return self._guard.over_budget(conn, None)
        return [Emit(conn_id, ErrorEvent(error.code, error.message, ref))]

    def flush_audit(self, now_ms: int) -> list[Effect]:
        """Shutting down: every open summary window is written now."""
        return self._guard.summaries(now_ms, force=True)

    # ------------------------------------------------------- the shell's word
    def complete(self, token: Then, now_ms: int) -> list[Effect]:
        """A ``Persist`` with ``then`` was written: carry out what it recorded."""
        match token:
            case ClaimWritten():
                return self._cases.claimed(token, now_ms)
            case SplitRedacted():
                self._conversations.redacted(token)
                return []
            case AlertWritten():
                return self._alerting.written(token)

    def undo(self, token: Undo | None) -> None:
        """The audit write of a staff command failed: put what it changed back."""
        match token:
            case AlertUndo():
                self.alerts.undo(token)
            case RoomUndo():
                self._facilitation.undo(token)
            case None:
                pass

    def complete_send(self, pid: ParticipantId, msg_id: MessageId, ack: Ack | None
                      ) -> list[Effect]:
        """The shell finished a ``Deliver``: ``ack`` is the outcome, None if it failed
        (then a retry with the same id runs again)."""
        return self._messaging.complete_send(pid, msg_id, ack)

    def abort_send(self, conn_id: ConnId, msg_id: MessageId) -> None:
        """The durable write behind a held or blocked send failed: forget its outcome and
        its held record, so a retry with the same id is decided and audited afresh."""
        self._messaging.abort_send(conn_id, msg_id)

    def observe(self, msg: Message) -> None:
        """A message was delivered to the room (from any node): remember it."""
        self._messaging.observe(msg)

    def recipients(self, room_id: RoomId, event: Event, audience: Audience,
                   target: ParticipantId | None) -> list[ConnId]:
        """Local connections that get a published event (encoded once for all of them)."""
        return self._sessions.recipients(room_id, event, audience, target)

    # ------------------------------------------------------------------ timers
    def tick(self, now_ms: int, leader: bool = True) -> list[Effect]:
        """Timers, driven by the shell once a second: mute expiry, unanswered messages,
        break reminders and unclaimed emergencies. Mute expiry and emergencies run on the
        ``leader`` only; unanswered alerts and break reminders go to this node's own
        connections."""
        effects: list[Effect] = self._guard.summaries(now_ms)
        self._conversations.prune(now_ms)
        for room in self.rooms.values():
            # Issue 14: the room forgets who left long enough ago; so does this node,
            # once nothing here needs them. Risk signals stay while an alert is open.
            for pid in self._sessions.forget_departed(room, now_ms):
                self._alerting.forget(room.id, pid)
                if not self._sessions.in_use(pid):
                    for part in (self._sessions, self._messaging, self._wellbeing):
                        part.forget(pid)
                    self._alerting.forget_person(pid)
            effects += self._wellbeing.unanswered(room, now_ms)
            if leader:
                effects += self._facilitation.expire_mutes(room, now_ms)
        effects += self._wellbeing.reminders(now_ms)
        if leader:
            effects += self._cases.emergencies(now_ms)
        return effects
