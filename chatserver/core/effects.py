"""What the core asks the shell to do. The shell runs effects in order.

A durable step (``Persist``, ``Deliver``) that fails aborts the rest of its batch and
the shell answers ``internal`` instead: nobody is told an outcome that is not in the
store (docs/architecture.md invariants 3 and 7).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from chatserver.core.audit import AuditAction
from chatserver.core.commands import Urgency
from chatserver.core.errors import CloseCode
from chatserver.core.events import Event, Message, Person, RoomState
from chatserver.core.ids import (
    AlertId,
    CaseId,
    ConnId,
    HeldId,
    MessageId,
    ParticipantId,
    RoomId,
)
from chatserver.core.vocabulary import AlertStatus, CaseStatus, RoomKind

if TYPE_CHECKING:  # tokens.py holds records defined here
    from chatserver.core.tokens import Then, Undo

__all__ = [
    "ALL_ROOMS",
    "AlertRecord",
    "Audience",
    "AuditEntry",
    "CaseRecord",
    "Close",
    "Deliver",
    "Effect",
    "Emit",
    "HeldRecord",
    "Measure",
    "Measurement",
    "OpsAlert",
    "Persist",
    "Publish",
    "RedactRecord",
    "RoomRecord",
    "StoreOp",
    "Welcome",
    "elapsed_s",
]

ALL_ROOMS = RoomId("*")
"""A ``Publish`` to every node's staff (case queue, emergency re-alerts)."""


class Audience(StrEnum):
    """Who on each node receives a published event."""

    MEMBERS = "members"
    STAFF = "staff"            # facilitators, counsellors and ops in the room
    PARTICIPANT = "participant"  # one participant's connections (``target``)
    COUNSELLORS = "counsellors"  # every counsellor (with ``ALL_ROOMS``)
    FACILITATORS = "facilitators"  # every facilitator and ops (with ``ALL_ROOMS``)
    CASE_TAKEN = "case_taken"  # every counsellor who may not see ``target``'s case in full


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log (SECURITY.md SG-15: who, what, to whom, why, which rules)."""

    ts: int
    room: RoomId | None
    actor: str
    action: AuditAction
    target: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)
    version: str = ""
    text: str | None = None
    """Held or blocked text, kept for the retention period (SG-09) outside the chained
    fields: the chain covers its SHA-256, so a purge never breaks ``audit verify``."""


@dataclass(frozen=True, slots=True)
class HeldRecord:
    id: HeldId
    room: RoomId
    sender: Person
    msg_id: MessageId
    text: str
    rules: tuple[tuple[str, str], ...]
    ts: int
    approvable: bool = True


@dataclass(frozen=True, slots=True)
class CaseRecord:
    id: CaseId
    room: RoomId
    participant: ParticipantId
    participant_name: str
    urgency: Urgency
    status: CaseStatus
    note: str
    ts: int
    opened_by: str
    counsellor: ParticipantId | None = None
    private_room: RoomId | None = None
    outcome: str | None = None
    context: tuple[Message, ...] = ()
    held: tuple[HeldRecord, ...] = ()
    """The young person's messages still held when the case opened (issue 16): the
    counsellor's hand-over includes disclosures no facilitator has decided yet."""


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as the store keeps it until a facilitator resolves it (issue 16): the
    backlog a facilitator gets at sign-in, and who acknowledged it."""

    id: AlertId
    room: RoomId
    kind: str
    participant: ParticipantId
    name: str
    """The participant's display name when the alert was raised."""
    excerpt: str
    rules: tuple[tuple[str, str], ...]
    ts: int
    """When it was raised: the ack path measures raised → acknowledged from it."""
    seq: int | None = None
    held: HeldId | None = None
    message: MessageId | None = None
    """The send id of the message it concerns (its ``seq`` once delivered)."""
    status: AlertStatus = AlertStatus.OPEN
    acknowledged_by: Person | None = None
    acknowledged_ts: int | None = None
    resolved_by: Person | None = None
    resolved_ts: int | None = None
    count: int = 1
    """Occurrences coalesced into this alert (issue 14: same kind, room and participant
    within ``limits.alert_coalesce_s`` of ``ts``), this first one included."""
    last_ts: int | None = None
    """When the latest coalesced occurrence happened (None: only the first)."""


@dataclass(frozen=True, slots=True)
class RoomRecord:
    id: RoomId
    title: str
    age_bands: tuple[str, ...]
    profile: str
    kind: RoomKind
    paused: bool
    slow_mode_s: int
    mutes: Mapping[str, int | None]
    removed: tuple[str, ...]
    require_facilitator: bool
    closed: bool = False


