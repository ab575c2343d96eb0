"""Every action the audit log records (SECURITY.md SG-15): the ``action`` of an
``AuditEntry`` and of its row.

A ``StrEnum``: each member is the exact string the log has always carried, so rows
and the hash chain stay byte-identical, and ``GET /api/audit?action=`` filters on the
same words. Rows read back keep a plain ``str`` (``ports.AuditRow``): the log may hold
actions older code wrote.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from chatserver.moderation.rules import Action

__all__ = ["MESSAGE_ACTIONS", "AuditAction"]


class AuditAction(StrEnum):
    """What was done, grouped by who does it."""

    # A young person's (or staff's) message and what moderation made of it.
    MESSAGE_ALLOW = "message.allow"
    MESSAGE_MASK = "message.mask"
    MESSAGE_HOLD = "message.hold"
    MESSAGE_BLOCK = "message.block"
    MESSAGE_REDACTED_SPLIT = "message.redacted_split"
    """A detail split over several messages: its fragments were redacted (``system``)."""
    FLOOD = "flood"
    REPORT = "report"

    # A facilitator's tools on a room and its review queue.
    JOIN = "join"
    """Staff joining un-paused a room that had no facilitator."""
    PAUSE = "pause"
    RESUME = "resume"
    SLOW_MODE = "slow_mode"
    MUTE = "mute"
    UNMUTE = "unmute"
    MUTE_EXPIRED = "mute_expired"
    REMOVE = "remove"
    REDACT = "redact"
    APPROVE = "approve"
    REJECT = "reject"
    ALERT_ACK = "alert_ack"
    ALERT_RESOLVE = "alert_resolve"
    ESCALATE = "escalate"

    # Counselling.
    REQUEST_SUPPORT = "request_support"
    CLAIM = "claim"
    CLOSE_CASE = "close_case"

    # Commands a role may not give (issue 14).
    DENIED = "denied"
    DENIED_SUMMARY = "denied_summary"

    # Staff accounts and what they read.
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGIN_LOCKED = "login_locked"
    LOGIN_FAILURES = "login_failures"
    LOGOUT = "logout"
    AUDIT_READ = "audit_read"

    # Ops.
    ROOM_CREATED = "room_created"
    RULES_RELOAD = "rules_reload"
    RULES_RELOAD_REFUSED = "rules_reload_refused"
    RETENTION_PURGE = "retention_purge"

    # The anonymous "Tell us" page.
    FEEDBACK = "feedback"
    FEEDBACK_BLOCKED = "feedback_blocked"
    FEEDBACK_READ = "feedback_read"


MESSAGE_ACTIONS: Final = {
    Action.ALLOW: AuditAction.MESSAGE_ALLOW, Action.MASK: AuditAction.MESSAGE_MASK,
    Action.HOLD: AuditAction.MESSAGE_HOLD, Action.BLOCK: AuditAction.MESSAGE_BLOCK}
"""A message's audit action, from the delivery action its verdict chose."""
