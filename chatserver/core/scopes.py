"""Who may see what between roles (issue 14 § Privacy between roles; SG-18). Pure.

One rule per kind of record, used by every path that shows it: the WebSocket fan-out,
the sign-in backlog and the HTTP routes all ask these functions, so they cannot drift
apart (the WebSocket path once showed every counsellor every case, note and context
included, while the HTTP route filtered).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from chatserver.core.audit import AuditAction as A
from chatserver.core.ids import ParticipantId
from chatserver.core.roles import Role
from chatserver.core.vocabulary import CaseStatus

__all__ = ["AUTH_ACTIONS", "COUNSELLING_ACTIONS", "AuditScope", "audit_scope", "sees_case"]


def sees_case(role: Role | str, viewer: ParticipantId, status: CaseStatus,
              counsellor: ParticipantId | None) -> bool:
    """Whether this viewer may see a case in full (participant, note, context, outcome).

    Ops see every case. A counsellor sees the open queue (anyone may claim) and the cases
    they claimed themselves, never another counsellor's claimed or closed ones; of those
    they learn only that the case left the queue (``CaseView.brief``). Nobody else sees
    cases at all (fail closed: an unknown role sees nothing).
    """
    if role == Role.OPS:
        return True
    if role == Role.COUNSELLOR:
        return status == CaseStatus.OPEN or (counsellor is not None and counsellor == viewer)
    return False


COUNSELLING_ACTIONS: Final = frozenset({A.CLAIM, A.CLOSE_CASE, A.REQUEST_SUPPORT})
"""Audit actions that belong to counselling: a case claimed, its outcome, a young
person's own note asking for a counsellor."""
AUTH_ACTIONS: Final = frozenset({
    A.LOGIN, A.LOGIN_FAILED, A.LOGIN_LOCKED, A.LOGIN_FAILURES, A.LOGOUT, A.AUDIT_READ})
"""Audit actions about staff accounts and their sessions (ops' matter)."""
FEEDBACK_ACTIONS: Final = frozenset({A.FEEDBACK, A.FEEDBACK_BLOCKED})
"""What the "Tell us" page received: it may be about a facilitator, so it is for ops."""


@dataclass(frozen=True, slots=True)
class AuditScope:
    """What one role may read of ``GET /api/audit``; the store applies it in its query,
    so ``limit`` counts only what the reader may see."""

    rooms: frozenset[str] | None = None
    """Only entries of these rooms (None: any room, and entries without one)."""
    hidden_actions: frozenset[A] = frozenset()
    """Actions never shown, whatever the room."""


def audit_scope(role: Role | str, group_rooms: Iterable[str]) -> AuditScope | None:
    """The audit a role may read; None: none of it.

    Ops read everything. A facilitator reads the moderation and facilitation of group
    rooms: what was said, held, blocked, reported and decided there, and the escalations
    they make; never counselling (one-to-one rooms' entries, claims, a case's outcome, a
    young person's note asking for a counsellor) nor staff accounts' sign-ins. Counsellors
    and participants read none of it (a counsellor's own cases come from
    ``GET /api/cases``).
    """
    if role == Role.OPS:
        return AuditScope()
    if role == Role.FACILITATOR:
        return AuditScope(frozenset(group_rooms),
                          COUNSELLING_ACTIONS | AUTH_ACTIONS | FEEDBACK_ACTIONS)
    return None