@dataclass(frozen=True, slots=True)
class RedactRecord:
    room: RoomId
    seq: int


@dataclass(frozen=True, slots=True)
class HeldDecided:
    id: HeldId


StoreOp = (AuditEntry | HeldRecord | HeldDecided | CaseRecord | RoomRecord | RedactRecord
           | AlertRecord)


@dataclass(frozen=True, slots=True)
class Effect:
    """Base of every effect."""


@dataclass(frozen=True, slots=True)
class Emit(Effect):
    """Send an event to one local connection."""

    conn: ConnId
    event: Event


@dataclass(frozen=True, slots=True)
class Publish(Effect):
    """Send an event to an audience of a room on every node, through the broker."""

    room: RoomId
    event: Event
    audience: Audience = Audience.MEMBERS
    target: ParticipantId | None = None


@dataclass(frozen=True, slots=True)
class Close(Effect):
    conn: ConnId
    code: CloseCode
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Persist(Effect):
    """Write records in one transaction before anything after it runs. If it fails, the
    shell answers ``conn`` with ``internal`` and hands ``undo`` back to the core."""

    ops: tuple[StoreOp, ...]
    ref: str | None = None
    conn: ConnId | None = None
    undo: Undo | None = None
    then: Then | None = None
    """Once written, the shell hands this to ``ChatCore.complete``: a command that may
    only change anything if its write wins (a case claimed on two nodes at once)."""


@dataclass(frozen=True, slots=True)
class Deliver(Effect):
    """Persist a message with its audit entry, publish it with the store's seq, ack it.

    ``conn``/``ref`` are the sender's socket and send id (None for an approved held
    message, whose sender was already answered ``held``). ``masked`` puts the text in
    the ack so the sender sees what peers saw.
    """

    room: RoomId
    sender: Person
    msg_id: MessageId
    text: str
    ts: int
    audit: AuditEntry
    conn: ConnId | None = None
    ref: str | None = None
    masked: bool = False
    also: tuple[StoreOp, ...] = ()
    """Records written in the same transaction (an approval's ``HeldDecided``)."""
    undo: Undo | None = None
    actor: ConnId | None = None
    """Staff who caused it (approve): told ``internal`` if the write fails."""


@dataclass(frozen=True, slots=True)
class Welcome(Effect):
    """Answer ``hello``: the shell adds each room's history from the broker."""

    conn: ConnId
    you: Person
    rooms: tuple[RoomState, ...]
    resume: Mapping[RoomId, int]


@dataclass(frozen=True, slots=True)
class History(Effect):
    """Send a room's recent messages to one connection (staff joining a room)."""

    conn: ConnId
    room: RoomId


@dataclass(frozen=True, slots=True)
class OpsAlert(Effect):
    """Something ops must know now (fail-closed moderation, store trouble)."""

    kind: str
    detail: str


class Measurement(StrEnum):
    """What a ``Measure`` counts or times (docs/ops/metrics.md defines each)."""

    HELD_DECIDED = "held_decided"
    """A held message was approved or rejected: seconds since it was held."""
    CASE_CLAIMED = "case_claimed"
    """A counsellor's claim of a case was written: seconds since the escalation."""
    ALERT_ACKNOWLEDGED = "alert_acknowledged"
    """Staff acknowledged an alert: seconds since it was raised."""
    UNANSWERED = "unanswered"
    """A young person's post went unanswered for ``rooms.unanswered_s``."""
    SIGNPOSTED = "signposted"
    """Crisis support was shown to the person who wrote something worrying."""


@dataclass(frozen=True, slots=True)
class Measure(Effect):
    """A safeguarding measurement for ``/metrics``: the shell records it, nothing else.

    Emitted after the durable step it measures, so a write that fails (and aborts the
    rest of its batch) is never counted. Labels are deliberately coarse: the room's
    profile and, for decisions and claims, one of a fixed few values; never a person,
    a room id or any text (SECURITY.md SG-23).
    """

    what: Measurement
    profile: str
    seconds: float | None = None
    """For the timed measurements; never negative (a clock stepping back counts 0)."""
    kind: str = ""
    """``approve``/``reject`` for HELD_DECIDED, the urgency for CASE_CLAIMED."""


def elapsed_s(now_ms: int, then_ms: int) -> float:
    """Seconds from ``then_ms`` to ``now_ms`` for a ``Measure`` or a gauge; 0 if the
    clock stepped back (F-14)."""
    return max(0, now_ms - then_ms) / 1000
