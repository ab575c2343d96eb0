"""Opaque identifiers and the factory that makes new ones."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import NewType

__all__ = ["AlertId", "CaseId", "ConnId", "HeldId", "IdFactory", "MessageId", "ParticipantId",
           "RoomId"]

RoomId = NewType("RoomId", str)
"""A room's id, chosen by staff or generated (docs/protocol.md: ids are opaque strings)."""
ParticipantId = NewType("ParticipantId", str)
"""A young person's id (server-generated at join) or a staff account id."""
ConnId = NewType("ConnId", int)
"""A local connection, unique within one process."""
HeldId = NewType("HeldId", str)
"""A message held for review."""
CaseId = NewType("CaseId", str)
"""A one-to-one counselling case."""
AlertId = NewType("AlertId", str)
"""A stored alert for facilitators (issue 16: the backlog)."""
MessageId = NewType("MessageId", str)
"""The client-chosen id of a `send` (its idempotency key)."""


class IdFactory:
    """Makes random, unguessable ids; tests inject a deterministic source."""

    def __init__(self, token: Callable[[int], str] = secrets.token_urlsafe) -> None:
        self._token = token

    def new(self, prefix: str) -> str:
        """Return a new id such as ``p_3xQ…`` (the prefix is only for humans reading logs)."""
        return f"{prefix}_{self._token(9)}"
