"""Between a frame and the parts of the core: the frame budget (SEC-20), the audit of
commands a role may not give (issue 14), and a ``ChatError`` turned into its answer
(``ack rejected`` for a send, ``error`` otherwise)."""

from __future__ import annotations

from typing import Final, cast

from chatserver.core import commands as c
from chatserver.core.audit import AuditAction
from chatserver.core.effects import AuditEntry, Close, Effect, Emit, Persist
from chatserver.core.errors import ChatError, CloseCode, ErrorCode
from chatserver.core.events import Ack, AckStatus, ErrorEvent
from chatserver.core.ids import ConnId, ParticipantId, RoomId
from chatserver.core.session import Conn, Identity
from chatserver.core.summary import AuditSummary
from chatserver.settings import LimitsConfig

__all__ = ["Guard"]

_REJECT_CODES: Final = frozenset({
    ErrorCode.MUTED, ErrorCode.PAUSED, ErrorCode.SLOW_MODE, ErrorCode.RATE_LIMITED,
    ErrorCode.TOO_LARGE, ErrorCode.FORBIDDEN, ErrorCode.INTERNAL,
})
"""A send refused for one of these is answered ``ack rejected`` with the code."""


class Guard:
    """Frame budgets, denied commands and error answers."""

    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self._denied = AuditSummary(limits.denied_audit_window_s * 1000)
        """Issue 14: forbidden commands, summarised per participant and room."""

    def over_budget(self, conn: Conn, command: c.Command | None) -> list[Effect]:
        """SEC-20: the first frame over budget is told `rate_limited`; the rest of the
        flood costs nothing but a count, and sustained flooding closes 1008."""
        conn.frame_strikes += 1
        if conn.frame_strikes >= self.limits.frame_close_after:
            return [Close(conn.id, CloseCode.POLICY, "too many frames")]
        if conn.frame_strikes > 1:
            return []
        error = ChatError(ErrorCode.RATE_LIMITED, "Slow down a little.")
        if command is None:
            return [Emit(conn.id, ErrorEvent(error.code, error.message))]
        return [self.answer(conn.id, command, error)]

    @staticmethod
    def answer(conn_id: ConnId, command: c.Command, e: ChatError) -> Effect:
        """The reply to a command the core refused."""
        if isinstance(command, c.Send) and e.code in _REJECT_CODES:
            return Emit(conn_id, Ack(command.id, AckStatus.REJECTED, code=e.code.value,
                                     room=command.room))
        ref = command.id if isinstance(command, c.Send) else None
        return Emit(conn_id, ErrorEvent(e.code.value, e.message, ref))

    def denied(self, ident: Identity, command: c.Command, now_ms: int) -> list[Effect]:
        """A command the role may not give: the window's first is audited ``denied``;
        the rest of the window is one ``denied_summary`` (issue 14: 100 forbidden staff
        commands were 100 rows), written when it ends (``summaries``)."""
        room = getattr(command, "room", None)
        name = type(command).__name__.lower()
        effects = self.summaries(now_ms)
        if self._denied.count((ident.id, room), "denied", name, now_ms):
            effects.append(Persist((AuditEntry(now_ms, room, ident.id, AuditAction.DENIED, None,
                                               {"command": name,
                                                "role": ident.role.value}),)))
        return effects

    def summaries(self, now_ms: int, force: bool = False) -> list[Effect]:
        """``denied_summary`` entries of the windows that have ended (``force``: all)."""
        entries = []
        for s in self._denied.due(now_ms, force):
            if s.total > 1:  # a lone denial is already its own entry
                pid, room = cast(tuple[ParticipantId, RoomId | None], s.key)
                entries.append(AuditEntry(now_ms, room, pid, AuditAction.DENIED_SUMMARY, None, {
                    "since": s.since, "denied": s.total, "commands": list(s.names)}))
        return [Persist(tuple(entries))] if entries else []
