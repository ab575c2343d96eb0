"""What nodes tell each other so that every node decides alike (docs/architecture.md § Cluster
semantics): shared room state as records, and who is connected where.

Never sent to a client. Each node keeps a projection: it applies the records another
node wrote (after that node made them durable) and merges other nodes' presence into
its member lists, so a room looks the same whichever node a member is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chatserver.core.effects import AlertRecord, CaseRecord, HeldDecided, HeldRecord, RoomRecord
from chatserver.core.events import Person
from chatserver.core.ids import RoomId

__all__ = ["SYNC_RECORDS", "Sync", "SyncRecord"]

SyncRecord = RoomRecord | HeldRecord | HeldDecided | CaseRecord | AlertRecord
SYNC_RECORDS = (RoomRecord, HeldRecord, HeldDecided, CaseRecord, AlertRecord)


@dataclass(frozen=True, slots=True)
class Sync:
    TYPE: ClassVar[str] = "sync"

    records: tuple[SyncRecord, ...] = ()
    """Durable changes, in the order they were made: applied as they are."""
    presence: tuple[tuple[RoomId, tuple[Person, ...]], ...] = ()
    """The sending node's connected members of these rooms (empty: none left)."""
    full: bool = False
    """A heartbeat: ``presence`` lists every room the node has members in."""
    announce: tuple[RoomId, ...] = ()
    """Rooms whose state every node sends again to its local members."""
    reload_rules: bool = False
    """Ops reloaded the moderation rules on the sending node: every node reloads its
    ``moderation_rules/`` (and keeps its running set if they do not load)."""
