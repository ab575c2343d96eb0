"""A room's state: members and their connections, mutes, pause, slow mode, held
messages and a short window of recent messages (reports, case context, unanswered).

History for resume is the broker's (docs/architecture.md § Cluster semantics); the store is the
record. The room keeps only what the core needs to decide.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from chatserver.core.effects import HeldRecord, RoomRecord
from chatserver.core.events import HeldView, MemberView, Message, Person, RoomState, RuleRef
from chatserver.core.ids import CaseId, ConnId, HeldId, ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.vocabulary import RoomKind

__all__ = ["Member", "Room", "held_view", "removed_name"]


@dataclass(slots=True)
class Member:
    person: Person
    conns: set[ConnId] = field(default_factory=set)

    @property
    def role(self) -> Role:
        return self.person.role


def held_view(h: HeldRecord) -> HeldView:
    """A held message as staff see it in the review queue (and in a case's hand-over)."""
    return HeldView(h.id, h.sender, h.text, tuple(RuleRef(r, k) for r, k in h.rules), h.ts)


def removed_name(name: str) -> ParticipantId:
    """The entry a removed display name leaves in ``Room.removed`` (case and spacing
    folded; never a real participant id, which all start ``p``)."""
    return ParticipantId("name:" + "".join(name.casefold().split()))


@dataclass(slots=True)
class Room:
    id: RoomId
    title: str
    age_bands: tuple[str, ...]
    profile: str = "default"
    kind: RoomKind = RoomKind.GROUP
    require_facilitator: bool = True
    case: CaseId | None = None
    paused: bool = False
    slow_mode_s: int = 0
    closed: bool = False
    members: dict[ParticipantId, Member] = field(default_factory=dict)
    mutes: dict[ParticipantId, int | None] = field(default_factory=dict)
    removed: set[ParticipantId] = field(default_factory=set)
    ignores: dict[ParticipantId, set[ParticipantId]] = field(default_factory=dict)
    last_send: dict[ParticipantId, int] = field(default_factory=dict)
    held: dict[HeldId, HeldRecord] = field(default_factory=dict)
    recent: deque[Message] = field(default_factory=lambda: deque(maxlen=50))
    unanswered: Message | None = None
    """The first of a young person's posts nobody else has answered yet."""
    unanswered_here: bool = False
    """Whether this node delivered ``unanswered`` (and so counts it if it goes
    unanswered)."""
    allowed: set[ParticipantId] = field(default_factory=set)
    """For case rooms: the two people who may be in it."""
    remote: dict[str, tuple[Person, ...]] = field(default_factory=dict)
    """Members connected to other nodes, by node (cluster presence)."""
    departed: dict[ParticipantId, tuple[Person, int]] = field(default_factory=dict)
    """Issue 14: who left (every socket of theirs here gone) and when, oldest first.
    ``members`` holds only the connected, so each message's fan-out and member list cost
    what the room holds now, not every identity it has ever seen; a departed person is
    still known (``person``) for ``limits.departed_keep_s``, so staff can act on someone
    who just dropped and a resume finds their ignore list and slow mode as they were."""

    def person(self, pid: ParticipantId) -> Person | None:
        """A member connected here or on another node, or one who recently left."""
        member = self.members.get(pid)
        if member is not None:
            return member.person
        remote = next((p for people in self.remote.values() for p in people if p.id == pid),
                      None)
        if remote is not None:
            return remote
        gone = self.departed.get(pid)
        return gone[0] if gone is not None else None

    def depart(self, pid: ParticipantId, now_ms: int) -> None:
        """Their last socket here left: out of ``members``, into ``departed``."""
        member = self.members.pop(pid, None)
        if member is not None:
            self.departed.pop(pid, None)
            self.departed[pid] = (member.person, now_ms)

    def forget_departed(self, now_ms: int, keep_ms: int, kept: int) -> list[ParticipantId]:
        """Forget those who left over ``keep_ms`` ago (or beyond the ``kept`` newest):
        their slow-mode clock, their own ignore list, and their place in others'. What
        safety needs is not here and stays: ``removed`` and ``mutes`` travel in the
        room record for the room's life. Returns who was forgotten."""
        gone = [pid for pid, (_, left) in self.departed.items()
                if not 0 <= now_ms - left < keep_ms]
        extra = len(self.departed) - len(gone) - kept
        if extra > 0:
            gone += [pid for pid in self.departed if pid not in gone][:extra]
        if not gone:
            return []
        for pid in gone:
            del self.departed[pid]
            self.last_send.pop(pid, None)
            self.ignores.pop(pid, None)
        forgotten = set(gone)
        for ignored in self.ignores.values():
            ignored -= forgotten
        return gone

    def remove(self, pid: ParticipantId) -> None:
        """``remove`` sticks for the room's life (issue 14): the identity, and the
        display name it used (``removed_name``), so joining again under that name is
        refused too. Both travel in the room record to every node and the store."""
        person = self.person(pid)
        self.removed.add(pid)
        if person is not None and person.role == Role.PARTICIPANT:
            self.removed.add(removed_name(person.name))

    def name_removed(self, name: str) -> bool:
        return removed_name(name) in self.removed

    def present(self) -> list[Person]:
        """Everyone connected to the room on any node, once each, in one order that is
        the same on every node: staff first, then by name."""
        people = {m.person.id: m.person for m in self.members.values() if m.conns}
        for group in self.remote.values():
            for p in group:
                people.setdefault(p.id, p)
        return sorted(people.values(),
                      key=lambda p: (p.role == Role.PARTICIPANT, p.name.casefold(), p.id))

    def local_people(self) -> tuple[Person, ...]:
        return tuple(m.person for m in self.members.values() if m.conns)

    def is_muted(self, pid: ParticipantId, now_ms: int) -> bool:
        if pid not in self.mutes:
            return False
        until = self.mutes[pid]
        return until is None or now_ms < until

    def has_facilitator(self) -> bool:
        return any(m.conns and m.role == Role.FACILITATOR for m in self.members.values()) or \
            any(p.role == Role.FACILITATOR for ps in self.remote.values() for p in ps)

    def paused_for_participants(self) -> bool:
        """Paused by a facilitator, or (safety default) no facilitator is present."""
        if self.paused:
            return True
        return self.kind == RoomKind.GROUP and self.require_facilitator and \
            not self.has_facilitator()

    def conns(self) -> set[ConnId]:
        out: set[ConnId] = set()
        for m in self.members.values():
            out |= m.conns
        return out

    def staff_conns(self) -> set[ConnId]:
        out: set[ConnId] = set()
        for m in self.members.values():
            if m.role != Role.PARTICIPANT:
                out |= m.conns
        return out

    def state(self, now_ms: int) -> RoomState:
        members = tuple(MemberView(p.id, p.name, p.role, self.is_muted(p.id, now_ms))
                        for p in self.present())
        return RoomState(self.id, self.title, self.paused_for_participants(), self.slow_mode_s,
                         members, closed=self.closed)

    def record(self) -> RoomRecord:
        return RoomRecord(
            id=self.id, title=self.title, age_bands=self.age_bands, profile=self.profile,
            kind=self.kind, paused=self.paused, slow_mode_s=self.slow_mode_s,
            mutes={str(k): v for k, v in self.mutes.items()},
            removed=tuple(sorted(self.removed)), require_facilitator=self.require_facilitator,
            closed=self.closed)

    def apply(self, rec: RoomRecord) -> None:
        """Shared state another node changed (the record it made durable)."""
        self.paused, self.slow_mode_s, self.closed = rec.paused, rec.slow_mode_s, rec.closed
        self.mutes = {ParticipantId(k): v for k, v in rec.mutes.items()}
        self.removed = {ParticipantId(p) for p in rec.removed}

    @classmethod
    def from_record(cls, rec: RoomRecord) -> Room:
        return cls(
            id=rec.id, title=rec.title, age_bands=rec.age_bands, profile=rec.profile,
            kind=rec.kind, require_facilitator=rec.require_facilitator, paused=rec.paused,
            slow_mode_s=rec.slow_mode_s, closed=rec.closed,
            mutes={ParticipantId(k): v for k, v in rec.mutes.items()},
            removed={ParticipantId(p) for p in rec.removed})
