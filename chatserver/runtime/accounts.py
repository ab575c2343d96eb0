"""Whether a signed-in holder of a verified token may go on (SG-19).

The one check behind the HTTP routes, ``hello`` and the ticker that closes open staff
sockets: it reads the store, so it lives in the runtime; what counts as current is the
core's (``core/policy.py`` ``session_current``).
"""

from __future__ import annotations

from chatserver.core.policy import session_current
from chatserver.core.roles import Role
from chatserver.core.session import Identity
from chatserver.ports import Store

__all__ = ["still_signed_in"]


async def still_signed_in(store: Store, ident: Identity) -> bool:
    """A participant always (signature and expiry are the whole check); staff while
    ``session_current`` holds for the account as the store has it now, read each time so
    that a disable or a logout on any node counts at once."""
    if ident.role == Role.PARTICIPANT:
        return True
    return session_current(ident, await store.user_by_id(ident.id))
