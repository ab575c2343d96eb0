"""What the core hands the shell with a durable step, and takes back once it knows how
that step went: ``Persist.then`` (written: carry on) and ``Persist.undo`` /
``Deliver.undo`` (failed: put things back). Plain frozen data; the shell never looks
inside, it only returns them to ``ChatCore.complete`` and ``ChatCore.undo``.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatserver.core.effects import AlertRecord, CaseRecord, HeldRecord, RoomRecord
from chatserver.core.ids import ConnId, HeldId, ParticipantId, RoomId
from chatserver.core.room import Member

__all__ = ["AlertUndo", "AlertWritten", "ClaimWritten", "RoomUndo", "SplitRedacted", "Then",
           "Undo"]


@dataclass(frozen=True, slots=True)
class ClaimWritten:
    """A claim is in the store: now the counsellor and the young person may enter."""

    conn: ConnId
    case: CaseRecord


@dataclass(frozen=True, slots=True)
class SplitRedacted:
    """Redactions of a split detail's fragments are written."""

    room: RoomId
    sender: ParticipantId
    seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AlertWritten:
    """A new alert's first write is done."""

    record: AlertRecord


@dataclass(frozen=True, slots=True)
class RoomUndo:
    """A staff command's room as it was before the command (its audit write failed)."""

    room: RoomId
    record: RoomRecord
    held: dict[HeldId, HeldRecord]
    members: dict[ParticipantId, Member]


@dataclass(frozen=True, slots=True)
class AlertUndo:
    """The audit write of an acknowledge or resolve failed: the record as it was."""

    record: AlertRecord


Then = ClaimWritten | SplitRedacted | AlertWritten
"""``Persist.then``: handed to ``ChatCore.complete`` once the write is done."""
Undo = RoomUndo | AlertUndo
"""``Persist.undo``/``Deliver.undo``: handed to ``ChatCore.undo`` if the write fails."""
