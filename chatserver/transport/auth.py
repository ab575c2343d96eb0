"""Tokens (PyJWT HS256, ``exp`` required, short expiry) and staff passwords (argon2).

A token is only ever read from ``hello`` or an ``Authorization`` header, never a URL
(SEC-08). Every way a token can be wrong is the same ``unauthorized`` to the client,
and a reason code in the log.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Final

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError, VerifyMismatchError

from chatserver.config import AuthConfig
from chatserver.core.errors import ChatError, CloseCode, ErrorCode
from chatserver.core.ids import ParticipantId, RoomId
from chatserver.core.roles import Role
from chatserver.core.session import Identity
from chatserver.ports import Store, UserRow

__all__ = ["Passwords", "TokenError", "Tokens", "load_secret", "session_current",
           "still_signed_in"]

_REQUIRED: Final = ["exp", "iat", "nbf", "sub", "role", "iss", "aud"]
_HASHER: Final = PasswordHasher()
_DUMMY_HASH: Final = _HASHER.hash("not-a-real-password")


class TokenError(ChatError):
    """A token that must not be accepted; ``reason`` goes to the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, "Your session has expired or is invalid.",
                         CloseCode.BAD_TOKEN)
        self.reason = reason


def load_secret(config: AuthConfig, data_dir: str | Path) -> str:
    """The signing key: from config/env, or generated once into the data directory."""
    if config.secret:
        return config.secret
    path = Path(data_dir) / "auth_secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


class Tokens:
    def __init__(self, secret: str, config: AuthConfig) -> None:
        if len(secret) < 32:
            raise ValueError("auth.secret must be at least 32 characters")
        self._secret = secret
        self._config = config

    def issue(self, ident: Identity, now_s: int) -> str:
        ttl = self._config.participant_ttl_s if ident.role == Role.PARTICIPANT \
            else self._config.staff_ttl_s
        claims: dict[str, object] = {
            "sub": ident.id, "name": ident.name, "role": ident.role.value,
            "iat": now_s, "nbf": now_s, "exp": now_s + ttl,
            "iss": self._config.issuer, "aud": self._config.audience,
            "jti": secrets.token_urlsafe(8),
        }
        if ident.room is not None:
            claims["room"] = ident.room
        if ident.age_band is not None:
            claims["band"] = ident.age_band
        if ident.role != Role.PARTICIPANT:
            claims["ver"] = ident.version  # the account version (issue 14: revocation)
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Identity:
        """Raises ``TokenError`` for a forged, edited, expired or incomplete token."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], audience=self._config.audience,
                issuer=self._config.issuer, leeway=self._config.leeway_s,
                options={"require": _REQUIRED})
        except jwt.ExpiredSignatureError:
            raise TokenError("expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("not_yet_valid") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad_signature") from None
        except jwt.MissingRequiredClaimError as e:
            raise TokenError(f"missing_{e.claim}") from None
        except jwt.InvalidTokenError as e:
            raise TokenError(type(e).__name__) from None
        try:
            role = Role(claims["role"])
        except ValueError:
            raise TokenError("unknown_role") from None
        room = claims.get("room")
        if role == Role.PARTICIPANT and not isinstance(room, str):
            raise TokenError("participant_without_room")
        name = claims.get("name")
        version = claims.get("ver", 0)
        if role != Role.PARTICIPANT and (type(version) is not int or "ver" not in claims):
            raise TokenError("missing_ver")  # issued before revocation existed: refused
        return Identity(ParticipantId(str(claims["sub"])), str(name or ""), role,
                        RoomId(room) if isinstance(room, str) else None,
                        claims.get("band") if isinstance(claims.get("band"), str) else None,
                        version if type(version) is int else 0)


def session_current(ident: Identity, user: UserRow | None) -> bool:
    """A staff token is good while its account exists, is enabled and has the version
    the token was issued under (logout, reset and disable move it; issue 14)."""
    return user is not None and not user.disabled and user.version == ident.version


async def still_signed_in(store: Store, ident: Identity) -> bool:
    """Whether a verified token's holder may go on: a participant always (signature and
    expiry are the whole check); staff while ``session_current`` holds for the account
    as the store has it now, read each time so that a disable or a logout on any node
    counts at once (SG-19). The one check behind HTTP, ``hello`` and open sockets."""
    if ident.role == Role.PARTICIPANT:
        return True
    return session_current(ident, await store.user_by_id(ident.id))


class Passwords:
    @staticmethod
    def hash(password: str) -> str:
        return _HASHER.hash(password)

    @staticmethod
    def verify(password_hash: str | None, password: str) -> bool:
        """Constant work whether or not the user exists (SEC-27: timing not observable)."""
        try:
            return _HASHER.verify(password_hash or _DUMMY_HASH, password) and \
                password_hash is not None
        except (VerifyMismatchError, VerificationError):
            return False
        except Exception:
            return False
