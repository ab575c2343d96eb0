"""Error and close codes (docs/protocol.md § Conventions, § Close codes)."""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["ChatError", "CloseCode", "ErrorCode"]


class ErrorCode(StrEnum):
    """Every error code of docs/protocol.md, with its HTTP status in `HTTP_STATUS`."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    UNKNOWN_TYPE = "unknown_type"
    MUTED = "muted"
    PAUSED = "paused"
    SLOW_MODE = "slow_mode"
    INTERNAL = "internal"

    @property
    def http_status(self) -> int:
        """The HTTP status that carries this code (h11's ``error_status_hint`` idea)."""
        return HTTP_STATUS[self]


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.MUTED: 403,
    ErrorCode.PAUSED: 403,
    ErrorCode.SLOW_MODE: 429,
    ErrorCode.INTERNAL: 500,
}


class CloseCode(IntEnum):
    """WebSocket close codes used by the server (docs/protocol.md § Close codes)."""

    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_DATA = 1007
    POLICY = 1008
    TOO_LARGE = 1009
    RESTARTING = 1012
    SLOW = 1013
    NO_HELLO = 4001
    BAD_TOKEN = 4401
    REMOVED = 4403


class ChatError(Exception):
    """A mistake by the peer, carrying the answer it gets on the wire.

    Core functions raise it; ``ChatCore.handle`` turns it into an ``error`` frame or a
    rejected ``ack``; transports map ``code`` to an HTTP status or, when ``close`` is
    set, close the socket with it.
    """

    def __init__(self, code: ErrorCode, message: str, close: CloseCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
