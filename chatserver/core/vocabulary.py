"""The fixed words records, events and the stores share: a case's and an alert's status,
a room's kind.

Each is a ``StrEnum`` whose values are exactly the strings the wire, the stores' rows
and the audit log already carry: a member equals (and hashes as) its value, so what is
written stays byte-identical. They live here, below ``events.py`` and ``effects.py``,
because both the records and the events that show them name them.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AlertStatus", "CaseStatus", "RoomKind"]


class CaseStatus(StrEnum):
    """A counselling case's life (docs/protocol.md § Cases): open → claimed → closed."""

    OPEN = "open"
    """Waiting in the queue: any counsellor may claim it."""
    CLAIMED = "claimed"
    """A counsellor took it; its one-to-one room is open."""
    CLOSED = "closed"
    """The counsellor closed it with an outcome."""


class AlertStatus(StrEnum):
    """A stored alert's life (issue 16): open → acknowledged → resolved."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    """Left the backlog (the store keeps it)."""


class RoomKind(StrEnum):
    """What a room is for."""

    GROUP = "group"
    """A peer-support room: moderated, paused while no facilitator is present."""
    CASE = "case"
    """A claimed case's one-to-one room: the young person and their counsellor."""
