"""What staff and young people are shown of rooms and cases, built from core state. Pure.

The HTTP routes and the WebSocket frames show the same objects: a case is one
``CaseView`` whichever path shows it (docs/protocol.md § Cases: "``GET /api/cases``
shows the same"), and who sees which case is ``scopes.sees_case`` on every path.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatserver.core.cases import case_view
from chatserver.core.effects import CaseRecord
from chatserver.core.events import CaseView, Wire
from chatserver.core.ids import ParticipantId
from chatserver.core.roles import Role
from chatserver.core.room import Room
from chatserver.core.scopes import sees_case
from chatserver.core.vocabulary import RoomKind

__all__ = ["group_room_ids", "open_rooms", "staff_rooms", "visible_cases"]


def visible_cases(cases: Iterable[CaseRecord], role: Role, viewer: ParticipantId,
                  status: str | None = None) -> list[CaseView]:
    """The cases this viewer may see in full (SG-18, ``scopes.sees_case``), closed ones
    included, most urgent first, then oldest first; only those in ``status`` (the
    query's word, matched as is) when one is given."""
    return [case_view(k) for k in sorted(cases, key=lambda k: (k.urgency.rank, k.ts))
            if (not status or k.status == status)
            and sees_case(role, viewer, k.status, k.counsellor)]


def _open_groups(rooms: Iterable[Room]) -> list[Room]:
    return [r for r in rooms if r.kind == RoomKind.GROUP and not r.closed]


def staff_rooms(rooms: Iterable[Room], now_ms: int) -> list[Wire]:
    """The open group rooms as staff pick from them, with who is there on every node."""
    out: list[Wire] = []
    for room in _open_groups(rooms):
        present = room.present()  # on every node of a cluster
        out.append({
            "id": room.id, "title": room.title, "age_bands": list(room.age_bands),
            "paused": room.state(now_ms).paused, "slow_mode_s": room.slow_mode_s,
            "participants": sum(1 for m in present if m.role == Role.PARTICIPANT),
            "facilitators": sum(1 for m in present if m.role == Role.FACILITATOR),
        })
    return out


def open_rooms(rooms: Iterable[Room]) -> list[Wire]:
    """The rooms a young person may pick from at join: titles and age bands only (no
    counts, no members)."""
    return [{"id": r.id, "title": r.title, "age_bands": list(r.age_bands)}
            for r in _open_groups(rooms)]


def group_room_ids(rooms: Iterable[Room]) -> list[str]:
    """Every group room, open or closed: what a facilitator's audit reads cover."""
    return [r.id for r in rooms if r.kind == RoomKind.GROUP]
