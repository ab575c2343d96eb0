"""Roles and what each may do: deny by default (docs/architecture.md invariant 4)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from chatserver.core import commands as c

__all__ = ["ALLOWED", "STAFF", "Role", "may"]


class Role(StrEnum):
    """docs/protocol.md § Conventions: roles."""

    PARTICIPANT = "participant"
    FACILITATOR = "facilitator"
    COUNSELLOR = "counsellor"
    OPS = "ops"


STAFF: Final = frozenset({Role.FACILITATOR, Role.COUNSELLOR, Role.OPS})
"""Staff are the last three roles (docs/protocol.md)."""

_EVERYONE: Final[frozenset[type[c.Command]]] = frozenset({c.Hello, c.Leave, c.Send, c.Report})
_FACILITATION: Final[frozenset[type[c.Command]]] = frozenset(
    {
        c.Join, c.Mute, c.Unmute, c.Pause, c.Resume, c.SlowMode, c.Remove,
        c.Escalate, c.Redact, c.Approve, c.Reject, c.AlertAck, c.AlertResolve,
    }
)

ALLOWED: Final[Mapping[Role, frozenset[type[c.Command]]]] = {
    Role.PARTICIPANT: _EVERYONE | {c.Ignore, c.Unignore, c.RequestSupport},
    Role.FACILITATOR: _EVERYONE | _FACILITATION,
    # Counsellors acknowledge the alerts of their own one-to-one rooms.
    Role.COUNSELLOR: _EVERYONE | {c.Join, c.Claim, c.CloseCase, c.AlertAck, c.AlertResolve},
    # Ops tune rules and read the audit over HTTP; in rooms they may only look.
    Role.OPS: _EVERYONE | {c.Join},
}
"""docs/protocol.md § Client → server, column "who". Anything not listed is forbidden."""


def may(role: Role | str, command: type[c.Command]) -> bool:
    """True when ``role`` may give ``command``; an unknown role may do nothing."""
    try:
        return command in ALLOWED[Role(role)]
    except ValueError:
        return False
